//! What a token means, shared by the controller and the verifier: the scope a token
//! resolves to, the username it authenticates as, its effective expiry and the policy
//! that bounds it. Pure (no API calls), so both sides agree by construction.

pub mod expiry;
pub mod policy;
pub mod scope;

use crate::api::{Scope, ScopeKind};

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
