//! HTTP(S) front of the verifier: `POST /tokenreviews` (also `/`) speaking the Kubernetes
//! webhook token authentication protocol (`authentication.k8s.io/v1` TokenReview), plus
//! `/healthz` and `/readyz`. Not `/metrics`: the per-token series name every tenant's
//! tokens, and every client of this port (kube-apiserver, extra verifier clients) would see
//! them; metrics are served on the probe port alone.
//!
//! It sits on kube-apiserver's login path, so no client may hold it: it runs the process's
//! hardened accept loop ([`crate::listener`]), request bodies are bounded and requests time
//! out. Optionally only clients with a certificate from a given CA are served.

use std::sync::Arc;

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
use tracing::debug;

use super::{Verdict, Verifier};
// The accept loop's types, where the verifier's callers have always found them.
pub use crate::listener::{
    ConnectionInfo, Limits, Listen, ServeError, Server, TlsError, TlsFiles, tls,
};

/// Largest request body accepted; a TokenReview is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest a request may take end to end.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The verifier's routes.
pub fn router(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/tokenreviews", post(token_review))
        .route("/", post(token_review))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
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
    let server = Server {
        name: "verifier",
        connections: verifier.metrics().verifier_connections.clone(),
        tls_reloads: verifier.metrics().tls_reloads.clone(),
        plain_http_anywhere: false,
    };
    server.serve(router(verifier), listen, shutdown).await
}

/// The same liveness as the probe port's (controllers in this process making progress).
async fn healthz(State(verifier): State<Arc<Verifier>>) -> Response {
    match verifier
        .process_metrics()
        .progress
        .stalled(std::time::Instant::now())
    {
        None => "ok".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
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

/// Why a TokenReview request body was refused before any token check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body is not JSON of an `authentication.k8s.io/v1` TokenReview.
    NotATokenReview,
    /// The TokenReview has no `spec.token`, or an empty one.
    NoToken,
}

impl BodyError {
    /// The fixed text answered with 400: never the parse error, which could quote the
    /// body, and the body holds a token.
    pub fn message(self) -> &'static str {
        match self {
            BodyError::NotATokenReview => "the body is not an authentication.k8s.io/v1 TokenReview",
            BodyError::NoToken => "spec.token is required",
        }
    }
}

/// The presented token of a TokenReview request body. Pure (no I/O, no verifier), so the
/// decoder can be fuzzed on its own (`make fuzz`).
///
/// The whole body must be valid JSON: decoding straight into `TokenReview` would skip
/// unknown fields without checking their UTF-8 or escapes (found by the fuzz target), and
/// a body that is not JSON is refused rather than half read.
pub fn presented_token(body: &[u8]) -> Result<String, BodyError> {
    let document = serde_json::from_slice::<serde_json::Value>(body)
        .map_err(|_| BodyError::NotATokenReview)?;
    let review =
        serde_json::from_value::<TokenReview>(document).map_err(|_| BodyError::NotATokenReview)?;
    let token = review.spec.token;
    if token.is_empty() {
        return Err(BodyError::NoToken);
    }
    Ok(token)
}

async fn token_review(State(verifier): State<Arc<Verifier>>, body: Bytes) -> Response {
    let token = match presented_token(&body) {
        Ok(token) => token,
        Err(refused) => return bad_request(refused.message()),
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

#[cfg(test)]
mod tests {
    use super::{BodyError, presented_token};

    #[test]
    fn the_decoder_takes_the_token_from_a_token_review() {
        let body = br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"atk_x"}}"#;
        assert_eq!(presented_token(body), Ok("atk_x".to_owned()));
    }

    #[test]
    fn the_decoder_refuses_bodies_without_a_token_and_never_quotes_them() {
        let no_token =
            br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{}}"#;
        assert_eq!(presented_token(no_token), Err(BodyError::NoToken));
        let empty = br#"{"spec":{"token":""}}"#;
        assert_eq!(presented_token(empty), Err(BodyError::NoToken));
        let not_json = b"atk_secretvalue_in_a_broken_body";
        let refused = presented_token(not_json).unwrap_err();
        assert_eq!(refused, BodyError::NotATokenReview);
        assert!(!refused.message().contains("secretvalue"));
        // Not JSON, though the token field itself is fine: invalid UTF-8 and a lone
        // surrogate escape in fields a TokenReview does not have.
        let bad_utf8 = b"{\"spec\":{\"token\":\"atk_x\",\"other\":\"\xff\"}}";
        assert_eq!(presented_token(bad_utf8), Err(BodyError::NotATokenReview));
        let bad_escape = br#"{"spec":{"token":"atk_x"},"extra":"\ud800"}"#;
        assert_eq!(presented_token(bad_escape), Err(BodyError::NotATokenReview));
        let wrong_type = br#"{"spec":{"token":42}}"#;
        assert_eq!(presented_token(wrong_type), Err(BodyError::NotATokenReview));
    }
}
