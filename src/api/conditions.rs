//! Condition types and reasons, in one place so that status, Events and tests agree.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use schemars::{Schema, SchemaGenerator, json_schema};

/// The condition types this operator sets, following kstatus: `Ready` always, `Stalled`
/// only while true, and `Reconciling` only while an AccessToken's first reconcile runs (so
/// that a Flux or kstatus wait cannot pass before the first status is written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// The object is fully reconciled and usable.
    Ready,
    /// The operator cannot make progress until something changes.
    Stalled,
    /// The operator has seen the object and is working on its first status.
    Reconciling,
    /// AccessTokens only: True within the scope's `tokenPolicy.expiryWarning` (default 7 days) of the expiry.
    ExpiringSoon,
    /// AccessTokens with `spec.rotation.restartTargets`, after a rotation: True once every target rolled out onto the new token.
    TargetsRolledOut,
}

impl ConditionType {
    /// The `type` string written into the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Stalled => "Stalled",
            Self::Reconciling => "Reconciling",
            Self::ExpiringSoon => "ExpiringSoon",
            Self::TargetsRolledOut => "TargetsRolledOut",
        }
    }
}

/// Machine-readable reasons, used as condition reasons and as Event reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A token was minted and written to its Secret.
    TokenIssued,
    /// The token is active and valid.
    TokenActive,
    /// `spec.revoked` is true: the token is disabled.
    TokenRevoked,
    /// `spec.revoked` went back to false: the same token works again.
    TokenReenabled,
    /// The token's expiry has passed.
    TokenExpired,
    /// The Secret was lost or tampered with, so a fresh token replaced the old one.
    TokenReissued,
    /// The organization named by the token does not exist.
    OrganizationNotFound,
    /// The group named by the token does not exist.
    GroupNotFound,
    /// The group exists but its organization does not.
    GroupOrganizationNotFound,
    /// The token's namespace is not in the scope's `tokenNamespaces`.
    NamespaceNotAllowed,
    /// The token's group now belongs to another organization than the one the token was
    /// issued for, or its Organization or Group was deleted and created again (another
    /// uid): the token stays disabled.
    ScopeChanged,
    /// A group token not newer than its Group: it was written when the admission policy could
    /// not check its writer against the group, so it is never issued.
    GroupNewerThanToken,
    /// A Secret with the target name exists and is not owned by this AccessToken.
    SecretConflict,
    /// Writing the token's Secret keeps failing (admission, quota, ...); retried with backoff.
    SecretWriteFailed,
    /// A TechnicalUser with the token's name exists and is not controlled by it.
    TechnicalUserConflict,
    /// The AccessToken was deleted along with its TechnicalUser and Secret.
    TokenDeleted,
    /// The spec holds a value the schema could not refuse (for example a lifetime too long to represent).
    InvalidSpec,
    /// A transient error talking to the API server; retried with backoff.
    ReconcileError,
    /// The scope object (Organization or Group) is valid.
    ScopeValid,
    /// A Group names an organization that does not exist.
    OrganizationMissing,
    /// The operator has seen the AccessToken and is issuing it (first reconcile).
    FirstReconcile,
    /// The token's Organization or Group has `spec.suspended: true` (the kill switch).
    ScopeSuspended,
    /// The token asks for a longer life than its scope's `tokenPolicy.maxLifetime`: not issued.
    PolicyViolation,
    /// A tightened `tokenPolicy.maxLifetime` moved an issued token's expiry earlier.
    TokenExpiryShortened,
    /// The token expires within the scope's `tokenPolicy.expiryWarning` (ExpiringSoon=True).
    TokenExpiringSoon,
    /// The token's expiry is further away than the warning period (ExpiringSoon=False).
    ExpiryNotNear,
    /// A rotation wrote a new token into the Secret; the previous one works until the overlap ends.
    TokenRotated,
    /// Unused for the scope's `tokenPolicy.idleTimeout`: suspended until `spec.reactivate` changes.
    TokenIdle,
    /// Every restart target rolled out onto the new token; the previous token was removed.
    RolloutComplete,
    /// Restart targets are still rolling out.
    RolloutInProgress,
    /// A restart target does not exist.
    RestartTargetMissing,
    /// The overlap ended before every restart target finished its rollout.
    RolloutStuck,
}

