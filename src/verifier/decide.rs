//! Who a presented token belongs to, from the current state: checked on every request,
//! never cached. Pure, so every rule is unit-tested.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::{
    api::{
        AccessToken, Credential, Group, Organization, ScopeKind, TechnicalUser,
        wellknown::{ACCESS_TOKEN_LABEL, MANAGED_BY_LABEL, OPERATOR_MANAGER},
    },
    domain::{
        groups, policy,
        scope::{resolve_scope, suspension},
        username,
    },
    token::{HashLimits, phc_params},
};

use super::index::IndexedUser;

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
    /// The token's Organization or Group is suspended (its kill switch, `spec.suspended`).
    ScopeSuspended,
    /// The TechnicalUser lacks the operator's labels, or is not named after the AccessToken
    /// that controls it: not written by the operator, so not trusted.
    Untrusted,
    /// The stored hash is not an argon2id PHC string within the verifier's limits: refused
    /// without hashing.
    HashRefused,
    /// The secret matches credentials of several TechnicalUsers: no single identity.
    Ambiguous,
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
            Self::ScopeSuspended => "scope_suspended",
            Self::Untrusted => "untrusted",
            Self::HashRefused => "hash_refused",
            Self::Ambiguous => "ambiguous",
        }
    }
}

/// Whether a TechnicalUser looks as only the operator writes it: its labels and its
/// controlling AccessToken both carry its own name. (Admission refuses TechnicalUser writes
/// from anyone else; this keeps the verifier from trusting one that got in another way.)
pub fn is_trusted(user: &TechnicalUser) -> bool {
    let name = user.name_any();
    let labels = user.labels();
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(OPERATOR_MANAGER)
        && labels.get(ACCESS_TOKEN_LABEL) == Some(&name)
        && user
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.kind == "AccessToken" && o.name == name)
}

/// Whether a credential's hash may be checked at all: an argon2id PHC string whose
/// parameters are within `limits`. Parses only, so a refusal costs no hashing.
pub fn check_hash_params(credential: &Credential, limits: &HashLimits) -> Result<(), Denial> {
    match phc_params(&credential.hash) {
        Some(params) if limits.admits(&params) => Ok(()),
        _ => Err(Denial::HashRefused),
    }
}

/// Of several denials (one per candidate holding the id), the one to answer: any reason a
/// trusted user is denied says more than "untrusted".
pub fn preferred(current: Option<Denial>, next: Denial) -> Denial {
    match current {
        Some(current) if current != Denial::Untrusted => current,
        _ => next,
    }
}

/// The state check again, after waiting for (and running) argon2: the user with `uid` as the
/// index holds it `now` must still hold the credential that matched (same id, same hash) and
/// pass every state rule at `now`. A revoke, delete or credential change during the wait wins.
#[allow(clippy::too_many_arguments)]
pub fn recheck(
    uid: &str,
    matched: &Credential,
    current: &[Arc<IndexedUser>],
    owner: impl Fn(&str, &str) -> Option<Arc<AccessToken>>,
    organization: impl Fn(&str) -> Option<Arc<Organization>>,
    group: impl Fn(&str) -> Option<Arc<Group>>,
    now: Timestamp,
) -> Result<Identity, Denial> {
    let user = current
        .iter()
        .find(|u| !uid.is_empty() && u.uid == uid)
        .ok_or(Denial::UnknownId)?;
    let credential = user
        .spec
        .credentials
        .iter()
        .find(|c| c.id == matched.id)
        .ok_or(Denial::UnknownId)?;
    if credential.hash != matched.hash {
        return Err(Denial::WrongSecret);
    }
    check_state(user, credential, owner, organization, group, now)
}

