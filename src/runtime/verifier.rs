//! `access-token-operator verifier`, and the verifier parts `run` shares with it.

use std::{sync::Arc, time::Duration};

use tracing::warn;

use super::{
    cli::{ListenArgs, ProbeArgs, VerifierArgs, VerifyArgs},
    hash_pool::Hasher,
    shutdown::shutdown_signal,
    usage,
};
use crate::{
    observability::{logging, metrics::Metrics, probes},
    token::{HashLimits, HashParams},
    verifier::{self, Verifier, metrics::VerifierMetrics, server},
};

/// The process's metrics, with the verifier's families registered whether or not this
/// process serves a verifier: every documented series is always served.
pub(super) struct ProcessMetrics {
    pub(super) all: Arc<Metrics>,
    verifier: Arc<VerifierMetrics>,
}

impl ProcessMetrics {
    pub(super) fn new() -> Self {
        let all = Metrics::new();
        let verifier = Arc::new(all.register(VerifierMetrics::register));
        Self { all, verifier }
    }
}

pub(super) fn verifier_only(args: VerifierArgs) -> crate::Result<()> {
    logging::init(args.log_format);
    let Some(listen) = listen_config(&args.listen)? else {
        return Err(usage("the verifier needs --verifier-bind"));
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = kube::Client::try_default().await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "access-token-operator verifier starting"
        );
        let metrics = ProcessMetrics::new();
        let verifier = start_verifier(client, &args.listen.verify, &metrics)?;
        let probes = serve_probes(&args.probe, &metrics.all, Some(verifier.clone())).await?;
        let served = server::serve(verifier, listen, shutdown_signal()).await;
        probes.abort();
        Ok(served?)
    })
}

pub(super) fn listen_config(args: &ListenArgs) -> crate::Result<Option<server::Listen>> {
    let Some(bind) = args.verifier_bind else {
        return Ok(None);
    };
    let tls = match (&args.tls_cert_file, &args.tls_key_file, args.insecure_http) {
        (Some(cert), Some(key), false) => Some(server::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca_file.clone(),
        }),
        (None, None, true) => None,
        _ => {
            return Err(usage(
                "the verifier needs --tls-cert-file and --tls-key-file, or --insecure-http on a loopback address",
            ));
        }
    };
    let limits = server::Limits {
        max_connections: args.verifier_max_connections,
        handshake_timeout: Duration::from_secs(args.verifier_handshake_timeout_seconds),
        header_timeout: Duration::from_secs(args.verifier_header_timeout_seconds),
        idle_timeout: Duration::from_secs(args.verifier_idle_timeout_seconds),
        max_connections_per_peer: args.verifier_max_connections_per_peer,
        reserved_for_authenticated: args.verifier_reserved_connections,
        max_connection_age: (args.verifier_max_connection_age_seconds > 0)
            .then(|| Duration::from_secs(args.verifier_max_connection_age_seconds)),
    };
    Ok(Some(server::Listen { bind, tls, limits }))
}

/// Starts the probe server in a task of its own; it stops when the process does.
pub(super) async fn serve_probes(
    args: &ProbeArgs,
    metrics: &Arc<Metrics>,
    verifier: Option<Arc<Verifier>>,
) -> crate::Result<tokio::task::JoinHandle<()>> {
    metrics
        .progress
        .set_stall_limit(Duration::from_secs(args.liveness_stall_seconds));
    let readiness = verifier.map(|verifier| {
        let ready: probes::Readiness = Arc::new(move || verifier.readiness());
        ready
    });
    let probes = probes::Probes::new(metrics.clone(), readiness);
    let server = probes::serve(args.probe_bind, probes, shutdown_signal())
        .await
        .map_err(|e| usage(&format!("cannot serve probes on {}: {e}", args.probe_bind)))?;
    Ok(tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "probe server failed");
        }
    }))
}

/// Starts the verifier's caches (it serves once `server::serve` runs).
pub(super) fn start_verifier(
    client: kube::Client,
    args: &VerifyArgs,
    metrics: &ProcessMetrics,
) -> crate::Result<Arc<Verifier>> {
    // Verification takes its parameters from each PHC string, within `hash_limits`; these
    // params are never used to hash here.
    let hasher = Hasher::new(HashParams::default(), args.verify_concurrency)?;
    let cost = &args.verify_cost;
    if cost.verify_miss_budget.is_some() || cost.verify_miss_window_seconds.is_some() {
        warn!(
            "--verify-miss-budget and --verify-miss-window-seconds are deprecated and ignored: \
             forged secrets queue one argon2 check at a time per token id instead"
        );
    }
    let config = verifier::Config {
        cache_capacity: args.verify_cache_capacity,
        max_staleness: Duration::from_secs(args.max_staleness_seconds),
        last_used_writes_per_second: args.last_used_writes_per_second,
        hash_limits: HashLimits {
            memory_kib: cost.verify_max_memory_kib,
            iterations: cost.verify_max_iterations,
            parallelism: cost.verify_max_parallelism,
        },
        ..verifier::Config::default()
    };
    Verifier::start(
        client,
        hasher,
        config,
        metrics.all.clone(),
        metrics.verifier.clone(),
    )
}
