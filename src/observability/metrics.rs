//! Prometheus metrics, served at `/metrics` by the probe server (see `probes`) and by the
//! verifier's server. Every label here comes from a fixed set (enums, or `Denial::as_str`), so
//! the number of these series is fixed: no object names, no error text, no tokens. The
//! per-token series (`token_series`) are labelled by namespace and name only, one per token.

use std::sync::{Arc, Mutex};

pub use prometheus_client::registry::Registry;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};

use super::{liveness::Progress, process::ProcessCollector, token_series::TokenInventory};

/// The prefix of every family but the `process_*` ones.
const PREFIX: &str = "access_token_operator";

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

/// What asked the AccessToken controller for a reconcile.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum TriggerSource {
    /// A change of the AccessToken itself (spec, finalizers, creation, deletion).
    AccessToken,
    /// A change of its TechnicalUser that was not the operator's own write.
    TechnicalUser,
    /// A change of its Secret that was not the operator's own write.
    Secret,
    /// A spec change of the Organization it acts in.
    Organization,
    /// A spec change of its Group.
    Group,
    /// A change of the token or a child that arrived while the operator was writing it and
    /// turned out not to be that write.
    ChangeDuringWrite,
}

/// Labels of the reconcile trigger counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// What asked.
    pub source: TriggerSource,
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

/// The process's metrics: the registry every component registers its families into, and
/// the controllers' families.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Whether the controllers make progress (read by `/healthz`).
    pub progress: Arc<Progress>,
    /// The AccessTokens the token metrics are computed from.
    pub tokens: TokenInventory,
    /// Time to run one reconcile, by controller.
    pub reconcile_seconds: Family<ControllerLabels, Histogram>,
    /// Failed list or watch requests of the controllers' watches, by controller.
    pub watch_errors: Family<ControllerLabels, Counter>,
    /// Reconciles, by controller and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Failed reconciles, by controller and the step that failed.
    pub reconcile_failures: Family<FailureLabels, Counter>,
    /// Reconciles of AccessTokens asked for, by what asked (the controller merges requests
    /// for a token already queued, so these can exceed the reconciles).
    pub reconcile_triggers: Family<TriggerLabels, Counter>,
}

/// Registers `metric` under `name` and returns it: a metric is a handle, so the registry
/// and the caller share its series.
pub fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// `build_info`: the running version, always 1.
fn register_build_info(registry: &mut Registry) {
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
}

/// `reconcile_triggers_total`, with a series for every source from the start.
fn register_triggers(registry: &mut Registry) -> Family<TriggerLabels, Counter> {
    let triggers = Family::<TriggerLabels, Counter>::default();
    registry.register(
        "reconcile_triggers",
        "AccessToken reconciles asked for, by what asked: the token, its TechnicalUser or Secret (not the operator's own writes), its Organization or Group, or a change that arrived during one of the operator's writes",
        triggers.clone(),
    );
    for source in [
        TriggerSource::AccessToken,
        TriggerSource::TechnicalUser,
        TriggerSource::Secret,
        TriggerSource::Organization,
        TriggerSource::Group,
        TriggerSource::ChangeDuringWrite,
    ] {
        let _ = triggers.get_or_create(&TriggerLabels { source });
    }
    triggers
}

impl Metrics {
    /// A fresh registry with the process, build and controller families registered.
    pub fn new() -> Arc<Self> {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix(PREFIX);
        let tokens = TokenInventory::default();
        registry.register_collector(Box::new(tokens.clone()));
        register_build_info(registry);
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
        let reconcile_triggers = register_triggers(registry);
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
        Arc::new(Self {
            registry: Mutex::new(root),
            progress: Arc::default(),
            tokens,
            reconcile_seconds,
            watch_errors,
            reconciles,
            reconcile_failures,
            reconcile_triggers,
        })
    }

    /// Lets a component (the verifier) register its own families, under the common prefix,
    /// as `register(&mut Registry) -> Self` does in controller-rs.
    pub fn register<T>(&self, component: impl FnOnce(&mut Registry) -> T) -> T {
        let mut root = self.registry.lock().expect("metrics registry lock");
        component(root.sub_registry_with_prefix(PREFIX))
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

    /// Counts `n` reconciles of AccessTokens asked for by `source`.
    pub fn triggered(&self, source: TriggerSource, n: usize) {
        self.reconcile_triggers
            .get_or_create(&TriggerLabels { source })
            .inc_by(n as u64);
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
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_under_fixed_labels() {
        let metrics = Metrics::new();
        metrics.reconciled(ControllerKind::AccessToken, true);
        let text = metrics.encode();
        assert!(text.contains(r#"access_token_operator_reconciles_total{controller="AccessToken",result="Success"} 1"#), "{text}");
    }
}
