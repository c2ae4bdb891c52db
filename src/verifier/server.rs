//! HTTP(S) front of the verifier: `POST /tokenreviews` (also `/`) speaking the Kubernetes
//! webhook token authentication protocol (`authentication.k8s.io/v1` TokenReview), plus
//! `/healthz`, `/readyz` and `/metrics`. Request bodies are bounded, requests time out.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use k8s_openapi::api::authentication::v1::{
    TokenReview, TokenReviewSpec, TokenReviewStatus, UserInfo,
};
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info};

use super::{Verdict, Verifier};

/// Largest request body accepted; a TokenReview is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest a request may take end to end.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to listen.
#[derive(Clone, Debug)]
pub struct Listen {
    /// Address to bind.
    pub bind: SocketAddr,
    /// Certificate and key (PEM files) for TLS; `None` serves plain HTTP, allowed on loopback only.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Plain HTTP was asked for on a non-loopback address.
    #[error(
        "plain HTTP is only allowed on a loopback address, not {0}; give --tls-cert-file and --tls-key-file"
    )]
    PlainHttpNotLoopback(SocketAddr),
    /// The certificate or key could not be loaded.
    #[error("could not load TLS certificate or key: {0}")]
    Tls(std::io::Error),
    /// Binding or serving failed.
    #[error("verifier server failed: {0}")]
    Io(std::io::Error),
}

/// The verifier's routes.
pub fn router(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/tokenreviews", post(token_review))
        .route("/", post(token_review))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(verifier)
}

/// Serves until `shutdown` completes, then drains connections for up to 5 seconds.
pub async fn serve(
    verifier: Arc<Verifier>,
    listen: Listen,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let handle = axum_server::Handle::new();
    let draining = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let app = router(verifier).into_make_service();
    match listen.tls {
        Some((cert, key)) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(ServeError::Tls)?;
            info!(address = %listen.bind, "verifier listening (TLS)");
            axum_server::bind_rustls(listen.bind, config)
                .handle(handle)
                .serve(app)
                .await
        }
        None => {
            if !listen.bind.ip().is_loopback() {
                return Err(ServeError::PlainHttpNotLoopback(listen.bind));
            }
            info!(address = %listen.bind, "verifier listening (plain HTTP, loopback only)");
            axum_server::bind(listen.bind)
                .handle(handle)
                .serve(app)
                .await
        }
    }
    .map_err(ServeError::Io)
}

async fn metrics(State(verifier): State<Arc<Verifier>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        verifier.metrics().encode(),
    )
        .into_response()
}

async fn ready(State(verifier): State<Arc<Verifier>>) -> Response {
    if verifier.is_ready() {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced, or a watch failing for longer than the maximum staleness",
        )
            .into_response()
    }
}

async fn token_review(State(verifier): State<Arc<Verifier>>, body: Bytes) -> Response {
    // The parse error is not echoed: it could quote the body, and the body holds a token.
    let Ok(review) = serde_json::from_slice::<TokenReview>(&body) else {
        return bad_request("the body is not an authentication.k8s.io/v1 TokenReview");
    };
    let token = review.spec.token;
    if token.is_empty() {
        return bad_request("spec.token is required");
    };
    let status = match verifier.review(&token).await {
        Verdict::Authenticated(identity) => {
            debug!(username = %identity.username, "token accepted");
            TokenReviewStatus {
                authenticated: Some(true),
                user: Some(UserInfo {
                    username: Some(identity.username),
                    uid: Some(identity.uid),
                    groups: Some(identity.groups),
                    extra: Some(identity.extra),
                }),
                ..Default::default()
            }
        }
        Verdict::Denied(denial) => {
            debug!(reason = denial.as_str(), "token denied");
            TokenReviewStatus {
                authenticated: Some(false),
                ..Default::default()
            }
        }
        Verdict::Unavailable(why) => TokenReviewStatus {
            authenticated: Some(false),
            error: Some(why.to_string()),
            ..Default::default()
        },
    };
    let answer = TokenReview {
        metadata: Default::default(),
        spec: TokenReviewSpec::default(), // never echo the token back
        status: Some(status),
    };
    axum::Json(answer).into_response()
}

fn bad_request(message: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}
