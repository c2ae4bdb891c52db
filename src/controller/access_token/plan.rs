//! The AccessToken reconciler's decisions, pure: from what `observe` read ([`World`], with the
//! one clock reading of the reconcile) to what `apply` must write ([`Decision`]: refuse, keep,
//! rotate or mint), and, once the token is in place, the phase, status, Event, credentials
//! kept and requeue that follow ([`settle`], [`kept_credentials`], [`requeue`]). No API calls,
//! so the behaviours of docs/concepts/lifecycle.md are table tests here.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};

use super::{build::Outcome, rotation};
use crate::{
    api::{
        AccessTokenSpec, AccessTokenStatus, Credential, Phase, Reason, ScopeKind, TechnicalUser,
    },
    domain::{
        expiry::InvalidLifetime,
        policy::PolicyExpiry,
        scope::{ResolvedScope, ScopeProblem},
    },
    token::Token,
};

/// How often an object waiting on something the operator cannot watch is looked at again.
pub const RECHECK: Duration = Duration::from_secs(60);
/// Longest wait between reconciles of a healthy token (expiry is also requeued exactly).
pub const RESYNC: Duration = Duration::from_secs(3600);

/// Everything one reconcile of an AccessToken reads, in one plain value.
pub struct World {
    /// The Secret's name.
    pub secret_name: String,
    /// The TechnicalUser's name (the AccessToken's).
    pub name: String,
    /// The phase and Ready reason reported so far.
    pub previous: (Option<Phase>, Option<String>),
    /// The token id reported so far: set once a token was issued.
    pub issued: Option<String>,
    /// When the AccessToken was created (`metadata.creationTimestamp`).
    pub created: Timestamp,
    /// The organization whose admins manage the token, if known (see `status.organization`).
    pub organization: Option<String>,
    /// The scope, resolved against the Organization and Group read.
    pub scope: Result<ResolvedScope, ScopeProblem>,
    /// The effective expiry.
    pub expiry: Result<Timestamp, InvalidLifetime>,
    /// The TechnicalUser by the token's name.
    pub user: UserSeen,
    /// The Secret by `secret_name`.
    pub secret: SecretSeen,
    /// What `spec.rotation` asks, if set.
    pub rotation: Option<RotationAsk>,
    /// The reconcile's one clock reading.
    pub now: Timestamp,
}

/// What `spec.rotation` asks, and what the status says was last acted on.
#[derive(Debug, Clone, Default)]
pub struct RotationAsk {
    /// `spec.rotation.trigger`.
    pub trigger: Option<String>,
    /// `spec.rotation.renewBefore`.
    pub renew_before: Option<String>,
    /// The trigger value last acted on (`status.rotationTrigger`).
    pub acted_on: Option<String>,
    /// A rotation finished whose status was never written (a crash): its trigger counts as
    /// acted on.
    pub recovered: bool,
}

/// The TechnicalUser by the token's name.
pub enum UserSeen {
    /// None yet.
    Missing,
    /// One this AccessToken does not control: never touched.
    Foreign,
    /// Ours.
    Ours(Box<TechnicalUser>),
}

/// The Secret that should hold the token.
pub enum SecretSeen {
    /// No Secret by that name.
    Missing,
    /// A Secret by that name that this AccessToken does not control: never touched.
    Foreign,
    /// Ours, holding a well-formed token; `credential` is the TechnicalUser's credential it
    /// verified against, `None` if it verified against none (not the token issued: tampered).
    Holding {
        /// The Secret as read.
        secret: Box<Secret>,
        /// Its token.
        token: Token,
        /// The credential the token verified against.
        credential: Option<Credential>,
    },
    /// Ours, but its token is missing or unreadable.
    Damaged(Box<Secret>),
}

/// What the reconcile does.
pub enum Decision {
    /// The token cannot be (or stay) usable until something outside changes.
    Refuse(Box<Refusal>),
    /// The Secret holds the issued token: bring the TechnicalUser and Secret up to date.
    Keep(Box<Keep>),
    /// The Secret holds the issued token and a rotation is due: stage a new credential beside
    /// the current one, write the new token into the Secret, then settle as for `Keep`.
    Rotate(Box<Keep>, rotation::Cause),
    /// Mint a token into the Secret: staged credential, then Secret, then TechnicalUser.
    Mint(Box<Mint>),
}

/// The issued token in place, to keep (or rotate).
pub struct Keep {
    /// The token's scope and role.
    pub scope: ResolvedScope,
    /// The effective expiry.
    pub expires_at: Timestamp,
    /// The token in the Secret.
    pub token: Token,
    /// The Secret as read.
    pub secret: Secret,
    /// The credential the token verified against, current (not retired: a rotation that
    /// crashed before its Secret write did not happen) and expiring at `expires_at`.
    pub credential: Credential,
}

/// A token to mint.
pub struct Mint {
    /// The token's scope and role.
    pub scope: ResolvedScope,
    /// The effective expiry.
    pub expires_at: Timestamp,
    /// Our Secret to replace (at the resourceVersion read), or `None` to create one.
    pub existing: Option<Secret>,
    /// Why this is a reissue; `None` for the first issue.
    pub why: Option<&'static str>,
}

/// A refusal: what to write, what to report, when to look again.
pub struct Refusal {
    /// The TechnicalUser to apply first (disabled, or without the lost token's credential).
    pub user: Option<TechnicalUser>,
    /// The status to report.
    pub outcome: Outcome,
    /// Whether to publish a Warning Event (only when the reason is new).
    pub announce: bool,
    /// When to look again.
    pub wait: Wait,
}

/// When a refused AccessToken is looked at again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// When a watched object changes (the spec, the Organization or Group).
    ForChange,
    /// After [`RECHECK`]: what must change is not watched (a foreign object's removal).
    Recheck,
}

