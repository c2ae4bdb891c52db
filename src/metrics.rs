//! Prometheus metrics, served at `/metrics` by the probe server (see `probes`) and by the
//! verifier's server. Every label here comes from a fixed set (enums, or `Denial::as_str`), so
//! the number of these series is fixed: no object names, no error text, no tokens. The
//! per-token series (`token_metrics`) are labelled by namespace and name only, one per token.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::verifier::Verdict;

/// Labels of the TokenReview counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// How it was answered: `authenticated`, `unavailable`, or a denial's fixed label
    /// (`Denial::as_str`).
    pub outcome: &'static str,
}

impl From<&Verdict> for ReviewLabels {
    fn from(verdict: &Verdict) -> Self {
        let outcome = match verdict {
            Verdict::Authenticated(_) => "authenticated",
            Verdict::Unavailable(_) => "unavailable",
            Verdict::Denied(denial) => denial.as_str(),
        };
        Self { outcome }
    }
}

/// Whether an argon2 result came from the cache.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum CacheResult {
    /// Answered from the cache.
    Hit,
    /// argon2 ran.
    Miss,
}

/// Labels of the cache counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// Hit or miss.
    pub result: CacheResult,
}

/// What an argon2id verification found.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Argon2Result {
    /// The secret matched the hash.
    Match,
    /// It did not (a wrong or forged secret).
    Mismatch,
}

/// Labels of the argon2 verification counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Argon2Labels {
    /// Match or mismatch.
    pub result: Argon2Result,
}

/// Which controller reconciled.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ControllerKind {
    /// AccessTokens.
    AccessToken,
    /// Organization status.
    Organization,
    /// Group status.
    Group,
}

/// Whether a reconcile succeeded.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReconcileResult {
    /// It did.
    Success,
    /// It failed and will be retried.
    Failure,
}

/// Labels of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Which controller.
    pub controller: ControllerKind,
    /// How it went.
    pub result: ReconcileResult,
}

/// Labels of the reconcile failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Which controller.
    pub controller: ControllerKind,
    /// The step that failed.
    pub step: crate::error::Step,
}

/// Whether changed TLS files were loaded.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReloadResult {
    /// The new certificate is served to new connections.
    Success,
    /// The files did not load; the previous certificate is still served.
    Failure,
}

/// Labels of the TLS reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// How it went.
    pub result: ReloadResult,
}

/// Labels of the per-controller families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// Which controller.
    pub controller: ControllerKind,
}

