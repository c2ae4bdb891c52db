//! Who a presented token belongs to, from the current state: checked on every request,
//! never cached. Pure, so every rule is unit-tested.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::{
    api::{AccessToken, Credential, Group, Organization, ScopeKind, TechnicalUser},
    controller::{build::username, validate::resolve_scope},
    expiry,
};

/// Extra keys in an authenticated answer.
pub mod extra {
    /// The organization (for group tokens, the group's organization).
    pub const ORGANIZATION: &str = "iam.accesstoken.io/organization";
    /// The group (group tokens only).
    pub const GROUP: &str = "iam.accesstoken.io/group";
    /// The role name.
    pub const ROLE: &str = "iam.accesstoken.io/role";
    /// The public token id.
    pub const TOKEN_ID: &str = "iam.accesstoken.io/token-id";
}

/// An authenticated identity, as the TokenReview answer carries it. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `accesstoken:<namespace>:<name>`.
    pub username: String,
    /// The TechnicalUser's uid.
    pub uid: String,
    /// Scope and role groups.
    pub groups: Vec<String>,
    /// Organization, group, role and token id.
    pub extra: BTreeMap<String, Vec<String>>,
    /// Namespace of the AccessToken (for lastUsedAt).
    pub namespace: String,
    /// Name of the AccessToken (for lastUsedAt).
    pub name: String,
}

/// Why a token is denied. Answered as `authenticated: false` without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Wrong prefix, length, characters or checksum.
    Malformed,
    /// No credential has this id.
    UnknownId,
    /// The id exists but the secret does not match its hash.
    WrongSecret,
    /// The TechnicalUser is disabled.
    Disabled,
    /// The AccessToken is revoked (checked on the AccessToken itself, ahead of the controller).
    Revoked,
    /// Past its expiry, by the verifier's own clock.
    Expired,
    /// The owning AccessToken is gone or is not the one the TechnicalUser names.
    OwnerMissing,
    /// The owning AccessToken is being deleted.
    OwnerDeleting,
    /// The scope no longer admits the token (missing, or namespace not allowed).
    ScopeInvalid,
}

impl Denial {
    /// A short label for logs and metrics (bounded set).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownId => "unknown",
            Self::WrongSecret => "wrong_secret",
            Self::Disabled => "disabled",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::OwnerMissing => "owner_missing",
            Self::OwnerDeleting => "owner_deleting",
            Self::ScopeInvalid => "scope_invalid",
        }
    }
}