/// Decides what one reconcile does with `world`.
pub fn decide(world: World) -> Decision {
    let World {
        secret_name,
        name,
        previous,
        issued,
        created,
        organization,
        scope,
        expiry,
        user,
        secret,
        rotation,
        now,
    } = world;
    let refuse = |user, reason, message, wait| {
        let refusal = refusal(
            &previous,
            issued.clone(),
            organization.clone(),
            user,
            reason,
            message,
            wait,
        );
        Decision::Refuse(Box::new(refusal))
    };
    let ours = match user {
        UserSeen::Foreign => {
            let message = format!(
                "TechnicalUser {name:?} exists and is not controlled by this AccessToken; it is left untouched"
            );
            return refuse(None, Reason::TechnicalUserConflict, message, Wait::Recheck);
        }
        UserSeen::Missing => None,
        UserSeen::Ours(user) => Some(*user),
    };
    let scope = match admitted(ours.as_ref(), scope, expiry, created) {
        Ok(scope) => scope,
        Err(objection) => {
            // Fail closed: an issued token whose scope is gone or changed stops working now.
            let user = ours.filter(|_| objection.disable).and_then(disabled);
            let (reason, message) = (objection.reason, objection.message);
            return refuse(user, reason, message, Wait::ForChange);
        }
    };
    match issue(secret, scope, issued.is_some()) {
        Some(Decision::Keep(keep)) => match rotation_due(rotation.as_ref(), &keep, now) {
            Some(cause) => Decision::Rotate(keep, cause),
            None => Decision::Keep(keep),
        },
        Some(decision) => decision,
        None => {
            let emptied = ours.and_then(without_credentials);
            let message = format!(
                "Secret {secret_name:?} already exists and is not owned by this AccessToken; it is left untouched. Delete it or set spec.secretName on a new AccessToken"
            );
            refuse(emptied, Reason::SecretConflict, message, Wait::Recheck)
        }
    }
}

/// Why a token may not be (or stay) usable where it acts, and whether its TechnicalUser, if
/// issued, is disabled for it.
struct Objection {
    disable: bool,
    reason: Reason,
    message: String,
}

/// The scope and expiry a token is issued (or kept) for, unless there is an objection: the
/// scope does not admit it, the expiry is invalid, the scope changed since the token was
/// issued, or a group token holding no credential yet is not newer than its Group.
fn admitted(
    ours: Option<&TechnicalUser>,
    scope: Result<ResolvedScope, ScopeProblem>,
    expiry: Result<Timestamp, InvalidLifetime>,
    created: Timestamp,
) -> Result<(ResolvedScope, Timestamp), Objection> {
    let objection = |disable, reason, message| Objection {
        disable,
        reason,
        message,
    };
    let (scope, expires_at) = match (scope, expiry) {
        (Err(problem), _) => return Err(objection(true, problem.reason, problem.message)),
        (Ok(_), Err(invalid)) => {
            return Err(objection(false, invalid.reason(), invalid.to_string()));
        }
        (Ok(scope), Ok(expires_at)) => (scope, expires_at),
    };
    if let Some(message) = scope_changed(ours, &scope) {
        return Err(objection(true, Reason::ScopeChanged, message));
    }
    if !holds_credentials(ours)
        && let Some(message) = unproven_admission(&scope, created)
    {
        return Err(objection(true, Reason::GroupNewerThanToken, message));
    }
    Ok((scope, expires_at))
}

/// The expiry to issue or keep: a token never issued that asks for more than the policy
/// allows is refused (PolicyViolation); an issued one is capped.
pub fn within_policy(
    status: &AccessTokenStatus,
    expiry: PolicyExpiry,
) -> Result<Timestamp, InvalidLifetime> {
    match expiry.capped_from {
        Some(asked) if status.token_id.is_none() => Err(InvalidLifetime::PolicyViolation {
            asked,
            allowed: expiry.expires_at,
        }),
        _ => Ok(expiry.expires_at),
    }
}

/// (reported, new) when the scope's policy moved an issued token's reported expiry earlier:
/// its `maxLifetime` caps what the spec asks, or its `defaultLifetime` (itself at most
/// `maxLifetime`) gives the expiry of a token whose spec asks for none.
pub fn shortened(
    spec: &AccessTokenSpec,
    status: &AccessTokenStatus,
    expiry: PolicyExpiry,
) -> Option<(Timestamp, Timestamp)> {
    let reported = status.expires_at.as_ref()?.0;
    let by_policy =
        expiry.capped_from.is_some() || (spec.expires_at.is_none() && spec.lifetime.is_none());
    (status.token_id.is_some() && by_policy && expiry.expires_at < reported)
        .then_some((reported, expiry.expires_at))
}

/// Why the token in place must be rotated now, if it must.
fn rotation_due(ask: Option<&RotationAsk>, keep: &Keep, now: Timestamp) -> Option<rotation::Cause> {
    let ask = ask?;
    let renewal = rotation::renewal_time(keep.expires_at, ask.renew_before.as_deref());
    rotation::due(
        ask.trigger.as_deref(),
        ask.acted_on.as_deref(),
        ask.recovered,
        renewal,
        keep.expires_at,
        now,
    )
}

/// Keep or mint, for a Secret that is ours or missing; `None` for a foreign one.
fn issue(
    secret: SecretSeen,
    (scope, expires_at): (ResolvedScope, Timestamp),
    issued: bool,
) -> Option<Decision> {
    let mint = |existing: Option<Box<Secret>>, why| {
        Decision::Mint(Box::new(Mint {
            scope: scope.clone(),
            expires_at,
            existing: existing.map(|s| *s),
            why,
        }))
    };
    Some(match secret {
        SecretSeen::Holding {
            secret,
            token,
            credential: Some(credential),
        } => Decision::Keep(Box::new(Keep {
            credential: Credential {
                not_after: Time(expires_at),
                retired_at: None,
                ..credential
            },
            scope,
            expires_at,
            token,
            secret: *secret,
        })),
        SecretSeen::Holding {
            secret,
            token: _,
            credential: None,
        } => mint(
            Some(secret),
            Some("the token in its Secret is not the one issued (tampered)"),
        ),
        SecretSeen::Damaged(secret) => mint(
            Some(secret),
            Some("its Secret no longer holds a readable token (lost or tampered)"),
        ),
        // Never reported as issued: this is the first issue (or a retry of one that crashed).
        SecretSeen::Missing if !issued => mint(None, None),
        SecretSeen::Missing => mint(None, Some("its Secret was deleted")),
        SecretSeen::Foreign => return None,
    })
}

/// Whether a TechnicalUser holds a credential: a token was issued for its scope.
pub(super) fn holds_credentials(user: Option<&TechnicalUser>) -> bool {
    user.is_some_and(|u| !u.spec.credentials.is_empty())
}

