//! The proxy's metrics, registered into the process's registry (served on the probe port).

use axum::http::{Method, StatusCode, Uri};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::metrics::{ReloadLabels, ReloadResult};

/// What kind of request, by its effect (bounded: never the path).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum VerbClass {
    /// GET, HEAD, OPTIONS.
    Read,
    /// A watch (`?watch=true`): a stream that stays open.
    Watch,
    /// POST, PUT, PATCH, DELETE.
    Write,
    /// An upgrade (exec, attach, port-forward, cp).
    Upgrade,
}

impl VerbClass {
    /// The class of a request that is not an upgrade.
    pub fn of(method: &Method, uri: &Uri) -> Self {
        if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return VerbClass::Write;
        }
        let watch = uri.query().is_some_and(|query| {
            query
                .split('&')
                .any(|pair| matches!(pair, "watch=true" | "watch=1" | "watch=True"))
        }) || uri.path().contains("/watch/");
        if watch {
            VerbClass::Watch
        } else {
            VerbClass::Read
        }
    }
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The request's class.
    pub verb: VerbClass,
    /// The status code answered (the proxy's own or kube-apiserver's).
    pub code: u16,
}

/// Metrics of the authenticating proxy.
#[derive(Clone, Default)]
pub struct ProxyMetrics {
    /// Requests answered, by verb class and status code.
    pub requests: Family<RequestLabels, Counter>,
    /// Time until kube-apiserver's response headers arrived.
    pub upstream_seconds: UpstreamHistogram,
    /// Responses still streaming and upgraded connections still open.
    pub open_streams: Gauge,
    /// Client connections held open (bounded by the connection cap).
    pub connections: Gauge,
    /// Reloads of the proxy's TLS files after they changed, by result.
    pub tls_reloads: Family<ReloadLabels, Counter>,
}

/// A histogram of upstream latencies, from 1 ms to about 16 s.
#[derive(Clone)]
pub struct UpstreamHistogram(pub Histogram);

impl Default for UpstreamHistogram {
    fn default() -> Self {
        Self(Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
        ))
    }
}

impl ProxyMetrics {
    /// Registers the proxy's families under `proxy_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("proxy");
        registry.register(
            "requests",
            "Requests answered by the authenticating proxy, by verb class and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "upstream_seconds",
            "Time until kube-apiserver's response headers reached the proxy",
            metrics.upstream_seconds.0.clone(),
        );
        registry.register(
            "open_streams",
            "Responses the proxy is still streaming and upgraded connections it holds",
            metrics.open_streams.clone(),
        );
        registry.register(
            "connections",
            "Client connections the proxy holds open",
            metrics.connections.clone(),
        );
        registry.register(
            "tls_reloads",
            "Reloads of the proxy's TLS files after they changed, by result",
            metrics.tls_reloads.clone(),
        );
        for result in [ReloadResult::Success, ReloadResult::Failure] {
            let _ = metrics.tls_reloads.get_or_create(&ReloadLabels { result });
        }
        metrics
    }

    /// Counts one answered request.
    pub fn answered(&self, verb: VerbClass, code: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                verb,
                code: code.as_u16(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_told_from_reads_and_writes() {
        let class = |method: Method, uri: &str| VerbClass::of(&method, &uri.parse().unwrap());
        assert_eq!(
            class(Method::GET, "/api/v1/pods?watch=true"),
            VerbClass::Watch
        );
        assert_eq!(class(Method::GET, "/api/v1/watch/pods"), VerbClass::Watch);
        assert_eq!(
            class(Method::GET, "/api/v1/pods?limit=500"),
            VerbClass::Read
        );
        assert_eq!(class(Method::PATCH, "/api/v1/pods/x"), VerbClass::Write);
    }
}
