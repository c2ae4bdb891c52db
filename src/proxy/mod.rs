//! The authenticating proxy (`access-token-operator proxy`): an HTTPS endpoint in front of
//! kube-apiserver for clusters whose authenticator flags nobody may set (EKS, GKE, AKS).
//!
//! Each request is authenticated in process by the verifier's own decision code
//! (`Verifier::review`: state checks, caches, flood rules, lastUsedAt), then forwarded to
//! kube-apiserver with the proxy's ServiceAccount credentials and `Impersonate-*` headers
//! naming the token's identity, plus the client's address as the extra
//! `iam.accesstoken.io/client-ip`. The client's `Authorization` never goes upstream, and a
//! client's own `Impersonate-*` headers are refused.
//!
//! Responses stream as they arrive (watches, `logs -f`, large lists); HTTP/1.1 upgrades
//! (WebSocket and SPDY: exec, attach, port-forward, cp) are joined end to end with
//! `copy_bidirectional` once both sides switched. The accept loop, its limits and the TLS
//! reload are the verifier's ([`crate::verifier::server::Server`]).

pub mod cli;
mod headers;
pub mod metrics;
mod refusal;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tracing::{debug, warn};

pub use headers::CLIENT_IP_EXTRA;
pub use metrics::ProxyMetrics;
pub use refusal::Refusal;

use crate::verifier::{
    Identity, Verdict, Verifier,
    server::{ConnectionInfo, Listen, ServeError, Server},
};
use metrics::VerbClass;

/// Largest request body forwarded (kube-apiserver itself takes at most 3 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A client for kube-apiserver with the proxy's own credentials (in-cluster config or
/// kubeconfig; kube's client re-reads a ServiceAccount token file as it is refreshed), and
/// no retries: a forwarded request is sent once, as the client sent it.
pub async fn upstream_client() -> crate::Result<kube::Client> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|error| crate::Error::Config(format!("no Kubernetes configuration: {error}")))?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

/// The proxy's state: the verifier that decides, and the client that forwards.
pub struct Proxy {
    verifier: Arc<Verifier>,
    upstream: kube::Client,
    metrics: ProxyMetrics,
    max_body_bytes: usize,
}

impl Proxy {
    /// A proxy deciding with `verifier` and forwarding through `upstream` (a client holding
    /// the proxy's own credentials, without retries: a request is sent once).
    pub fn new(
        verifier: Arc<Verifier>,
        upstream: kube::Client,
        metrics: ProxyMetrics,
        max_body_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            verifier,
            upstream,
            metrics,
            max_body_bytes,
        })
    }

    /// Serves until `shutdown` completes, with the verifier's accept loop and limits.
    pub async fn serve(
        self: Arc<Self>,
        listen: Listen,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let server = Server {
            name: "proxy",
            connections: self.metrics.connections.clone(),
            tls_reloads: self.metrics.tls_reloads.clone(),
            plain_http_anywhere: false,
        };
        server.serve(router(self), listen, shutdown).await
    }

    /// Takes the headers alone: a request body is not `Sync`, so a borrowed request
    /// would make the future not `Send`.
    async fn authenticate(&self, headers: &axum::http::HeaderMap) -> Result<Identity, Refusal> {
        if headers::asks_to_impersonate(headers) {
            return Err(Refusal::Impersonation);
        }
        let token = headers::presented_token(headers)?;
        match self.verifier.review(token).await {
            Verdict::Authenticated(identity) => Ok(*identity),
            Verdict::Denied(denial) => {
                debug!(reason = denial.as_str(), "token denied");
                Err(Refusal::DeadToken)
            }
            Verdict::Unavailable(why) => Err(Refusal::CouldNotCheck(why)),
        }
    }

    async fn forward(&self, mut request: Request) -> Result<Response, Refusal> {
        let identity = self.authenticate(request.headers()).await?;
        let connection = request.extensions_mut().remove::<ConnectionInfo>();
        let client_ip = connection.as_ref().map(|info| info.peer.ip());
        let impersonation = headers::impersonation(&identity, client_ip)
            .map_err(|_| Refusal::IdentityNotExpressible)?;
        let upgrade = headers::is_upgrade(request.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let body = if upgrade {
            kube::client::Body::empty()
        } else {
            let bytes = axum::body::to_bytes(body, self.max_body_bytes)
                .await
                .map_err(|_| Refusal::BodyTooLarge)?;
            kube::client::Body::from(bytes)
        };
        let mut upstream = axum::http::Request::builder()
            .method(parts.method)
            .uri(parts.uri.path_and_query().map_or("/", |path| path.as_str()))
            .body(body)
            .map_err(|_| Refusal::Upstream)?;
        *upstream.headers_mut() =
            headers::upstream_request_headers(&parts.headers, impersonation, upgrade);
        let started = Instant::now();
        let response = self.upstream.send(upstream).await.map_err(|error| {
            warn!(%error, "forwarding to kube-apiserver failed");
            Refusal::Upstream
        })?;
        self.metrics
            .upstream_seconds
            .0
            .observe(started.elapsed().as_secs_f64());
        match client_upgrade {
            Some(client) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                Ok(self.join_upgrade(client, response))
            }
            _ => Ok(self.stream_back(response, connection)),
        }
    }

    /// The response as it arrives: each chunk goes to the client when kube-apiserver sends
    /// it. While it streams, the connection counts as busy (no idle timeout).
    fn stream_back(
        &self,
        response: axum::http::Response<kube::client::Body>,
        connection: Option<ConnectionInfo>,
    ) -> Response {
        let (mut parts, body) = response.into_parts();
        parts.headers = headers::client_response_headers(&parts.headers, false);
        let busy = connection.map(|info| info.stream_started());
        let open = OpenStream::new(&self.metrics);
        let body = body.map_frame(move |frame| {
            let _ = (&busy, &open);
            frame
        });
        Response::from_parts(parts, Body::new(body))
    }

    /// Answers the client's upgrade with kube-apiserver's `101` and, once both sides have
    /// switched, copies bytes both ways until either closes.
    fn join_upgrade(
        &self,
        client: hyper::upgrade::OnUpgrade,
        mut response: axum::http::Response<kube::client::Body>,
    ) -> Response {
        let upstream = hyper::upgrade::on(&mut response);
        let open = OpenStream::new(&self.metrics);
        tokio::spawn(async move {
            let _open = open;
            match tokio::try_join!(client, upstream) {
                Ok((client, upstream)) => {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    if let Err(error) =
                        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        debug!(%error, "upgraded stream ended");
                    }
                }
                Err(error) => debug!(%error, "upgrade did not complete"),
            }
        });
        let (mut parts, _) = response.into_parts();
        parts.headers = headers::client_response_headers(&parts.headers, true);
        Response::from_parts(parts, Body::empty())
    }
}

/// One stream counted in the open-streams gauge while alive.
struct OpenStream(prometheus_client::metrics::gauge::Gauge);

impl OpenStream {
    fn new(metrics: &ProxyMetrics) -> Self {
        metrics.open_streams.inc();
        Self(metrics.open_streams.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every path goes to kube-apiserver: the proxy has no routes of its own (probes and
/// metrics are on the probe port).
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new().fallback(handle).with_state(proxy)
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let verb = if headers::is_upgrade(request.headers()) {
        VerbClass::Upgrade
    } else {
        VerbClass::of(request.method(), request.uri())
    };
    let response = match proxy.forward(request).await {
        Ok(response) => response,
        Err(refusal) => {
            debug!(?refusal, "request refused");
            refusal.into_response()
        }
    };
    proxy.metrics.answered(verb, response.status());
    response
}
