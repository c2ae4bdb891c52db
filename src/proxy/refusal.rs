//! Answers the proxy gives itself, written as kube-apiserver writes its own: a `Status`
//! object with a code, a reason and a message, so kubectl and client-go show them as usual.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

/// How long a client should wait before retrying a request the proxy could not check.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Why the proxy answers a request itself instead of forwarding it. Never holds the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    NoToken,
    /// A credential that is not an access token (a ServiceAccount token, basic auth, ...).
    NotAnAccessToken,
    /// An access token the verifier denied (revoked, expired, suspended, deleted, unknown).
    DeadToken,
    /// The verifier could not decide (not synced, overloaded): the client may retry.
    CouldNotCheck(&'static str),
    /// The client sent `Impersonate-*` headers (`kubectl --as`).
    Impersonation,
    /// The identity cannot be written as impersonation headers (not expected: our names
    /// are Kubernetes names).
    IdentityNotExpressible,
    /// The request body is larger than the proxy accepts.
    BodyTooLarge,
    /// kube-apiserver could not be reached.
    Upstream,
}

impl Refusal {
    /// The HTTP status code.
    pub fn code(self) -> StatusCode {
        match self {
            Refusal::NoToken | Refusal::NotAnAccessToken | Refusal::DeadToken => {
                StatusCode::UNAUTHORIZED
            }
            Refusal::CouldNotCheck(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Impersonation => StatusCode::FORBIDDEN,
            Refusal::IdentityNotExpressible => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Upstream => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `Status` reason, as kube-apiserver names it for the same code.
    fn reason(self) -> &'static str {
        match self {
            Refusal::NoToken | Refusal::NotAnAccessToken | Refusal::DeadToken => "Unauthorized",
            Refusal::CouldNotCheck(_) | Refusal::Upstream => "ServiceUnavailable",
            Refusal::Impersonation => "Forbidden",
            Refusal::IdentityNotExpressible => "InternalError",
            Refusal::BodyTooLarge => "RequestEntityTooLarge",
        }
    }

    /// The message: says why, never quotes the credential.
    pub fn message(self) -> String {
        match self {
            Refusal::NoToken => {
                "Unauthorized: no bearer token; this proxy accepts access tokens (atk_...) only"
                    .to_string()
            }
            Refusal::NotAnAccessToken => "Unauthorized: not an access token; this proxy accepts \
                 access tokens (atk_...) only, no other bearer token or certificate"
                .to_string(),
            Refusal::DeadToken => "Unauthorized: the access token is not valid (unknown, \
                 revoked, expired, suspended or deleted)"
                .to_string(),
            Refusal::CouldNotCheck(why) => {
                format!("the access token could not be checked, try again: {why}")
            }
            Refusal::Impersonation => "impersonation is not allowed through the access-token \
                 proxy: requests are made as the token's own identity (remove --as, \
                 --as-group, --as-uid and Impersonate-* headers)"
                .to_string(),
            Refusal::IdentityNotExpressible => {
                "the token's identity cannot be sent as impersonation headers".to_string()
            }
            Refusal::BodyTooLarge => {
                "the request body is larger than the proxy accepts".to_string()
            }
            Refusal::Upstream => "the proxy could not reach kube-apiserver".to_string(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": self.reason(),
            "code": code.as_u16(),
        });
        let mut response = (code, axum::Json(status)).into_response();
        if matches!(self, Refusal::CouldNotCheck(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn could_not_check_differs_from_a_dead_token_and_asks_for_a_retry() {
        let dead = Refusal::DeadToken.into_response();
        let unsure = Refusal::CouldNotCheck("not synced").into_response();
        assert_eq!(dead.status(), StatusCode::UNAUTHORIZED);
        assert!(dead.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(unsure.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unsure.headers()[header::RETRY_AFTER], "1");
        assert_ne!(
            Refusal::DeadToken.message(),
            Refusal::CouldNotCheck("x").message()
        );
    }

    #[test]
    fn impersonation_is_forbidden_and_says_why() {
        assert_eq!(Refusal::Impersonation.code(), StatusCode::FORBIDDEN);
        assert!(Refusal::Impersonation.message().contains("--as"));
    }
}
