//! What a token means, shared by the controller and the verifier: the scope a token
//! resolves to, the username it authenticates as, its effective expiry, and the marks the
//! operator puts on what it writes. Pure (no API calls), so both sides agree by construction.

pub mod expiry;
pub mod policy;
pub mod scope;

use crate::api::{Scope, ScopeKind};

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

/// The groups a token of `scope` authenticates with: the scope's group, then its role group
/// (`accesstoken:org:<org>` and `accesstoken:org:<org>:<admin|user>`, or the same with `group`).
pub fn groups(scope: &Scope, admin: bool) -> [String; 2] {
    let base = scope_group(scope);
    let role = if admin { "admin" } else { "user" };
    let with_role = format!("{base}:{role}");
    [base, with_role]
}

/// Every group a token of `scope` may carry, whatever its role.
pub fn scope_groups(scope: &Scope) -> [String; 3] {
    let [base, admin] = groups(scope, true);
    let user = format!("{base}:user");
    [base, admin, user]
}

fn scope_group(scope: &Scope) -> String {
    let kind = match scope.kind {
        ScopeKind::Organization => "org",
        ScopeKind::Group => "group",
    };
    format!("accesstoken:{kind}:{}", scope.name)
}
