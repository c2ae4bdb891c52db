//! Builds the desired children and status of an AccessToken. Pure: no API calls here, so the
//! shape of every object the operator writes is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt};

use crate::{
    api::{
        AccessToken, AccessTokenStatus, ConditionType, Credential, Phase, Reason, Role, ScopeKind,
        TechnicalUser, TechnicalUserSpec,
        conditions::{Readiness, conditions},
        wellknown::{
            ACCESS_TOKEN_LABEL, ACCESS_TOKEN_UID_LABEL, MANAGED_BY_LABEL, OPERATOR_MANAGER,
            SECRET_TYPE, TEMPLATE_KEYS_ANNOTATION, keys,
        },
    },
    domain::{scope::ResolvedScope, username},
    token::Token,
};

use super::kubeconfig::Endpoint;

/// The Secret's name: `spec.secretName`, defaulting to the AccessToken's name.
pub fn secret_name(token: &AccessToken) -> String {
    token
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| token.name_any())
}

/// The scope as written in status (`organization/<name>` or `group/<name>`), from the spec alone.
pub fn scope_display(token: &AccessToken) -> Option<String> {
    match (&token.spec.organization, &token.spec.group) {
        (Some(org), None) => Some(format!("organization/{org}")),
        (None, Some(group)) => Some(format!("group/{group}")),
        _ => None,
    }
}

/// The role the spec asks for, from the spec alone.
pub fn spec_role(token: &AccessToken) -> Option<Role> {
    match (&token.spec.organization, &token.spec.group) {
        (Some(_), None) => Some(Role::new(ScopeKind::Organization, token.spec.admin)),
        (None, Some(_)) => Some(Role::new(ScopeKind::Group, token.spec.admin)),
        _ => None,
    }
}

/// The controller owner reference children carry (so they are garbage-collected with it).
pub fn owner_reference(token: &AccessToken) -> OwnerReference {
    token
        .controller_owner_ref(&())
        .expect("an AccessToken read from the API server has a name and uid")
}

/// Whether `meta` names the AccessToken with `uid` as its controller.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Whether the AccessToken with `uid` may delete the child described by `meta`: it controls
/// it, or the child was orphaned (no controller left, as after a delete with
/// `propagationPolicy: Orphan`, whose garbage collector strips owner references before our
/// finalizer runs) and still carries the operator's labels naming this very AccessToken.
/// A child controlled by anything else is never ours.
pub fn is_child_of(meta: &ObjectMeta, uid: &str) -> bool {
    let labels = meta.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let orphaned = !meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    is_controlled_by(meta, uid)
        || (orphaned
            && label(MANAGED_BY_LABEL) == Some(OPERATOR_MANAGER)
            && label(ACCESS_TOKEN_UID_LABEL) == Some(uid))
}

/// The TechnicalUser the operator applies for a token.
pub fn technical_user(
    token: &AccessToken,
    resolved: &ResolvedScope,
    disabled: bool,
    expires_at: Timestamp,
    credentials: Vec<Credential>,
) -> TechnicalUser {
    let mut user = TechnicalUser::new(
        &token.name_any(),
        TechnicalUserSpec {
            scope: resolved.scope.clone(),
            role: resolved.role,
            disabled,
            expires_at: Time(expires_at),
            credentials,
        },
    );
    user.metadata.namespace = token.namespace();
    user.metadata.owner_references = Some(vec![owner_reference(token)]);
    user.metadata.labels = Some(managed_labels(token));
    user
}

fn managed_labels(token: &AccessToken) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), OPERATOR_MANAGER.to_string()),
        (ACCESS_TOKEN_LABEL.to_string(), token.name_any()),
        (
            ACCESS_TOKEN_UID_LABEL.to_string(),
            token.uid().unwrap_or_default(),
        ),
    ])
}

