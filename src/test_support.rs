//! Builders shared by the unit tests of every module: one per object, with the values the
//! tests have in common (namespace `acme-ci`, organization `acme`, group `platform`), so a
//! test spells out only what it is about.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    api::{AccessToken, AccessTokenSpec, Credential, Role, Scope, ScopeKind},
    domain::scope::ResolvedScope,
};

/// The TechnicalUser the operator writes for a token: what the verifier's tests must trust.
pub(crate) use crate::controller::technical_user_of as operator_technical_user;

/// The namespace test tokens live in.
pub(crate) const NAMESPACE: &str = "acme-ci";

/// A fixed instant, so that expiries and transition times in assertions are literal.
pub(crate) fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

/// An AccessToken `name` in [`NAMESPACE`] with uid `<name>-uid`, as read from the API server.
pub(crate) fn access_token(name: &str, spec: AccessTokenSpec) -> AccessToken {
    let mut token = AccessToken::new(name, spec);
    token.metadata.namespace = Some(NAMESPACE.into());
    token.metadata.uid = Some(format!("{name}-uid"));
    token
}

/// The spec of a token for organization `acme`.
pub(crate) fn organization_spec() -> AccessTokenSpec {
    AccessTokenSpec {
        organization: Some("acme".into()),
        ..Default::default()
    }
}

/// A scope of `kind` named `name` in `organization`.
pub(crate) fn scope(kind: ScopeKind, name: &str, organization: &str) -> Scope {
    Scope {
        kind,
        name: name.into(),
        organization: organization.into(),
        uid: None,
    }
}

/// Organization `acme` resolved with `role`.
pub(crate) fn organization_scope(role: Role) -> ResolvedScope {
    ResolvedScope {
        scope: scope(ScopeKind::Organization, "acme", "acme"),
        role,
        group_created: None,
    }
}

/// When the test fixtures' Group `platform` was created: before any token they make.
pub(crate) const GROUP_CREATED: k8s_openapi::jiff::Timestamp =
    k8s_openapi::jiff::Timestamp::constant(1_600_000_000, 0);

/// Group `platform` of `organization` resolved with `role`.
pub(crate) fn group_scope(organization: &str, role: Role) -> ResolvedScope {
    ResolvedScope {
        scope: scope(ScopeKind::Group, "platform", organization),
        role,
        group_created: Some(GROUP_CREATED),
    }
}

/// A credential `id` valid until `not_after`, not retired; its hash is a placeholder.
pub(crate) fn credential(id: &str, not_after: Timestamp) -> Credential {
    Credential {
        id: id.into(),
        hash: "$argon2id$...".into(),
        not_after: Time(not_after),
        retired_at: None,
    }
}