/// Labels of the build info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version.
    pub version: &'static str,
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    /// Whether the controllers make progress (read by `/healthz`).
    pub progress: Arc<crate::probes::Progress>,
    /// The AccessTokens the token metrics are computed from.
    pub tokens: crate::token_metrics::TokenInventory,
    /// Time to run one reconcile, by controller.
    pub reconcile_seconds: Family<ControllerLabels, Histogram>,
    /// Failed list or watch requests of the controllers' watches, by controller.
    pub watch_errors: Family<ControllerLabels, Counter>,
    /// TokenReviews answered, by outcome.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Time to answer a TokenReview.
    pub review_seconds: Histogram,
    /// argon2 cache lookups.
    pub cache: Family<CacheLabels, Counter>,
    /// argon2id verifications run (the verifier's real hashing work), by result.
    pub argon2_verifications: Family<Argon2Labels, Counter>,
    /// Requests answered "could not check" because their token id's argon2 budget was spent.
    pub argon2_budget_refusals: Counter,
    /// Reconciles, by controller and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Failed reconciles, by controller and the step that failed.
    pub reconcile_failures: Family<FailureLabels, Counter>,
    /// Connections the verifier's server holds open (bounded by its connection cap).
    pub verifier_connections: Gauge,
    /// Reloads of the verifier's TLS files after they changed, by result.
    pub tls_reloads: Family<ReloadLabels, Counter>,
    /// The authenticating proxy's families (at zero unless this process is the proxy).
    pub proxy: crate::proxy::ProxyMetrics,
}

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Arc<Self> {
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        let registry = root.sub_registry_with_prefix("access_token_operator");
        let tokens = crate::token_metrics::TokenInventory::default();
        registry.register_collector(Box::new(tokens.clone()));
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The running version (always 1)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        // 1 ms to ~60 s: a reconcile without hashing takes milliseconds, one that mints
        // waits for argon2 (tens of milliseconds to seconds under load).
        let reconcile_seconds = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 3.0, 11,
            ))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time to run one reconcile, by controller",
            reconcile_seconds.clone(),
        );
        let watch_errors = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Failed list or watch requests of the controllers' watches, by controller",
            watch_errors.clone(),
        );
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "tokenreviews",
            "TokenReviews answered, by outcome",
            reviews.clone(),
        );
        // 100 µs to ~3 s: cached answers are sub-millisecond, argon2 tens of milliseconds.
        let review_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 3.0, 10),
        );
        registry.register(
            "tokenreview_duration_seconds",
            "Time to answer a TokenReview",
            review_seconds.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "argon2_cache_lookups",
            "argon2 result cache lookups",
            cache.clone(),
        );
        let argon2_verifications = Family::<Argon2Labels, Counter>::default();
        registry.register(
            "argon2_verifications",
            "argon2id verifications run, by result",
            argon2_verifications.clone(),
        );
        let argon2_budget_refusals = Counter::default();
        registry.register(
            "argon2_budget_refusals",
            "Requests refused without hashing because their token id's argon2 budget was spent",
            argon2_budget_refusals.clone(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles, by controller and result",
            reconciles.clone(),
        );
        let reconcile_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconciles, by controller and the step that failed",
            reconcile_failures.clone(),
        );
        let verifier_connections = Gauge::default();
        registry.register(
            "verifier_connections",
            "Connections the verifier's server holds open",
            verifier_connections.clone(),
        );
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "verifier_tls_reloads",
            "Reloads of the verifier's TLS files after they changed, by result",
            tls_reloads.clone(),
        );
        // Series of the fixed label sets exist from the start, at 0: a rate over a counter
        // that appears with its first increment would miss that increment.
        for controller in [
            ControllerKind::AccessToken,
            ControllerKind::Organization,
            ControllerKind::Group,
        ] {
            for result in [ReconcileResult::Success, ReconcileResult::Failure] {
                let _ = reconciles.get_or_create(&ReconcileLabels { controller, result });
            }
            let _ = watch_errors.get_or_create(&ControllerLabels { controller });
            let _ = reconcile_seconds.get_or_create(&ControllerLabels { controller });
        }
        for outcome in ["authenticated", "unavailable"] {
            let _ = reviews.get_or_create(&ReviewLabels { outcome });
        }
        for result in [CacheResult::Hit, CacheResult::Miss] {
            let _ = cache.get_or_create(&CacheLabels { result });
        }
        for result in [Argon2Result::Match, Argon2Result::Mismatch] {
            let _ = argon2_verifications.get_or_create(&Argon2Labels { result });
        }
        for result in [ReloadResult::Success, ReloadResult::Failure] {
            let _ = tls_reloads.get_or_create(&ReloadLabels { result });
        }
        let proxy = crate::proxy::ProxyMetrics::register(registry);
        Arc::new(Self {
            registry: root,
            progress: Arc::default(),
            tokens,
            reconcile_seconds,
            watch_errors,
            reviews,
            review_seconds,
            cache,
            argon2_verifications,
            argon2_budget_refusals,
            reconciles,
            reconcile_failures,
            verifier_connections,
            tls_reloads,
            proxy,
        })
    }

    /// Counts a reconcile.
    pub fn reconciled(&self, controller: ControllerKind, ok: bool) {
        let result = if ok {
            ReconcileResult::Success
        } else {
            ReconcileResult::Failure
        };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
    }

    /// Records how long one reconcile of `controller` took.
    pub fn observe_reconcile_duration(
        &self,
        controller: ControllerKind,
        took: std::time::Duration,
    ) {
        self.reconcile_seconds
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    /// Counts a failed list or watch of `controller` (it counts against liveness).
    pub fn watch_failed(&self, controller: ControllerKind) {
        self.watch_errors
            .get_or_create(&ControllerLabels { controller })
            .inc();
        self.progress
            .watch_failed(controller, std::time::Instant::now());
    }

    /// Counts a failed reconcile by the step that failed.
    pub fn failed(&self, controller: ControllerKind, step: crate::error::Step) {
        self.reconcile_failures
            .get_or_create(&FailureLabels { controller, step })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::Denial;

    #[test]
    fn outcomes_are_counted_under_fixed_labels() {
        let metrics = Metrics::new();
        metrics
            .reviews
            .get_or_create(&(&Verdict::Denied(Denial::Revoked)).into())
            .inc();
        metrics.reconciled(ControllerKind::AccessToken, true);
        metrics
            .argon2_verifications
            .get_or_create(&Argon2Labels {
                result: Argon2Result::Mismatch,
            })
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"access_token_operator_argon2_verifications_total{result="Mismatch"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"access_token_operator_tokenreviews_total{outcome="revoked"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"access_token_operator_reconciles_total{controller="AccessToken",result="Success"} 1"#), "{text}");
    }
}