impl Reason {
    /// The CamelCase string used in conditions and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenIssued => "TokenIssued",
            Self::TokenActive => "TokenActive",
            Self::TokenRevoked => "TokenRevoked",
            Self::TokenReenabled => "TokenReenabled",
            Self::TokenExpired => "TokenExpired",
            Self::TokenReissued => "TokenReissued",
            Self::OrganizationNotFound => "OrganizationNotFound",
            Self::GroupNotFound => "GroupNotFound",
            Self::GroupOrganizationNotFound => "GroupOrganizationNotFound",
            Self::NamespaceNotAllowed => "NamespaceNotAllowed",
            Self::ScopeChanged => "ScopeChanged",
            Self::GroupNewerThanToken => "GroupNewerThanToken",
            Self::SecretConflict => "SecretConflict",
            Self::SecretWriteFailed => "SecretWriteFailed",
            Self::TechnicalUserConflict => "TechnicalUserConflict",
            Self::TokenDeleted => "TokenDeleted",
            Self::InvalidSpec => "InvalidSpec",
            Self::ReconcileError => "ReconcileError",
            Self::ScopeValid => "ScopeValid",
            Self::OrganizationMissing => "OrganizationMissing",
            Self::FirstReconcile => "FirstReconcile",
            Self::ScopeSuspended => "ScopeSuspended",
            Self::PolicyViolation => "PolicyViolation",
            Self::TokenExpiryShortened => "TokenExpiryShortened",
            Self::TokenExpiringSoon => "TokenExpiringSoon",
            Self::ExpiryNotNear => "ExpiryNotNear",
            Self::TokenRotated => "TokenRotated",
            Self::TokenIdle => "TokenIdle",
            Self::RolloutComplete => "RolloutComplete",
            Self::RolloutInProgress => "RolloutInProgress",
            Self::RestartTargetMissing => "RestartTargetMissing",
            Self::RolloutStuck => "RolloutStuck",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Schema for a conditions list: a list-map keyed on `type`, so server-side apply merges conditions by type instead of replacing the whole list.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "type": "array",
        "description": "Current state as kstatus conditions: Ready always; Stalled and Reconciling only while true; on issued AccessTokens, ExpiringSoon (True within the scope's tokenPolicy.expiryWarning of the expiry).",
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

/// What the conditions of any of the three kinds say.
pub struct Readiness<'a> {
    /// Whether Ready is True.
    pub ready: bool,
    /// Whether the object waits for an outside change (kstatus Stalled, present only while true).
    pub stalled: bool,
    /// The reason of both conditions.
    pub reason: Reason,
    /// The message of both conditions.
    pub message: &'a str,
}

/// The one conditions builder of AccessToken, Organization and Group: `Ready` always,
/// `Stalled` only while true, transition times kept for conditions that did not change.
pub fn conditions(
    previous: &[Condition],
    readiness: Readiness<'_>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let Readiness {
        ready,
        stalled,
        reason,
        message,
    } = readiness;
    let mut conditions = vec![condition(
        previous,
        ConditionType::Ready,
        ready,
        reason,
        message,
        generation,
        now,
    )];
    if stalled {
        conditions.push(condition(
            previous,
            ConditionType::Stalled,
            true,
            reason,
            message,
            generation,
            now,
        ));
    }
    conditions
}

/// Puts a condition of `type_` into `conditions`, replacing the one of that type (and keeping
/// its transition time if its status did not change).
pub fn put_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    (value, reason, message): (bool, Reason, &str),
    generation: Option<i64>,
) {
    let now = Timestamp::now();
    let condition = condition(conditions, type_, value, reason, message, generation, now);
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
}

/// A condition that keeps its previous `lastTransitionTime` unless its status changed.
pub fn condition(
    previous: &[Condition],
    type_: ConditionType,
    value: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if value { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_.as_str() && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.as_str().to_string(),
        status: status.to_string(),
        reason: reason.as_str().to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}
