//! What a token means, shared by the controller and the verifier: the scope a token
//! resolves to, the username it authenticates as, its effective expiry, and the marks the
//! operator puts on what it writes. Pure (no API calls), so both sides agree by construction.

pub mod expiry;
pub mod policy;
pub mod scope;

/// Field manager and Event reporter name; also the value of [`MANAGED_BY_LABEL`].
pub const MANAGER: &str = "access-token-operator";
/// Label on every child the operator writes; the operator's Secret watch selects on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label naming the AccessToken a child belongs to.
pub const ACCESS_TOKEN_LABEL: &str = "iam.accesstoken.io/access-token";
/// Label holding the uid of the AccessToken a child belongs to: identifies the children
/// after the garbage collector stripped their owner references (`propagationPolicy: Orphan`).
pub const ACCESS_TOKEN_UID_LABEL: &str = "iam.accesstoken.io/access-token-uid";

/// The username a token authenticates as.
pub fn username(namespace: &str, name: &str) -> String {
    format!("accesstoken:{namespace}:{name}")
}