/// Checks everything but the hash: the user, its credential, the owning AccessToken and
/// its scope, at `now`.
pub fn check_state(
    user: &TechnicalUser,
    credential: &Credential,
    owner: impl Fn(&str, &str) -> Option<Arc<AccessToken>>,
    organization: impl Fn(&str) -> Option<Arc<Organization>>,
    group: impl Fn(&str) -> Option<Arc<Group>>,
    now: Timestamp,
) -> Result<Identity, Denial> {
    if user.spec.disabled {
        return Err(Denial::Disabled);
    }
    if now >= user.spec.expires_at.0 || now >= credential.not_after.0 {
        return Err(Denial::Expired);
    }
    let namespace = user.namespace().ok_or(Denial::OwnerMissing)?;
    let owner_ref = user
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "AccessToken")
        .ok_or(Denial::OwnerMissing)?;
    let token = owner(&namespace, &owner_ref.name)
        .filter(|t| t.uid().as_deref() == Some(owner_ref.uid.as_str()))
        .ok_or(Denial::OwnerMissing)?;
    if token.meta().deletion_timestamp.is_some() {
        return Err(Denial::OwnerDeleting);
    }
    if token.spec.revoked {
        return Err(Denial::Revoked);
    }
    // The spec may have moved the expiry earlier than the TechnicalUser shows yet.
    match expiry::of_token(&token, now) {
        Ok(at) if now < at => {}
        _ => return Err(Denial::Expired),
    }
    let resolved = resolve_scope(&namespace, &token.spec, organization, group)
        .map_err(|_| Denial::ScopeInvalid)?;
    if resolved.scope != user.spec.scope {
        return Err(Denial::ScopeInvalid);
    }

    let role_word = if resolved.role.is_admin() {
        "admin"
    } else {
        "user"
    };
    let scope = &resolved.scope;
    let (kind_word, mut extra) = match scope.kind {
        ScopeKind::Organization => ("org", BTreeMap::new()),
        ScopeKind::Group => (
            "group",
            BTreeMap::from([(extra::GROUP.to_string(), vec![scope.name.clone()])]),
        ),
    };
    extra.insert(
        extra::ORGANIZATION.to_string(),
        vec![scope.organization.clone()],
    );
    extra.insert(
        extra::ROLE.to_string(),
        vec![resolved.role.as_str().to_string()],
    );
    extra.insert(extra::TOKEN_ID.to_string(), vec![credential.id.clone()]);
    Ok(Identity {
        username: username(&namespace, &token.name_any()),
        uid: user.uid().unwrap_or_default(),
        groups: vec![
            format!("accesstoken:{kind_word}:{}", scope.name),
            format!("accesstoken:{kind_word}:{}:{role_word}", scope.name),
        ],
        extra,
        namespace,
        name: token.name_any(),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
        jiff::SignedDuration,
    };

    use super::*;
    use crate::api::{
        AccessTokenSpec, GroupSpec, OrganizationSpec, Role, Scope, TechnicalUserSpec,
    };

    struct World {
        user: TechnicalUser,
        token: AccessToken,
        org: Organization,
        group: Group,
        now: Timestamp,
    }

    fn world(group_scoped: bool) -> World {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let later = Time(now + SignedDuration::from_hours(24));
        let mut token = AccessToken::new(
            "ci",
            AccessTokenSpec {
                organization: (!group_scoped).then(|| "acme".into()),
                group: group_scoped.then(|| "platform".into()),
                admin: true,
                expires_at: Some(later.clone()),
                ..Default::default()
            },
        );
        token.metadata.namespace = Some("acme-ci".into());
        token.metadata.uid = Some("token-uid".into());
        let scope = if group_scoped {
            Scope {
                kind: ScopeKind::Group,
                name: "platform".into(),
                organization: "acme".into(),
            }
        } else {
            Scope {
                kind: ScopeKind::Organization,
                name: "acme".into(),
                organization: "acme".into(),
            }
        };
        let mut user = TechnicalUser::new(
            "ci",
            TechnicalUserSpec {
                scope,
                role: Role::OrganizationAdmin,
                disabled: false,
                expires_at: later.clone(),
                credentials: vec![Credential {
                    id: "abc".into(),
                    hash: String::new(),
                    not_after: later,
                }],
            },
        );
        user.metadata.namespace = Some("acme-ci".into());
        user.metadata.uid = Some("user-uid".into());
        user.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "iam.accesstoken.io/v1alpha1".into(),
            kind: "AccessToken".into(),
            name: "ci".into(),
            uid: "token-uid".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        let org = Organization::new(
            "acme",
            OrganizationSpec {
                display_name: None,
                token_namespaces: vec!["acme-ci".into()],
            },
        );
        let group = Group::new(
            "platform",
            GroupSpec {
                organization: "acme".into(),
                display_name: None,
                token_namespaces: vec!["acme-ci".into()],
            },
        );
        World {
            user,
            token,
            org,
            group,
            now,
        }
    }

    fn check(w: &World) -> Result<Identity, Denial> {
        let token = Arc::new(w.token.clone());
        let org = Arc::new(w.org.clone());
        let group = Arc::new(w.group.clone());
        check_state(
            &w.user,
            &w.user.spec.credentials[0],
            |ns, name| (ns == "acme-ci" && name == "ci").then(|| token.clone()),
            |name| (name == "acme").then(|| org.clone()),
            |name| (name == "platform").then(|| group.clone()),
            w.now,
        )
    }

    #[test]
    fn a_valid_organization_token_gets_username_groups_and_extra() {
        let identity = check(&world(false)).unwrap();
        assert_eq!(identity.username, "accesstoken:acme-ci:ci");
        assert_eq!(identity.uid, "user-uid");
        assert_eq!(
            identity.groups,
            ["accesstoken:org:acme", "accesstoken:org:acme:admin"]
        );
        assert_eq!(identity.extra[extra::ORGANIZATION], ["acme"]);
        assert_eq!(identity.extra[extra::ROLE], ["OrganizationAdmin"]);
        assert_eq!(identity.extra[extra::TOKEN_ID], ["abc"]);
        assert!(!identity.extra.contains_key(extra::GROUP));
    }

    #[test]
    fn a_valid_group_token_names_its_group() {
        let identity = check(&world(true)).unwrap();
        assert_eq!(
            identity.groups,
            [
                "accesstoken:group:platform",
                "accesstoken:group:platform:admin"
            ]
        );
        assert_eq!(identity.extra[extra::GROUP], ["platform"]);
        assert_eq!(identity.extra[extra::ORGANIZATION], ["acme"]);
    }

    #[test]
    fn every_state_rule_denies() {
        let mut w = world(false);
        w.user.spec.disabled = true;
        assert_eq!(check(&w), Err(Denial::Disabled));

        let mut w = world(false);
        w.now = w.user.spec.expires_at.0;
        assert_eq!(check(&w), Err(Denial::Expired), "expiry is exclusive");

        let mut w = world(false);
        w.token.spec.expires_at = Some(Time(w.now - SignedDuration::from_secs(1)));
        assert_eq!(
            check(&w),
            Err(Denial::Expired),
            "an earlier expiry in the spec wins at once"
        );

        let mut w = world(false);
        w.token.spec.revoked = true;
        assert_eq!(check(&w), Err(Denial::Revoked));

        let mut w = world(false);
        w.token.metadata.deletion_timestamp = Some(Time(w.now));
        assert_eq!(check(&w), Err(Denial::OwnerDeleting));

        let mut w = world(false);
        w.token.metadata.uid = Some("a-new-token-with-the-same-name".into());
        assert_eq!(check(&w), Err(Denial::OwnerMissing));

        let mut w = world(false);
        w.org.spec.token_namespaces.clear();
        assert_eq!(check(&w), Err(Denial::ScopeInvalid));

        let mut w = world(true);
        w.group.spec.organization = "gone".into();
        assert_eq!(check(&w), Err(Denial::ScopeInvalid));
    }

    #[test]
    fn the_role_follows_the_access_token_spec_at_once() {
        let mut w = world(false);
        w.token.spec.admin = false;
        let identity = check(&w).unwrap();
        assert_eq!(identity.groups[1], "accesstoken:org:acme:user");
    }
}