/// The data of a token Secret.
pub fn secret_data(
    token: &AccessToken,
    resolved: &ResolvedScope,
    value: &Token,
    expires_at: Timestamp,
    kubeconfig: Option<&Endpoint>,
) -> BTreeMap<String, ByteString> {
    let namespace = token.namespace().unwrap_or_default();
    let text = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut data = BTreeMap::from([
        (keys::TOKEN.to_string(), text(value.expose_secret())),
        (keys::TOKEN_ID.to_string(), text(value.id().as_str())),
        (
            keys::USERNAME.to_string(),
            text(&username(&namespace, &token.name_any())),
        ),
        (
            keys::ORGANIZATION.to_string(),
            text(&resolved.scope.organization),
        ),
        (keys::ROLE.to_string(), text(resolved.role.as_str())),
        (keys::EXPIRES_AT.to_string(), text(&expires_at.to_string())),
    ]);
    if resolved.scope.kind == ScopeKind::Group {
        data.insert(keys::GROUP.to_string(), text(&resolved.scope.name));
    }
    if let Some(endpoint) = kubeconfig {
        let user = username(&namespace, &token.name_any());
        let config = super::kubeconfig::render(endpoint, &namespace, &user, value);
        data.insert(keys::KUBECONFIG.to_string(), ByteString(config));
    }
    data
}

/// A new token Secret.
pub fn new_secret(token: &AccessToken, data: BTreeMap<String, ByteString>) -> Secret {
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(token)),
            namespace: token.namespace(),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.to_string()),
        ..Default::default()
    };
    secret.data = Some(data);
    merge_secret_metadata(token, &mut secret.metadata);
    secret
}

/// The existing Secret with the operator's fields brought up to date, or `None` if nothing
/// needs writing. Keys, labels and annotations written by others are kept.
pub fn updated_secret(
    token: &AccessToken,
    existing: &Secret,
    data: BTreeMap<String, ByteString>,
) -> Option<Secret> {
    let mut updated = existing.clone();
    let mut merged = existing.data.clone().unwrap_or_default();
    // A kubeconfig from an earlier configuration would hold a token that may be stale.
    if !data.contains_key(keys::KUBECONFIG) {
        merged.remove(keys::KUBECONFIG);
    }
    merged.extend(data);
    updated.data = Some(merged);
    merge_secret_metadata(token, &mut updated.metadata);
    (updated != *existing).then_some(updated)
}

/// The template keys recorded on a Secret: `labels` and `annotations`, each a key list.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct TemplateKeys {
    labels: Vec<String>,
    annotations: Vec<String>,
}

/// Brings `current` in line with `template`: keys in `previous` that the template no longer
/// names go, then the template's entries are written.
fn apply_template(
    current: &mut BTreeMap<String, String>,
    previous: &[String],
    template: &BTreeMap<String, String>,
) {
    current.retain(|key, _| !previous.contains(key) || template.contains_key(key));
    current.extend(template.clone());
}

fn merge_secret_metadata(token: &AccessToken, meta: &mut ObjectMeta) {
    let template = token.spec.secret_template.clone().unwrap_or_default();
    let previous: TemplateKeys = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_KEYS_ANNOTATION))
        .and_then(|recorded| serde_json::from_str(recorded).ok())
        .unwrap_or_default();
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    apply_template(labels, &previous.labels, &template.labels);
    labels.extend(managed_labels(token)); // ours win over the template
    let mut annotations = meta.annotations.take().unwrap_or_default();
    annotations.remove(TEMPLATE_KEYS_ANNOTATION);
    apply_template(
        &mut annotations,
        &previous.annotations,
        &template.annotations,
    );
    if !template.labels.is_empty() || !template.annotations.is_empty() {
        let keys = TemplateKeys {
            labels: template.labels.keys().cloned().collect(),
            annotations: template.annotations.keys().cloned().collect(),
        };
        annotations.insert(
            TEMPLATE_KEYS_ANNOTATION.to_string(),
            serde_json::to_string(&keys).expect("key lists serialize"),
        );
    }
    meta.annotations = (!annotations.is_empty()).then_some(annotations);
    let owner = owner_reference(token);
    let owners = meta.owner_references.get_or_insert_with(Vec::new);
    if !owners.iter().any(|o| o.uid == owner.uid) {
        owners.push(owner);
    }
}

/// What the reconciler concluded, to be written as status.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The phase.
    pub phase: Phase,
    /// Whether Ready is True.
    pub ready: bool,
    /// Ready's reason.
    pub reason: Reason,
    /// Ready's message.
    pub message: String,
    /// Set while the operator cannot progress without an outside change (kstatus Stalled).
    pub stalled: bool,
    /// The public id of the issued token, if any.
    pub token_id: Option<String>,
    /// The effective expiry, if it could be computed.
    pub expires_at: Option<Timestamp>,
    /// The organization whose admins manage the token (`status.organization`), if known now;
    /// `None` keeps the one reported.
    pub organization: Option<String>,
}