/// Checks everything but the hash: that the operator wrote the user, the user, its
/// credential, the owning AccessToken and its scope, at `now`.
pub fn check_state(
    user: &IndexedUser,
    credential: &Credential,
    owner: impl Fn(&str, &str) -> Option<Arc<AccessToken>>,
    organization: impl Fn(&str) -> Option<Arc<Organization>>,
    group: impl Fn(&str) -> Option<Arc<Group>>,
    now: Timestamp,
) -> Result<Identity, Denial> {
    if !user.trusted {
        return Err(Denial::Untrusted);
    }
    if user.spec.disabled {
        return Err(Denial::Disabled);
    }
    if now >= user.spec.expires_at.0 || now >= credential.not_after.0 {
        return Err(Denial::Expired);
    }
    let namespace = user.namespace.clone().ok_or(Denial::OwnerMissing)?;
    let (owner_name, owner_uid) = user.owner.as_ref().ok_or(Denial::OwnerMissing)?;
    let token = owner(&namespace, owner_name)
        .filter(|t| t.uid().as_deref() == Some(owner_uid.as_str()))
        .ok_or(Denial::OwnerMissing)?;
    if token.meta().deletion_timestamp.is_some() {
        return Err(Denial::OwnerDeleting);
    }
    if token.spec.revoked {
        return Err(Denial::Revoked);
    }
    // The spec may have moved the expiry earlier than the TechnicalUser shows yet.
    // So may a tightened scope policy (its maxLifetime caps the expiry at once).
    let policy = policy::of_scope(&token.spec, &organization, &group);
    match policy::token_expiry(&token, &policy, now) {
        Ok(at) if now < at.expires_at => {}
        _ => return Err(Denial::Expired),
    }
    let resolved = resolve_scope(&namespace, &token.spec, &organization, &group)
        .map_err(|_| Denial::ScopeInvalid)?;
    // By name and, once the operator recorded it, by uid: a scope deleted and created again
    // under the same name is another scope, even while no operator runs to disable the user.
    if !resolved.scope.is_issued_scope(&user.spec.scope) {
        return Err(Denial::ScopeInvalid);
    }
    // The kill switch, read from the Organization and Group themselves: no wait for the
    // controller to disable the TechnicalUser.
    if suspension(&token.spec, &organization, &group).is_some() {
        return Err(Denial::ScopeSuspended);
    }

    let scope = &resolved.scope;
    let mut extra = match scope.kind {
        ScopeKind::Organization => BTreeMap::new(),
        ScopeKind::Group => BTreeMap::from([(extra::GROUP.to_string(), vec![scope.name.clone()])]),
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
        uid: user.uid.clone(),
        groups: groups(scope, resolved.role.is_admin()).into(),
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
                uid: None,
            }
        } else {
            Scope {
                kind: ScopeKind::Organization,
                name: "acme".into(),
                organization: "acme".into(),
                uid: None,
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
                    retired_at: None,
                }],
            },
        );
        user.metadata.namespace = Some("acme-ci".into());
        user.metadata.uid = Some("user-uid".into());
        user.metadata.labels = Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_string(), OPERATOR_MANAGER.to_string()),
            (ACCESS_TOKEN_LABEL.to_string(), "ci".to_string()),
        ]));
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
                ..Default::default()
            },
        );
        let group = Group::new(
            "platform",
            GroupSpec {
                organization: "acme".into(),
                display_name: None,
                token_namespaces: vec!["acme-ci".into()],
                ..Default::default()
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
        check_with(w, std::slice::from_ref(&w.org))
    }

    /// `check` with these Organizations in the cluster instead of `w.org` alone.
    fn check_with(w: &World, organizations: &[Organization]) -> Result<Identity, Denial> {
        let token = Arc::new(w.token.clone());
        let group = Arc::new(w.group.clone());
        check_state(
            &IndexedUser::from(w.user.clone()),
            &w.user.spec.credentials[0],
            |ns, name| (ns == "acme-ci" && name == "ci").then(|| token.clone()),
            |name| {
                organizations
                    .iter()
                    .find(|org| org.metadata.name.as_deref() == Some(name))
                    .map(|org| Arc::new(org.clone()))
            },
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

        let mut w = world(true);
        w.group.spec.token_policy = Some(crate::api::TokenPolicy {
            max_lifetime: Some("1m".into()),
            ..Default::default()
        });
        w.token.metadata.creation_timestamp = Some(Time(w.now - SignedDuration::from_mins(1)));
        assert_eq!(
            check(&w),
            Err(Denial::Expired),
            "a tightened policy caps the expiry at once"
        );

        let mut w = world(true);
        w.group.spec.suspended = true;
        assert_eq!(check(&w), Err(Denial::ScopeSuspended), "group kill switch");
        let mut w = world(true);
        w.org.spec.suspended = true;
        assert_eq!(
            check(&w),
            Err(Denial::ScopeSuspended),
            "organization kill switch covers its groups"
        );
        let mut w = world(false);
        w.org.spec.suspended = true;
        assert_eq!(check(&w), Err(Denial::ScopeSuspended));
    }

    #[test]
    fn a_credential_past_its_not_after_is_expired_whatever_the_user_says() {
        // A rotated-out credential still listed (the operator has not pruned it: it may be
        // stopped) dies at the end of its overlap on the verifier's own clock.
        let mut w = world(false);
        w.user.spec.credentials[0].not_after = Time(w.now - SignedDuration::from_secs(1));
        assert!(w.now < w.user.spec.expires_at.0);
        assert_eq!(check(&w), Err(Denial::Expired));
    }

    #[test]
    fn a_group_moved_to_another_organization_no_longer_matches_its_technical_user() {
        // The other organization exists and admits the namespace: only the scope identity
        // (which organization the group belongs to) differs from what the user was issued for.
        let mut w = world(true);
        w.group.spec.organization = "other".into();
        let other = Organization::new(
            "other",
            OrganizationSpec {
                display_name: None,
                token_namespaces: vec!["acme-ci".into()],
                ..Default::default()
            },
        );
        let verdict = check_with(&w, &[other]);
        assert_eq!(verdict, Err(Denial::ScopeInvalid));
    }

    #[test]
    fn the_owner_is_the_controlling_access_token_not_any_access_token_reference() {
        // Another AccessToken named before the controller (only the operator writes users,
        // so this never happens; it pins down which reference counts).
        let mut w = world(false);
        let controller = w.user.metadata.owner_references.take().unwrap().remove(0);
        let other = OwnerReference {
            name: "other".into(),
            uid: "other-uid".into(),
            controller: Some(false),
            ..controller.clone()
        };
        w.user.metadata.owner_references = Some(vec![other, controller]);
        assert!(check(&w).is_ok(), "the controller reference counts");
    }

    #[test]
    fn a_scope_deleted_and_created_again_no_longer_matches_its_technical_user() {
        for group_scoped in [false, true] {
            let mut w = world(group_scoped);
            w.org.metadata.uid = Some("org-uid-2".into());
            w.group.metadata.uid = Some("group-uid-2".into());
            let now = if group_scoped {
                "group-uid-2"
            } else {
                "org-uid-2"
            };
            assert!(check(&w).is_ok(), "a user without a uid: by name");
            w.user.spec.scope.uid = Some(now.into());
            assert!(check(&w).is_ok(), "the object it was issued for");
            w.user.spec.scope.uid = Some("uid-1".into());
            assert_eq!(
                check(&w),
                Err(Denial::ScopeInvalid),
                "group: {group_scoped}"
            );
        }
    }

    #[test]
    fn the_role_follows_the_access_token_spec_at_once() {
        let mut w = world(false);
        w.token.spec.admin = false;
        let identity = check(&w).unwrap();
        assert_eq!(identity.groups[1], "accesstoken:org:acme:user");
    }

    #[test]
    fn the_operator_built_technical_user_is_trusted() {
        let w = world(false);
        let resolved = crate::domain::scope::ResolvedScope {
            scope: w.user.spec.scope.clone(),
            role: w.user.spec.role,
            group_created: None,
        };
        let built = crate::test_support::operator_technical_user(
            &w.token,
            &resolved,
            false,
            w.now,
            w.user.spec.credentials.clone(),
        );
        assert!(is_trusted(&built), "what the operator writes passes");
        assert!(is_trusted(&w.user));
    }

    #[test]
    fn a_technical_user_without_the_operator_labels_or_with_another_name_is_not_trusted() {
        let mut w = world(false);
        w.user.metadata.labels = None;
        assert_eq!(check(&w), Err(Denial::Untrusted), "no labels");

        let mut w = world(false);
        w.user
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(MANAGED_BY_LABEL.into(), "someone-else".into());
        assert_eq!(check(&w), Err(Denial::Untrusted), "another manager");

        let mut w = world(false);
        w.user
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(ACCESS_TOKEN_LABEL.into(), "other".into());
        assert_eq!(
            check(&w),
            Err(Denial::Untrusted),
            "label names another token"
        );

        // A user named differently from its controlling AccessToken (e.g. planted beside a
        // victim's token, pointing its ownerReference at it), labels made to match.
        let mut w = world(false);
        w.user.metadata.name = Some("planted".into());
        w.user
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(ACCESS_TOKEN_LABEL.into(), "planted".into());
        assert_eq!(check(&w), Err(Denial::Untrusted), "owner named otherwise");

        let mut w = world(false);
        w.user.metadata.owner_references.as_mut().unwrap()[0].controller = Some(false);
        assert_eq!(check(&w), Err(Denial::Untrusted), "not the controller");
    }

    #[test]
    fn hashes_over_the_limits_are_refused_before_hashing() {
        let limits = HashLimits::default();
        let credential = |hash: &str| Credential {
            id: "abc".into(),
            hash: hash.into(),
            not_after: Time(Timestamp::UNIX_EPOCH),
            retired_at: None,
        };
        let salt_and_hash = "c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
        let old = format!("$argon2id$v=19$m=19456,t=2,p=1${salt_and_hash}");
        let new = format!("$argon2id$v=19$m=256,t=1,p=1${salt_and_hash}");
        assert_eq!(check_hash_params(&credential(&old), &limits), Ok(()));
        assert_eq!(check_hash_params(&credential(&new), &limits), Ok(()));
        for refused in [
            format!("$argon2id$v=19$m=65536,t=2,p=1${salt_and_hash}"),
            format!("$argon2id$v=19$m=19456,t=64,p=1${salt_and_hash}"),
            format!("$argon2id$v=19$m=19456,t=2,p=8${salt_and_hash}"),
            format!("$argon2i$v=19$m=256,t=1,p=1${salt_and_hash}"),
            "not a hash".to_string(),
        ] {
            assert_eq!(
                check_hash_params(&credential(&refused), &limits),
                Err(Denial::HashRefused),
                "{refused}"
            );
        }
    }

    fn recheck_in(w: &World, current: &[TechnicalUser]) -> Result<Identity, Denial> {
        let token = Arc::new(w.token.clone());
        let org = Arc::new(w.org.clone());
        let group = Arc::new(w.group.clone());
        let current: Vec<_> = (current.iter().cloned())
            .map(|user| Arc::new(IndexedUser::from(user)))
            .collect();
        recheck(
            "user-uid",
            &w.user.spec.credentials[0],
            &current,
            |ns, name| (ns == "acme-ci" && name == "ci").then(|| token.clone()),
            |name| (name == "acme").then(|| org.clone()),
            |name| (name == "platform").then(|| group.clone()),
            w.now,
        )
    }

    #[test]
    fn after_the_hash_the_state_is_read_again_and_any_change_denies() {
        let w = world(false);
        assert!(recheck_in(&w, std::slice::from_ref(&w.user)).is_ok());

        // Revoked while the request waited for a hash slot.
        let mut revoked = world(false);
        revoked.token.spec.revoked = true;
        assert_eq!(
            recheck_in(&revoked, std::slice::from_ref(&w.user)),
            Err(Denial::Revoked)
        );

        // Expired meanwhile: `now` is the time after the wait.
        let mut later = world(false);
        later.now = w.user.spec.expires_at.0;
        assert_eq!(
            recheck_in(&later, std::slice::from_ref(&w.user)),
            Err(Denial::Expired)
        );

        // The user is gone, or disabled.
        assert_eq!(recheck_in(&w, &[]), Err(Denial::UnknownId));
        let mut disabled = w.user.clone();
        disabled.spec.disabled = true;
        assert_eq!(recheck_in(&w, &[disabled]), Err(Denial::Disabled));

        // The credential was removed, or its hash replaced.
        let mut rotated = w.user.clone();
        rotated.spec.credentials[0].id = "xyz".into();
        assert_eq!(recheck_in(&w, &[rotated]), Err(Denial::UnknownId));
        let mut rehashed = w.user.clone();
        rehashed.spec.credentials[0].hash = "$argon2id$other".into();
        assert_eq!(recheck_in(&w, &[rehashed]), Err(Denial::WrongSecret));

        // A user with the same name but another uid (deleted and recreated) is not the one
        // that matched.
        let mut recreated = w.user.clone();
        recreated.metadata.uid = Some("another-uid".into());
        assert_eq!(recheck_in(&w, &[recreated]), Err(Denial::UnknownId));
    }

    #[test]
    fn a_trusted_users_denial_is_answered_over_untrusted() {
        assert_eq!(preferred(None, Denial::Untrusted), Denial::Untrusted);
        assert_eq!(
            preferred(Some(Denial::Untrusted), Denial::Revoked),
            Denial::Revoked
        );
        assert_eq!(
            preferred(Some(Denial::Revoked), Denial::Untrusted),
            Denial::Revoked
        );
    }
}