/// Why an issued token's TechnicalUser is not for the scope the spec resolves to now, if it
/// is not: the group belongs to another organization, or the Organization or Group was
/// deleted and created again under the same name (another uid). Either way the admins who
/// wrote the token were checked against another scope.
fn scope_changed(user: Option<&TechnicalUser>, scope: &ResolvedScope) -> Option<String> {
    let issued =
        user.filter(|u| holds_credentials(Some(u)) && !scope.scope.is_issued_scope(&u.spec.scope))?;
    let (now, then) = (&scope.scope, &issued.spec.scope);
    Some(if now.organization != then.organization {
        format!(
            "Group {:?} now belongs to Organization {:?}, but this token was issued for Organization {:?}; it stays disabled. Create a new AccessToken to act in the new organization",
            now.name, now.organization, then.organization
        )
    } else {
        format!(
            "{:?} {:?} was deleted and created again after this token was issued (uid {} is not {}): its admins never approved this token, so it stays disabled. Create a new AccessToken to act in it",
            now.kind,
            now.name,
            now.uid.as_deref().unwrap_or("unknown"),
            then.uid.as_deref().unwrap_or("unknown"),
        )
    })
}

/// Why a group token that holds no credential yet must not be issued, if it must not: it is
/// not newer than its Group. The admission policy checks who manages a group against the
/// Group itself (deploy/admission-policies.yaml), so a token written while its Group did not
/// exist was not checked at all, and one written in the same second may have been written
/// before the API server saw the Group. Creation timestamps count whole seconds, so the same
/// second counts as "not newer".
fn unproven_admission(scope: &ResolvedScope, created: Timestamp) -> Option<String> {
    if scope.scope.kind != ScopeKind::Group {
        return None;
    }
    let group_created = match scope.group_created {
        Some(at) if at.as_second() < created.as_second() => return None,
        at => at,
    };
    Some(format!(
        "Group {:?} was created at {}, not before this AccessToken (created at {}): when the token was written, the API server could not check that its writer manages the group, so it is never issued. Delete this AccessToken and create it again: an admin of the group or of its organization is checked then",
        scope.scope.name,
        group_created.map_or_else(|| "an unknown time".to_string(), |t| t.to_string()),
        created
    ))
}

fn disabled(mut user: TechnicalUser) -> Option<TechnicalUser> {
    (!user.spec.disabled).then(|| {
        user.spec.disabled = true;
        user
    })
}

/// Our Secret is gone and its name taken: the issued token was lost with it, so its
/// credential goes too (the token must not outlive the only copy we wrote).
fn without_credentials(mut user: TechnicalUser) -> Option<TechnicalUser> {
    (!user.spec.credentials.is_empty()).then(|| {
        user.spec.credentials.clear();
        user
    })
}

/// A refusal of a token whose status said `previous` (phase, Ready reason) and `token_id`;
/// `organization` is the one whose admins manage it.
fn refusal(
    (_, previous_reason): &(Option<Phase>, Option<String>),
    token_id: Option<String>,
    organization: Option<String>,
    user: Option<TechnicalUser>,
    reason: Reason,
    message: String,
    wait: Wait,
) -> Refusal {
    let conflict = matches!(
        reason,
        Reason::SecretConflict | Reason::TechnicalUserConflict
    );
    Refusal {
        user,
        announce: previous_reason.as_deref() != Some(reason.as_str()),
        outcome: Outcome {
            // Never issued: waiting for a valid scope. Issued: disabled until it is valid again.
            phase: if token_id.is_some() || conflict {
                Phase::Failed
            } else {
                Phase::Pending
            },
            ready: false,
            reason,
            message,
            stalled: true,
            token_id,
            expires_at: None,
            organization,
        },
        wait,
    }
}

/// What follows once the token is in its Secret and its TechnicalUser is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The status to report.
    pub outcome: Outcome,
    /// A Normal Event for a change of state (revoked, expired, re-enabled), if there is one.
    pub transition: Option<(Reason, String)>,
    /// When to look again: just after expiry, at most [`RESYNC`].
    pub requeue: Duration,
}

/// Why an issued, unexpired token is held disabled (its TechnicalUser `disabled`), in order
/// of precedence: the owner's revoke, then a scope's kill switch.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// `spec.revoked` is true.
    Revoked,
    /// Stopped reversibly, for `reason` (`ScopeSuspended`): phase Suspended.
    Suspended {
        /// The condition and Event reason.
        reason: Reason,
        /// A sentence for people.
        message: String,
    },
}

/// The hold on a token: revoked first, then its scope's kill switch, then idleness.
pub fn hold(
    revoked: bool,
    suspension: Option<&ScopeProblem>,
    idle: Option<&ScopeProblem>,
) -> Option<Hold> {
    if revoked {
        return Some(Hold::Revoked);
    }
    suspension.or(idle).map(|problem| Hold::Suspended {
        reason: problem.reason,
        message: problem.message.clone(),
    })
}

/// When an issued token goes idle under `timeout`: that long after the latest of its last
/// use, its issue or rotation (`born`) and its reactivation. `None` without a timeout.
pub fn idle_at(
    timeout: Option<k8s_openapi::jiff::SignedDuration>,
    last_used: Option<Timestamp>,
    born: Timestamp,
    reactivated: Option<Timestamp>,
) -> Option<Timestamp> {
    let since = [last_used, Some(born), reactivated]
        .into_iter()
        .flatten()
        .max()?;
    since.checked_add(timeout?).ok()
}

/// The idle suspension at `now`, if the token is idle.
pub fn idle(idle_at: Option<Timestamp>, now: Timestamp) -> Option<ScopeProblem> {
    let at = idle_at.filter(|at| now >= *at)?;
    Some(ScopeProblem {
        reason: Reason::TokenIdle,
        message: format!(
            "The token was not used for the scope's tokenPolicy.idleTimeout (idle since {at}); change spec.reactivate (any new value, e.g. today's date) to reactivate it"
        ),
    })
}