/// The status for `outcome`, keeping the transition times of conditions that did not change.
pub fn status(token: &AccessToken, outcome: &Outcome, now: Timestamp) -> AccessTokenStatus {
    let previous = token.status.clone().unwrap_or_default();
    let generation = token.meta().generation;
    let conditions = conditions(
        &previous.conditions,
        Readiness {
            ready: outcome.ready,
            stalled: outcome.stalled,
            reason: outcome.reason,
            message: &outcome.message,
        },
        generation,
        now,
    );
    // Conditions and fields other steps own are carried over (see `access_token::settle`).
    let mut conditions = conditions;
    conditions.extend(
        previous
            .conditions
            .iter()
            .filter(|c| {
                c.type_ == ConditionType::ExpiringSoon.as_str()
                    || c.type_ == ConditionType::TargetsRolledOut.as_str()
            })
            .cloned(),
    );
    let namespace = token.namespace().unwrap_or_default();
    AccessTokenStatus {
        phase: Some(outcome.phase),
        token_id: outcome.token_id.clone(),
        scope: scope_display(token),
        // Set by the controller once the token is issued (see `AccessToken::settle`).
        scope_uid: previous.scope_uid,
        organization: outcome.organization.clone().or(previous.organization),
        technical_user: Some(token.name_any()),
        secret_name: Some(secret_name(token)),
        username: Some(username(&namespace, &token.name_any())),
        role: spec_role(token),
        expires_at: outcome.expires_at.map(Time),
        // Owned by the verifier's field manager; the controller's apply must not claim it.
        last_used_at: None,
        expiry_warned_token_id: previous.expiry_warned_token_id,
        rotated_at: previous.rotated_at,
        previous_token_id: previous.previous_token_id,
        previous_valid_until: previous.previous_valid_until,
        renewal_time: previous.renewal_time,
        rotation_trigger: previous.rotation_trigger,
        restarted_for: previous.restarted_for,
        reactivated_for: previous.reactivated_for,
        reactivated_at: previous.reactivated_at,
        observed_generation: generation,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{AccessTokenSpec, SecretTemplate},
        test_support,
    };

    fn access_token() -> AccessToken {
        let mut token = test_support::access_token(
            "ci",
            AccessTokenSpec {
                group: Some("platform".into()),
                admin: true,
                secret_template: Some(SecretTemplate {
                    labels: BTreeMap::from([
                        ("team".into(), "platform".into()),
                        (MANAGED_BY_LABEL.into(), "someone-else".into()),
                    ]),
                    annotations: BTreeMap::from([("note".into(), "hi".into())]),
                }),
                ..Default::default()
            },
        );
        token.metadata.uid = Some("uid-1".into());
        token.metadata.generation = Some(3);
        token
    }

    fn group_scope() -> ResolvedScope {
        test_support::group_scope("acme", Role::GroupAdmin)
    }

    #[test]
    fn secret_has_every_key_the_design_names_and_our_labels_win() {
        let token = access_token();
        let value = Token::generate();
        let expiry: Timestamp = "2027-06-30T00:00:00Z".parse().unwrap();
        let secret = new_secret(
            &token,
            secret_data(&token, &group_scope(), &value, expiry, None),
        );
        let data = secret.data.as_ref().unwrap();
        let get = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        assert_eq!(get(keys::TOKEN), value.expose_secret());
        assert_eq!(get(keys::TOKEN_ID), value.id().as_str());
        assert_eq!(get(keys::USERNAME), "accesstoken:acme-ci:ci");
        assert_eq!(get(keys::ORGANIZATION), "acme");
        assert_eq!(get(keys::GROUP), "platform");
        assert_eq!(get(keys::ROLE), "GroupAdmin");
        assert_eq!(get(keys::EXPIRES_AT), "2027-06-30T00:00:00Z");
        assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
        let labels = secret.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], OPERATOR_MANAGER);
        assert_eq!(labels[ACCESS_TOKEN_LABEL], "ci");
        assert_eq!(labels["team"], "platform");
        assert_eq!(secret.metadata.annotations.as_ref().unwrap()["note"], "hi");
        assert!(is_controlled_by(&secret.metadata, "uid-1"));
        assert!(!is_controlled_by(&secret.metadata, "uid-2"));
        assert_eq!(labels[ACCESS_TOKEN_UID_LABEL], "uid-1");
    }

    #[test]
    fn an_orphaned_child_is_ours_only_by_our_labels_and_uid() {
        let secret = new_secret(&access_token(), BTreeMap::new());
        assert!(is_child_of(&secret.metadata, "uid-1"));
        assert!(!is_child_of(&secret.metadata, "uid-2"));
        // Owner references stripped, as the garbage collector does for `Orphan`.
        let mut orphaned = secret.metadata.clone();
        orphaned.owner_references = None;
        assert!(is_child_of(&orphaned, "uid-1"));
        assert!(!is_child_of(&orphaned, "uid-2"));
        // Someone else's controller, or labels of another manager: never ours.
        let mut foreign = secret.metadata.clone();
        foreign.owner_references.as_mut().unwrap()[0].uid = "other".into();
        assert!(!is_child_of(&foreign, "uid-1"));
        let mut relabelled = orphaned.clone();
        relabelled
            .labels
            .as_mut()
            .unwrap()
            .insert(MANAGED_BY_LABEL.into(), "someone-else".into());
        assert!(!is_child_of(&relabelled, "uid-1"));
    }

    #[test]
    fn an_up_to_date_secret_needs_no_write_and_foreign_keys_survive_an_update() {
        let token = access_token();
        let value = Token::generate();
        let expiry: Timestamp = "2027-06-30T00:00:00Z".parse().unwrap();
        let data = secret_data(&token, &group_scope(), &value, expiry, None);
        let mut existing = new_secret(&token, data.clone());
        existing
            .data
            .as_mut()
            .unwrap()
            .insert("extra".into(), ByteString(b"x".to_vec()));
        assert_eq!(updated_secret(&token, &existing, data.clone()), None);

        let later: Timestamp = "2028-01-01T00:00:00Z".parse().unwrap();
        let updated = updated_secret(
            &token,
            &existing,
            secret_data(&token, &group_scope(), &value, later, None),
        )
        .expect("a new expiry needs a write");
        let updated_data = updated.data.unwrap();
        assert_eq!(updated_data[keys::EXPIRES_AT].0, b"2028-01-01T00:00:00Z");
        assert_eq!(updated_data["extra"].0, b"x");
        assert_eq!(
            updated_data[keys::TOKEN].0,
            value.expose_secret().as_bytes()
        );
    }

    #[test]
    fn keys_removed_from_the_template_leave_the_secret_and_foreign_keys_stay() {
        let mut token = access_token();
        let value = Token::generate();
        let expiry: Timestamp = "2027-06-30T00:00:00Z".parse().unwrap();
        let data = secret_data(&token, &group_scope(), &value, expiry, None);
        let mut existing = new_secret(&token, data.clone());
        existing
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("added-by-someone".into(), "x".into());
        token.spec.secret_template = None;
        let updated = updated_secret(&token, &existing, data).expect("the template changed");
        let labels = updated.metadata.labels.unwrap();
        assert!(
            !labels.contains_key("team"),
            "a removed template label goes"
        );
        assert_eq!(labels["added-by-someone"], "x", "a foreign label stays");
        assert_eq!(labels[MANAGED_BY_LABEL], OPERATOR_MANAGER);
        assert_eq!(
            updated.metadata.annotations, None,
            "no template, no annotations"
        );
    }

    #[test]
    fn status_keeps_transition_times_of_unchanged_conditions() {
        let mut token = access_token();
        let then: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let now: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
        let active = Outcome {
            phase: Phase::Active,
            ready: true,
            reason: Reason::TokenActive,
            message: "ok".into(),
            stalled: false,
            token_id: Some("abc".into()),
            expires_at: None,
            organization: None,
        };
        token.status = Some(status(&token, &active, then));
        let again = status(&token, &active, now);
        assert_eq!(again.conditions[0].last_transition_time, Time(then));
        assert_eq!(again.observed_generation, Some(3));
        assert_eq!(again.scope.as_deref(), Some("group/platform"));
        assert_eq!(again.role, Some(Role::GroupAdmin));

        let stalled = Outcome {
            phase: Phase::Failed,
            ready: false,
            reason: Reason::SecretConflict,
            stalled: true,
            ..active
        };
        let failed = status(&token, &stalled, now);
        assert_eq!(failed.conditions[0].last_transition_time, Time(now));
        assert_eq!(failed.conditions[1].type_, "Stalled");
        assert_eq!(failed.conditions.len(), 2);
    }
}
