//! `/metrics`, `/healthz` and `/readyz` on a plain HTTP port of their own, served by every
//! process (`run` with or without the verifier, and `verifier`). Liveness is `liveness`'s
//! rule; readiness is what the process assembling the probes hands in.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tracing::warn;

use super::metrics::Metrics;
use crate::listener::{Limits, Listen, ServeError, Server};
use prometheus_client::metrics::{family::Family, gauge::Gauge};

/// Whether a part of the process (the verifier) may serve; why not if it may not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the probe server reports on.
#[derive(Clone)]
pub struct Probes {
    metrics: Arc<Metrics>,
    /// Readiness of the parts that have one (the verifier, when this process serves one).
    readiness: Option<Readiness>,
}

impl Probes {
    /// Probes over this process's metrics and liveness, and `readiness` if given.
    pub fn new(metrics: Arc<Metrics>, readiness: Option<Readiness>) -> Self {
        Self { metrics, readiness }
    }

    fn live(&self) -> Result<(), String> {
        match self.metrics.progress.stalled(Instant::now()) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    fn ready(&self) -> Result<(), String> {
        self.live()?;
        self.readiness.as_ref().map_or(Ok(()), |ready| ready())
    }
}

/// The probe server's routes.
pub fn router(probes: Probes) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes)
}

fn answer(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => "ok".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn healthz(State(probes): State<Probes>) -> Response {
    let live = probes.live();
    if let Err(why) = &live {
        warn!(reason = %why, "liveness probe failing");
    }
    answer(live)
}

async fn readyz(State(probes): State<Probes>) -> Response {
    answer(probes.ready())
}

async fn metrics(State(probes): State<Probes>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probes.metrics.encode(),
    )
        .into_response()
}

/// What the probe port holds for its clients (the kubelet, Prometheus, a person with
/// curl): a few connections, a quarter of them per address, quick headers, no idle
/// connection kept long.
pub const PROBE_LIMITS: Limits = Limits {
    max_connections: 64,
    handshake_timeout: Duration::from_secs(5),
    header_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(30),
    max_connections_per_peer: 16,
    reserved_for_authenticated: 0,
    max_connection_age: Some(Duration::from_secs(300)),
};

/// Binds `address` now (so a port in use fails the start), then serves until `shutdown`,
/// with the process's hardened accept loop ([`crate::listener`]) and [`PROBE_LIMITS`].
pub async fn serve(
    address: SocketAddr,
    probes: Probes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), ServeError>>, ServeError> {
    let server = Server {
        name: "probes and metrics",
        connections: Gauge::default(),
        tls_reloads: Family::default(),
        plain_http_anywhere: true,
    };
    let listen = Listen {
        bind: address,
        tls: None,
        limits: PROBE_LIMITS,
    };
    let bound = server.bind(listen).await?;
    Ok(bound.serve(router(probes), shutdown))
}