/// The phase, status, transition Event and requeue of a token in place.
pub fn settle(
    previous: Option<Phase>,
    hold: Option<&Hold>,
    token_id: &str,
    expires_at: Timestamp,
    now: Timestamp,
) -> Settled {
    let (phase, ready, reason, message) = if now >= expires_at {
        let message = format!("The token expired at {expires_at}");
        (Phase::Expired, false, Reason::TokenExpired, message)
    } else {
        match hold {
            Some(Hold::Revoked) => {
                let message =
                    "spec.revoked is true: the token is disabled; set it to false to re-enable it";
                (Phase::Revoked, false, Reason::TokenRevoked, message.into())
            }
            Some(Hold::Suspended { reason, message }) => {
                (Phase::Suspended, false, *reason, message.clone())
            }
            None => {
                let message = format!("Token {token_id} is active until {expires_at}");
                (Phase::Active, true, Reason::TokenActive, message)
            }
        }
    };
    let transition = match (previous, phase) {
        (Some(Phase::Revoked), Phase::Revoked)
        | (Some(Phase::Expired), Phase::Expired)
        | (Some(Phase::Suspended), Phase::Suspended) => None,
        (_, Phase::Revoked) => Some((Reason::TokenRevoked, format!("Token {token_id} revoked"))),
        (_, Phase::Expired) => Some((Reason::TokenExpired, format!("Token {token_id} expired"))),
        (_, Phase::Suspended) => Some((reason, format!("Token {token_id} suspended: {message}"))),
        (Some(Phase::Revoked | Phase::Suspended), Phase::Active) => Some((
            Reason::TokenReenabled,
            format!("Token {token_id} re-enabled"),
        )),
        _ => None,
    };
    // Wake up exactly at expiry, so the phase flips on time (the verifier never waits for this).
    let requeue = match Duration::try_from(expires_at.duration_since(now)) {
        Ok(wait) if !wait.is_zero() => wait.min(RESYNC) + Duration::from_millis(100),
        _ => RESYNC,
    };
    Settled {
        outcome: Outcome {
            phase,
            ready,
            reason,
            message,
            stalled: false,
            token_id: Some(token_id.to_string()),
            expires_at: Some(expires_at),
            organization: None,
        },
        transition,
        requeue,
    }
}

/// Whether the TechnicalUser as applied differs from `desired` in what the operator owns
/// (spec, owner references, labels): only then is it written.
pub fn user_changed(applied: Option<&TechnicalUser>, desired: &TechnicalUser) -> bool {
    let owned = |u: &TechnicalUser| {
        (
            u.spec.clone(),
            u.metadata.owner_references.clone(),
            u.metadata.labels.clone(),
        )
    };
    applied.map(owned) != Some(owned(desired))
}

/// The moments a token in place must be looked at again, besides its expiry.
#[derive(Debug, Clone, Default)]
pub struct WakeUps {
    /// From [`settle`]: just after expiry, at most [`RESYNC`].
    pub settled: Duration,
    /// Restart targets still rolling out: poll them.
    pub poll: Option<Duration>,
    /// When the token goes idle; not a wake-up if it is held disabled already.
    pub idle_at: Option<Timestamp>,
    /// Whether the token is held disabled (revoked, suspended or idle).
    pub held: bool,
    /// When ExpiringSoon turns true.
    pub expiring_in: Option<Duration>,
    /// When an automatic rotation is due.
    pub renewal: Option<Timestamp>,
    /// When a previous token's overlap ends.
    pub overlap_end: Option<Timestamp>,
}

/// When to look again: the earliest wake-up still ahead of `now` (each a moment after the
/// instant itself, so the reconcile sees it has come), at most `settled`.
pub fn requeue(wake_ups: &WakeUps, now: Timestamp) -> Duration {
    let until = |at: Timestamp| Duration::try_from(at.duration_since(now)).ok();
    let idle = wake_ups.idle_at.filter(|_| !wake_ups.held);
    [
        wake_ups.poll,
        idle.and_then(until),
        wake_ups.expiring_in,
        wake_ups.renewal.and_then(until),
        wake_ups.overlap_end.and_then(until),
    ]
    .into_iter()
    .flatten()
    .map(|wait| wait + Duration::from_millis(100))
    .fold(wake_ups.settled, Duration::min)
}

/// Whether an issued token is ExpiringSoon, and when that next changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiryWarning {
    /// True within `warning` of the expiry (and before it).
    pub soon: bool,
    /// The condition's reason and message.
    pub reason: Reason,
    /// A sentence for people.
    pub message: String,
    /// When the condition turns True, if that is still ahead: the reconcile wakes up then.
    pub turns_true_in: Option<Duration>,
    /// Whether to publish the TokenExpiringSoon Warning Event (once per issued token).
    pub announce: bool,
}

/// The ExpiringSoon condition of token `token_id` expiring at `expires_at`, under a warning
/// period of `warning`, given the token id already warned about.
pub fn expiry_warning(
    token_id: &str,
    expires_at: Timestamp,
    warning: k8s_openapi::jiff::SignedDuration,
    warned: Option<&str>,
    now: Timestamp,
) -> ExpiryWarning {
    let from = expires_at.checked_sub(warning).unwrap_or(Timestamp::MIN);
    let soon = now >= from && now < expires_at;
    let (reason, message) = if soon {
        let message = format!("Token {token_id} expires at {expires_at}; renew or replace it");
        (Reason::TokenExpiringSoon, message)
    } else {
        let message = format!("Token {token_id} expires at {expires_at}");
        (Reason::ExpiryNotNear, message)
    };
    let turns_true_in = Duration::try_from(from.duration_since(now))
        .ok()
        .filter(|wait| !wait.is_zero());
    ExpiryWarning {
        soon,
        reason,
        message,
        turns_true_in,
        announce: soon && warned != Some(token_id),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::{
        api::{Role, TechnicalUserSpec},
        test_support::{self, now},
    };

    fn group_scope(organization: &str) -> ResolvedScope {
        test_support::group_scope(organization, Role::GroupUser)
    }

    fn credential(id: &str) -> Credential {
        test_support::credential(id, now())
    }

    /// A TechnicalUser of ours, issued (one credential) for `organization`.
    fn user(organization: &str, disabled: bool) -> UserSeen {
        UserSeen::Ours(Box::new(TechnicalUser::new(
            "t",
            TechnicalUserSpec {
                scope: group_scope(organization).scope,
                role: Role::GroupUser,
                disabled,
                expires_at: Time(now()),
                credentials: vec![credential("id1")],
            },
        )))
    }

    fn holding(verified: bool) -> SecretSeen {
        let token = Token::try_generate().unwrap();
        let credential = verified.then(|| credential(token.id().as_str()));
        SecretSeen::Holding {
            secret: Box::default(),
            token,
            credential,
        }
    }

    /// An issued, healthy token: scope valid, ours everywhere, Secret verified.
    fn world() -> World {
        World {
            secret_name: "t".into(),
            name: "t".into(),
            previous: (Some(Phase::Active), Some("TokenActive".into())),
            issued: Some("id1".into()),
            created: now(),
            organization: Some("acme".into()),
            scope: Ok(group_scope("acme")),
            expiry: Ok(now()),
            user: user("acme", false),
            secret: holding(true),
            rotation: None,
            now: now(),
        }
    }

    fn refused(world: World) -> Refusal {
        match decide(world) {
            Decision::Refuse(refusal) => *refusal,
            _ => panic!("expected a refusal"),
        }
    }

    fn minted(world: World) -> (bool, Option<&'static str>) {
        match decide(world) {
            Decision::Mint(mint) => (mint.existing.is_some(), mint.why),
            _ => panic!("expected a mint"),
        }
    }

    #[test]
    fn create_mints_into_a_new_secret_without_calling_it_a_reissue() {
        let w = World {
            previous: (None, None),
            issued: None,
            user: UserSeen::Missing,
            secret: SecretSeen::Missing,
            ..world()
        };
        assert_eq!(minted(w), (false, None));
    }

    #[test]
    fn a_healthy_token_is_kept() {
        assert!(matches!(decide(world()), Decision::Keep { .. }));
    }

    #[test]
    fn a_lost_deleted_or_tampered_secret_gets_a_reissue() {
        let deleted = World {
            secret: SecretSeen::Missing,
            ..world()
        };
        assert_eq!(minted(deleted), (false, Some("its Secret was deleted")));
        let (reuses, why) = minted(World {
            secret: holding(false),
            ..world()
        });
        assert!(reuses && why.unwrap().contains("tampered"));
        let (reuses, why) = minted(World {
            secret: SecretSeen::Damaged(Box::default()),
            ..world()
        });
        assert!(reuses && why.unwrap().contains("lost"));
    }

    #[test]
    fn every_invalid_scope_disables_an_issued_token_and_waits_for_a_change() {
        for reason in [
            Reason::OrganizationNotFound,
            Reason::GroupNotFound,
            Reason::GroupOrganizationNotFound,
            Reason::NamespaceNotAllowed,
            Reason::InvalidSpec,
        ] {
            let problem = ScopeProblem {
                reason,
                message: "gone".into(),
            };
            let r = refused(World {
                scope: Err(problem),
                ..world()
            });
            assert!(r.user.expect("user written").spec.disabled, "{reason}");
            assert_eq!(
                (r.outcome.reason, r.outcome.phase, r.wait, r.announce),
                (reason, Phase::Failed, Wait::ForChange, true)
            );
            assert!(r.outcome.stalled);
        }
    }

    #[test]
    fn a_token_never_issued_waits_pending_and_an_already_disabled_user_is_not_rewritten() {
        let problem = ScopeProblem {
            reason: Reason::GroupNotFound,
            message: "gone".into(),
        };
        let r = refused(World {
            issued: None,
            scope: Err(problem.clone()),
            user: UserSeen::Missing,
            ..world()
        });
        assert_eq!((r.outcome.phase, r.user.is_none()), (Phase::Pending, true));
        // Same reason as reported already: no second Event, no write of a disabled user.
        let r = refused(World {
            previous: (Some(Phase::Failed), Some("GroupNotFound".into())),
            scope: Err(problem),
            user: user("acme", true),
            ..world()
        });
        assert!(!r.announce && r.user.is_none());
    }

    #[test]
    fn an_unrepresentable_expiry_is_an_invalid_spec() {
        let r = refused(World {
            expiry: Err(InvalidLifetime::TooLong("999999w".into())),
            ..world()
        });
        assert_eq!(
            (r.outcome.reason, r.wait),
            (Reason::InvalidSpec, Wait::ForChange)
        );
    }

    #[test]
    fn a_token_asking_more_than_the_policy_allows_is_not_issued() {
        let r = refused(World {
            issued: None,
            user: UserSeen::Missing,
            secret: SecretSeen::Missing,
            expiry: Err(InvalidLifetime::PolicyViolation {
                asked: now(),
                allowed: now(),
            }),
            ..world()
        });
        assert_eq!(
            (r.outcome.reason, r.outcome.phase, r.wait, r.outcome.ready),
            (
                Reason::PolicyViolation,
                Phase::Pending,
                Wait::ForChange,
                false
            )
        );
        assert!(r.outcome.message.contains("tokenPolicy.maxLifetime"));
    }

    #[test]
    fn a_group_recreated_under_another_organization_disables_the_token() {
        let r = refused(World {
            scope: Ok(group_scope("other")),
            ..world()
        });
        let user = r.user.expect("disabled");
        assert!(user.spec.disabled);
        assert_eq!(user.spec.scope.organization, "acme", "never moved");
        assert_eq!(r.outcome.reason, Reason::ScopeChanged);
        assert_eq!(r.outcome.phase, Phase::Failed);
    }

    /// `group_scope("acme")` with the Group's uid `uid`.
    fn group_with_uid(uid: Option<&str>) -> ResolvedScope {
        let mut scope = group_scope("acme");
        scope.scope.uid = uid.map(Into::into);
        scope
    }

    /// The healthy world, its user issued for the Group with uid `issued_for`.
    fn issued_for(issued_for: Option<&str>) -> World {
        let mut user = user("acme", false);
        if let UserSeen::Ours(u) = &mut user {
            u.spec.scope.uid = issued_for.map(Into::into);
        }
        World {
            user,
            scope: Ok(group_with_uid(Some("uid-2"))),
            ..world()
        }
    }

    #[test]
    fn a_scope_deleted_and_created_again_disables_the_token_issued_for_the_old_one() {
        let r = refused(issued_for(Some("uid-1")));
        let user = r.user.expect("disabled");
        assert!(user.spec.disabled);
        assert_eq!(
            user.spec.scope.uid.as_deref(),
            Some("uid-1"),
            "never rebound"
        );
        assert_eq!(r.outcome.reason, Reason::ScopeChanged);
        assert!(r.outcome.message.contains("deleted and created again"));
        assert!(matches!(
            decide(issued_for(Some("uid-2"))),
            Decision::Keep { .. }
        ));
        // A user written before uids were recorded is the scope's by name: adopted, and the
        // uid written with the rest of the user.
        match decide(issued_for(None)) {
            Decision::Keep(keep) => assert_eq!(keep.scope.scope.uid.as_deref(), Some("uid-2")),
            _ => panic!("a user without a uid is kept"),
        }
    }

    #[test]
    fn a_group_token_not_newer_than_its_group_is_never_issued() {
        let group_created = test_support::GROUP_CREATED;
        let unissued = |created: Timestamp, user: UserSeen| World {
            previous: (None, None),
            issued: None,
            created,
            user,
            secret: SecretSeen::Missing,
            ..world()
        };
        let second = k8s_openapi::jiff::SignedDuration::from_secs(1);
        let same_second = group_created + k8s_openapi::jiff::SignedDuration::from_millis(900);
        for created in [group_created - second, group_created, same_second] {
            let r = refused(unissued(created, UserSeen::Missing));
            assert_eq!(r.outcome.reason, Reason::GroupNewerThanToken, "{created}");
            assert_eq!(
                r.outcome.organization.as_deref(),
                Some("acme"),
                "status names the admins who may delete it"
            );
            assert_eq!(r.outcome.phase, Phase::Pending);
            assert!(
                r.outcome
                    .message
                    .contains("Delete this AccessToken and create it again")
            );
        }
        let (fresh, _) = minted(unissued(group_created + second, UserSeen::Missing));
        assert!(
            !fresh,
            "a token of the next second is issued into a new Secret"
        );
        // A user that lost its credentials holds nothing to keep: the rule applies again.
        let mut emptied = user("acme", false);
        if let UserSeen::Ours(u) = &mut emptied {
            u.spec.credentials.clear();
        }
        let r = refused(unissued(group_created, emptied));
        assert_eq!(r.outcome.reason, Reason::GroupNewerThanToken);
        assert!(r.user.expect("disabled").spec.disabled);
        // An issued token is judged by the uid it was issued for, not by creation times
        // (tokens written before the rule, next to their Group, keep working).
        let issued = World {
            created: group_created,
            ..world()
        };
        assert!(matches!(decide(issued), Decision::Keep { .. }));
        // An organization token is checked by name, not against an object: no such rule.
        let org = World {
            scope: Ok(test_support::organization_scope(Role::OrganizationUser)),
            ..unissued(group_created, UserSeen::Missing)
        };
        assert!(matches!(decide(org), Decision::Mint { .. }));
        // A Group without a creation time (never from the API server) proves nothing.
        let mut unknown = group_scope("acme");
        unknown.group_created = None;
        let r = refused(World {
            scope: Ok(unknown),
            ..unissued(group_created + second, UserSeen::Missing)
        });
        assert_eq!(r.outcome.reason, Reason::GroupNewerThanToken);
    }

    #[test]
    fn conflicts_never_touch_the_foreign_object_and_look_again_later() {
        let r = refused(World {
            user: UserSeen::Foreign,
            ..world()
        });
        assert_eq!(
            (r.outcome.reason, r.wait, r.user.is_none()),
            (Reason::TechnicalUserConflict, Wait::Recheck, true)
        );
        // A foreign Secret: the lost token's credential is removed from our TechnicalUser.
        let r = refused(World {
            secret: SecretSeen::Foreign,
            ..world()
        });
        assert_eq!(
            (r.outcome.reason, r.wait),
            (Reason::SecretConflict, Wait::Recheck)
        );
        assert!(r.user.expect("emptied").spec.credentials.is_empty());
        assert_eq!(r.outcome.phase, Phase::Failed);
    }

    #[test]
    fn settle_reports_active_revoked_expired_and_their_transitions() {
        let later = now() + k8s_openapi::jiff::SignedDuration::from_secs(60);
        let active = settle(Some(Phase::Active), None, "id1", later, now());
        assert_eq!(
            (
                active.outcome.phase,
                active.outcome.ready,
                active.transition
            ),
            (Phase::Active, true, None)
        );
        assert_eq!(
            active.requeue,
            Duration::from_millis(60_100),
            "just after expiry"
        );

        let revoked = settle(
            Some(Phase::Active),
            Some(&Hold::Revoked),
            "id1",
            later,
            now(),
        );
        assert_eq!(revoked.outcome.phase, Phase::Revoked);
        assert_eq!(revoked.transition.unwrap().0, Reason::TokenRevoked);
        let still = settle(
            Some(Phase::Revoked),
            Some(&Hold::Revoked),
            "id1",
            later,
            now(),
        );
        assert_eq!(still.transition, None, "announced once");

        let reenabled = settle(Some(Phase::Revoked), None, "id1", later, now());
        assert_eq!(reenabled.transition.unwrap().0, Reason::TokenReenabled);

        let expired = settle(Some(Phase::Active), None, "id1", now(), now());
        assert_eq!(expired.outcome.phase, Phase::Expired);
        assert_eq!(expired.transition.unwrap().0, Reason::TokenExpired);
        assert_eq!(expired.requeue, RESYNC);
        let revoked_after_expiry = settle(
            Some(Phase::Expired),
            Some(&Hold::Revoked),
            "id1",
            now(),
            now(),
        );
        assert_eq!(revoked_after_expiry.outcome.phase, Phase::Expired);
        assert_eq!(revoked_after_expiry.transition, None);
    }

    #[test]
    fn expiring_soon_turns_true_within_the_warning_and_is_announced_once_per_token() {
        use k8s_openapi::jiff::SignedDuration;
        let expires = now() + SignedDuration::from_hours(48);
        let week = SignedDuration::from_hours(7 * 24);
        let soon = expiry_warning("id1", expires, week, None, now());
        assert!(soon.soon && soon.announce);
        assert_eq!(soon.reason, Reason::TokenExpiringSoon);
        assert_eq!(soon.turns_true_in, None);
        let again = expiry_warning("id1", expires, week, Some("id1"), now());
        assert!(again.soon && !again.announce, "one Event per issued token");
        let reissued = expiry_warning("id2", expires, week, Some("id1"), now());
        assert!(reissued.announce, "a new token gets its own warning");

        let day = SignedDuration::from_hours(24);
        let later = expiry_warning("id1", expires, day, None, now());
        assert!(!later.soon && !later.announce);
        assert_eq!(later.reason, Reason::ExpiryNotNear);
        assert_eq!(later.turns_true_in, Some(Duration::from_secs(24 * 3600)));
        let expired = expiry_warning("id1", now(), week, None, now());
        assert!(!expired.soon, "past expiry is Expired, not ExpiringSoon");
    }

    #[test]
    fn a_token_unused_for_the_idle_timeout_is_suspended_from_its_latest_use_issue_or_reactivation()
    {
        use k8s_openapi::jiff::SignedDuration;
        let hour = SignedDuration::from_hours(1);
        let t = |minutes: i64| now() + SignedDuration::from_mins(minutes);
        assert_eq!(
            idle_at(None, Some(t(0)), t(0), None),
            None,
            "no idleTimeout: never"
        );
        assert_eq!(
            idle_at(Some(hour), None, t(0), None),
            Some(t(60)),
            "from the issue"
        );
        assert_eq!(
            idle_at(Some(hour), Some(t(30)), t(0), None),
            Some(t(90)),
            "from the last use"
        );
        assert_eq!(
            idle_at(Some(hour), Some(t(30)), t(0), Some(t(45))),
            Some(t(105)),
            "from a reactivation"
        );
        assert_eq!(idle(Some(t(60)), t(59)), None);
        let idle = idle(Some(t(60)), t(60)).expect("idle");
        assert_eq!(idle.reason, Reason::TokenIdle);
        assert!(idle.message.contains("spec.reactivate"));
        let scope = ScopeProblem {
            reason: Reason::ScopeSuspended,
            message: "suspended".into(),
        };
        let held = hold(false, Some(&scope), Some(&idle));
        assert!(
            matches!(
                held,
                Some(Hold::Suspended {
                    reason: Reason::ScopeSuspended,
                    ..
                })
            ),
            "the kill switch says more"
        );
        let held = hold(false, None, Some(&idle));
        assert!(matches!(
            held,
            Some(Hold::Suspended {
                reason: Reason::TokenIdle,
                ..
            })
        ));
    }

    #[test]
    fn a_suspended_scope_holds_the_token_until_it_resumes_and_revoke_wins() {
        let later = now() + k8s_openapi::jiff::SignedDuration::from_secs(60);
        let problem = ScopeProblem {
            reason: Reason::ScopeSuspended,
            message: "Organization \"acme\" is suspended".into(),
        };
        assert_eq!(hold(true, Some(&problem), None), Some(Hold::Revoked));
        assert_eq!(hold(false, None, None), None);
        let held = hold(false, Some(&problem), None);
        let suspended = settle(Some(Phase::Active), held.as_ref(), "id1", later, now());
        assert_eq!(
            (
                suspended.outcome.phase,
                suspended.outcome.ready,
                suspended.outcome.reason
            ),
            (Phase::Suspended, false, Reason::ScopeSuspended)
        );
        assert_eq!(suspended.transition.unwrap().0, Reason::ScopeSuspended);
        let still = settle(Some(Phase::Suspended), held.as_ref(), "id1", later, now());
        assert_eq!(still.transition, None, "announced once");
        let resumed = settle(Some(Phase::Suspended), None, "id1", later, now());
        assert_eq!(resumed.outcome.phase, Phase::Active);
        assert_eq!(resumed.transition.unwrap().0, Reason::TokenReenabled);
        let expired = settle(Some(Phase::Suspended), held.as_ref(), "id1", now(), now());
        assert_eq!(expired.outcome.phase, Phase::Expired, "expiry wins");
    }

    fn rotation(
        trigger: Option<&str>,
        acted_on: Option<&str>,
        renew_before: Option<&str>,
    ) -> RotationAsk {
        RotationAsk {
            trigger: trigger.map(Into::into),
            renew_before: renew_before.map(Into::into),
            acted_on: acted_on.map(Into::into),
            recovered: false,
        }
    }

    /// The issued, healthy token expiring in `days`, with `spec.rotation` as `ask`.
    fn rotating(ask: Option<RotationAsk>, days: i64) -> Decision {
        decide(World {
            expiry: Ok(now() + k8s_openapi::jiff::SignedDuration::from_hours(24 * days)),
            rotation: ask,
            ..world()
        })
    }

    #[test]
    fn rotation_is_an_arm_of_the_plan_for_a_new_trigger_or_a_renewal_time_that_came() {
        use rotation::Cause;
        let cause = |d: Decision| match d {
            Decision::Rotate(_, cause) => Some(cause),
            Decision::Keep(_) => None,
            _ => panic!("expected keep or rotate"),
        };
        // (ask, days to expiry) → cause
        let table = [
            (None, 30, None),
            (Some(rotation(None, None, None)), 30, None),
            (
                Some(rotation(Some("v2"), Some("v1"), None)),
                30,
                Some(Cause::Trigger),
            ),
            (Some(rotation(Some("v1"), Some("v1"), None)), 30, None),
            (Some(rotation(None, None, Some("7d"))), 30, None),
            (
                Some(rotation(None, None, Some("7d"))),
                5,
                Some(Cause::Renewal),
            ),
            // Past its expiry, a renewal does not revive a token; a trigger does.
            (Some(rotation(None, None, Some("7d"))), -1, None),
            (
                Some(rotation(Some("v2"), None, None)),
                -1,
                Some(Cause::Trigger),
            ),
        ];
        for (ask, days, expected) in table {
            assert_eq!(
                cause(rotating(ask.clone(), days)),
                expected,
                "{ask:?}, {days} days"
            );
        }
        // A rotation that finished but whose status was lost counts its trigger as acted on.
        let recovered = RotationAsk {
            recovered: true,
            ..rotation(Some("v2"), Some("v1"), None)
        };
        assert_eq!(cause(rotating(Some(recovered), 30)), None);
    }

    #[test]
    fn the_kept_credential_is_current_and_expires_with_the_token() {
        let mut retired = credential("id1");
        retired.retired_at = Some(Time(now()));
        let token = Token::try_generate().unwrap();
        let expires_at = now() + k8s_openapi::jiff::SignedDuration::from_hours(5);
        let keep = match decide(World {
            expiry: Ok(expires_at),
            secret: SecretSeen::Holding {
                secret: Box::default(),
                token,
                credential: Some(retired),
            },
            ..world()
        }) {
            Decision::Keep(keep) => keep,
            _ => panic!("expected keep"),
        };
        assert_eq!(keep.credential.retired_at, None);
        assert_eq!(keep.credential.not_after.0, expires_at);
    }

    #[test]
    fn the_technical_user_is_written_only_when_what_the_operator_owns_differs() {
        let UserSeen::Ours(applied) = user("acme", false) else {
            unreachable!()
        };
        assert!(user_changed(None, &applied));
        fn map(k: &str, v: &str) -> Option<std::collections::BTreeMap<String, String>> {
            Some([(k.to_string(), v.to_string())].into())
        }
        // (change to the applied user) → written
        type Change = fn(&mut TechnicalUser);
        let table: [(&str, Change, bool); 5] = [
            ("nothing", |_| {}, false),
            ("disabled", |u| u.spec.disabled = true, true),
            ("labels", |u| u.metadata.labels = map("a", "b"), true),
            (
                "the verified-Secret record of earlier versions",
                |u| u.metadata.annotations = map("iam.accesstoken.io/verified-secret", "rv"),
                false,
            ),
            // Others' annotations are not the operator's.
            (
                "another annotation",
                |u| u.metadata.annotations = map("x", "y"),
                false,
            ),
        ];
        for (what, change, written) in table {
            let mut desired = (*applied).clone();
            change(&mut desired);
            assert_eq!(user_changed(Some(&applied), &desired), written, "{what}");
        }
    }

    #[test]
    fn the_requeue_is_the_earliest_wake_up_ahead_and_at_most_the_settled_one() {
        let in_ = |secs: i64| now() + k8s_openapi::jiff::SignedDuration::from_secs(secs);
        let extra = Duration::from_millis(100);
        let base = WakeUps {
            settled: Duration::from_secs(3600),
            ..WakeUps::default()
        };
        // (wake-ups) → requeue
        let table = [
            (base.clone(), Duration::from_secs(3600)),
            (
                WakeUps {
                    poll: Some(Duration::from_secs(2)),
                    ..base.clone()
                },
                Duration::from_secs(2) + extra,
            ),
            (
                WakeUps {
                    idle_at: Some(in_(60)),
                    ..base.clone()
                },
                Duration::from_secs(60) + extra,
            ),
            // A held token's idleness wakes nothing up.
            (
                WakeUps {
                    idle_at: Some(in_(60)),
                    held: true,
                    ..base.clone()
                },
                Duration::from_secs(3600),
            ),
            (
                WakeUps {
                    expiring_in: Some(Duration::from_secs(30)),
                    ..base.clone()
                },
                Duration::from_secs(30) + extra,
            ),
            (
                WakeUps {
                    renewal: Some(in_(90)),
                    overlap_end: Some(in_(40)),
                    ..base.clone()
                },
                Duration::from_secs(40) + extra,
            ),
            // Moments already past wake nothing up.
            (
                WakeUps {
                    renewal: Some(in_(-5)),
                    ..base.clone()
                },
                Duration::from_secs(3600),
            ),
            (
                WakeUps {
                    settled: Duration::from_secs(10),
                    idle_at: Some(in_(60)),
                    ..base.clone()
                },
                Duration::from_secs(10),
            ),
        ];
        for (wake_ups, expected) in table {
            assert_eq!(requeue(&wake_ups, now()), expected, "{wake_ups:?}");
        }
    }

    fn hours(h: i64) -> Timestamp {
        now() + k8s_openapi::jiff::SignedDuration::from_hours(h)
    }

    fn capped(expires_at: Timestamp, capped_from: Option<Timestamp>) -> PolicyExpiry {
        PolicyExpiry {
            expires_at,
            capped_from,
        }
    }

    #[test]
    fn a_token_never_issued_that_asks_more_than_the_policy_is_refused_and_an_issued_one_capped() {
        let issued = AccessTokenStatus {
            token_id: Some("id1".into()),
            ..AccessTokenStatus::default()
        };
        let new = AccessTokenStatus::default();
        // (status, policy expiry) → expiry or refusal
        assert_eq!(
            within_policy(&new, capped(hours(1), None)).ok(),
            Some(hours(1))
        );
        assert!(matches!(
            within_policy(&new, capped(hours(1), Some(hours(9)))),
            Err(InvalidLifetime::PolicyViolation { .. })
        ));
        assert_eq!(
            within_policy(&issued, capped(hours(1), Some(hours(9)))).ok(),
            Some(hours(1))
        );
    }

    #[test]
    fn an_issued_tokens_expiry_moved_earlier_by_its_scopes_policy_is_reported_once() {
        let status = |token_id: Option<&str>, reported: i64| AccessTokenStatus {
            token_id: token_id.map(Into::into),
            expires_at: Some(Time(hours(reported))),
            ..AccessTokenStatus::default()
        };
        let asks_lifetime = AccessTokenSpec {
            lifetime: Some("10h".into()),
            ..AccessTokenSpec::default()
        };
        let asks_nothing = AccessTokenSpec::default();
        // (spec, status, policy expiry) → (reported, new)
        let table = [
            // The cap moved it earlier.
            (
                &asks_lifetime,
                status(Some("id1"), 10),
                capped(hours(5), Some(hours(10))),
                Some((hours(10), hours(5))),
            ),
            // The spec itself asks for less: no policy at work.
            (
                &asks_lifetime,
                status(Some("id1"), 10),
                capped(hours(5), None),
                None,
            ),
            // A spec asking for nothing follows the policy's default lifetime.
            (
                &asks_nothing,
                status(Some("id1"), 10),
                capped(hours(5), None),
                Some((hours(10), hours(5))),
            ),
            // Not earlier, or never issued: nothing to report.
            (
                &asks_nothing,
                status(Some("id1"), 5),
                capped(hours(5), None),
                None,
            ),
            (
                &asks_lifetime,
                status(None, 10),
                capped(hours(5), Some(hours(10))),
                None,
            ),
        ];
        for (spec, status, expiry, expected) in table {
            assert_eq!(
                shortened(spec, &status, expiry),
                expected,
                "{spec:?} {expiry:?}"
            );
        }
    }
}
