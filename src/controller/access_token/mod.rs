//! The AccessToken reconciler: validate scope → Secret (the token, minted once) →
//! TechnicalUser (its hash, role, disabled, expiry) → status and Events. Cleanup on delete.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{self, Timestamp},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use tracing::{info, instrument, warn};

pub(super) mod build;
mod crash_point;
mod first_status;
pub mod kubeconfig;
mod plan;
mod restart;
mod rotation;
pub(super) mod verified_secret;

use self::{
    build::Outcome,
    plan::{Decision, Refusal, SecretSeen, UserSeen, Wait, World},
};
use super::{Context, OwnWrites};
use crate::{
    Error, Result,
    api::{
        AccessToken, AccessTokenSpec, AccessTokenStatus, Credential, Group, Organization, Phase,
        Reason, TechnicalUser, conditions,
        wellknown::{FINALIZER, OPERATOR_MANAGER, keys},
    },
    domain::{
        expiry::{self, InvalidLifetime},
        policy::{self, PolicyExpiry},
        scope::{ResolvedScope, ScopeProblem, resolve_scope, suspension},
    },
    error::{AtStep, Step},
    token::Token,
};

/// An AccessToken as watched: one that no longer deserializes (stored under an older schema,
/// say) arrives as an error for that object alone instead of stopping the watch for all.
pub type Watched = crate::api::Trimmed<AccessToken>;

/// Entry point from the controller: routes to reconcile or cleanup through the finalizer.
pub async fn reconcile(watched: Arc<Watched>, ctx: Arc<Context>) -> Result<Action> {
    let token = match &watched.0 {
        Ok(token) => Arc::new(token.clone()),
        Err(invalid) => return Ok(undecodable(&watched, invalid, &ctx).await),
    };
    tracing::debug!(name = %token.name_any(), version = token.resource_version(), "reconciling");
    let namespace = token.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<AccessToken> = Api::namespaced(ctx.client.clone(), &namespace);
    let now = Timestamp::now();
    let first = first_status::needed(&token).then(|| token.clone());
    if first.is_some() && token.uid().is_some_and(|uid| ctx.verified.knows(&uid)) {
        // No status, yet this process settled the token: a copy from a watch that lags (a
        // child's event can start a reconcile before the token's own events arrive). Acting
        // on it would redo the issuing reconcile's work (a rotation its status records, its
        // Events); look again once the watch has caught up.
        tracing::debug!(name = %token.name_any(), "stale copy of a new token; retrying");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let action = match reconcile_or_clean_up(&api, token, &ctx, now).await {
        Ok(action) => action,
        Err(error) => {
            if let Some(token) = first {
                first_status::after_failure(&api, &token, now).await;
            }
            return Err(error);
        }
    };
    ctx.failures.succeeded(&*watched);
    Ok(action)
}

/// The token's own reconcile. New tokens get no finalizer (issue 22: one write fewer): their
/// children go with them through their owner references and the sweep (`super::sweep`). A
/// token that still carries the finalizer of earlier builds is cleaned up through it.
async fn reconcile_or_clean_up(
    api: &Api<AccessToken>,
    token: Arc<AccessToken>,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action> {
    if token.finalizers().iter().any(|f| f == FINALIZER) {
        return finalizer(api, FINALIZER, token, |event| async {
            match event {
                Finalizer::Apply(token) => token.reconcile(ctx, now).await,
                Finalizer::Cleanup(token) => Ok(token.cleanup()),
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
    }
    if token.meta().deletion_timestamp.is_some() {
        // Held by someone else's finalizer (or foreground deletion): the verifier denies it
        // already, and its children go when it does.
        return Ok(Action::await_change());
    }
    token.reconcile(ctx, now).await
}

/// An AccessToken that does not deserialize: nothing is written for it (its TechnicalUser,
/// if any, keeps its state), a Warning says why, and it waits for its next change.
async fn undecodable(watched: &Watched, invalid: &crate::api::Invalid, ctx: &Context) -> Action {
    warn!(name = %watched.name_any(), namespace = watched.namespace(), error = %invalid.error, "AccessToken does not deserialize");
    let note = "The AccessToken could not be read (it does not match the operator's schema); nothing is changed until it is fixed".to_string();
    ctx.publish(
        watched,
        EventType::Warning,
        Reason::InvalidSpec,
        "Validate",
        note,
    )
    .await;
    Action::await_change()
}

/// Transient failures back off exponentially per object and become Warning Events.
pub fn error_policy(token: Arc<Watched>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_write_conflict() {
        // Our cached copy was stale; the watch brings the fresh one in a moment.
        tracing::debug!(name = %token.name_any(), %error, "write conflict; retrying");
        return Action::requeue(Duration::from_millis(500));
    }
    let (failures, wait) = ctx.failures.failed(&*token);
    warn!(name = %token.name_any(), namespace = token.namespace(), %error, failures, "reconcile failed");
    // The reason names the step that failed; the note never carries the API's message text.
    let (reason, note) = (error.step().reason(), error.event_note());
    tokio::spawn(async move {
        ctx.publish_reason(&*token, EventType::Warning, reason, "Reconcile", note)
            .await;
    });
    Action::requeue(wait)
}

/// The Organization and Group a token names, from the token controller's scope watches (see
/// [`Scopes`](super::Scopes)); one they do not hold (yet) is read from the API server.
struct FetchedScope {
    organization: Option<Arc<Organization>>,
    group: Option<Arc<Group>>,
}

impl FetchedScope {
    fn organization(&self, name: &str) -> Option<Arc<Organization>> {
        self.organization.clone().filter(|o| o.name_any() == name)
    }

    fn group(&self, name: &str) -> Option<Arc<Group>> {
        self.group.clone().filter(|g| g.name_any() == name)
    }
}

async fn fetch_scope(ctx: &Context, spec: &AccessTokenSpec) -> Result<FetchedScope> {
    let group = match &spec.group {
        Some(name) => watched_or_read(ctx, ctx.scopes.group(name), name).await?,
        None => None,
    };
    // For a group token, the organization that matters is the group's.
    let org_name = spec
        .organization
        .as_ref()
        .or(group.as_ref().map(|g| &g.spec.organization));
    let organization = match org_name {
        Some(name) => watched_or_read(ctx, ctx.scopes.organization(name), name).await?,
        None => None,
    };
    Ok(FetchedScope {
        organization,
        group,
    })
}

/// The scope object `name` as its watch holds it (`watched`), else as the API server has it.
async fn watched_or_read<K>(
    ctx: &Context,
    watched: Option<Arc<K>>,
    name: &str,
) -> Result<Option<Arc<K>>>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if watched.is_some() {
        return Ok(watched);
    }
    let read = Api::<K>::all(ctx.client.clone()).get_opt(name).await;
    Ok(read.at(Step::ReadScope)?.map(Arc::new))
}

/// The organization whose admins manage a token (`status.organization`): for one issued, the
/// organization it was issued for (a group moved or created again elsewhere does not hand it
/// to other admins); otherwise its own, or its Group's as read now.
fn managing_organization(
    spec: &AccessTokenSpec,
    user: &UserSeen,
    fetched: &FetchedScope,
) -> Option<String> {
    match user {
        UserSeen::Ours(user) if plan::holds_credentials(Some(user)) => {
            Some(user.spec.scope.organization.clone())
        }
        _ => match (&spec.organization, &spec.group) {
            (Some(organization), _) => Some(organization.clone()),
            (None, Some(group)) => fetched.group(group).map(|g| g.spec.organization.clone()),
            (None, None) => None,
        },
    }
}

/// What the Organization and Group say about a token beyond where it acts (see
/// docs/concepts/lifecycle.md#kill-switch and #token-policy).
struct ScopeFacts {
    /// The kill switch that stops the token, if one is on.
    suspension: Option<ScopeProblem>,
    /// A tightened `maxLifetime` moved the issued token's expiry earlier: (reported, new).
    shortened: Option<(Timestamp, Timestamp)>,
    /// The policy that applies to the token.
    policy: policy::EffectivePolicy,
    /// When the token goes (or went) idle, if the policy has an idleTimeout.
    idle_at: Option<Timestamp>,
    /// When `spec.reactivate` last changed (now, if this reconcile sees a new value).
    reactivated_at: Option<Timestamp>,
}

/// When the token in the Secret was born.
#[derive(Clone, Copy)]
struct Born {
    /// Its last rotation, or the AccessToken's creation.
    at: Timestamp,
    /// The rotation was recovered from the TechnicalUser: it finished (the Secret moved on)
    /// but its status was never written, so its trigger counts as acted on.
    recovered: bool,
}

/// One reconcile pass of an AccessToken: the APIs of its children, where writes of them are
/// noted, and the one clock reading every decision and status of the pass uses.
struct Pass<'a> {
    users: Api<TechnicalUser>,
    secrets: Api<Secret>,
    own_writes: &'a OwnWrites,
    now: Timestamp,
    /// The children were not read (the token looks new): a TechnicalUser is created, not
    /// applied, so one that exists after all is never written over.
    unread: bool,
}

impl<'a> Pass<'a> {
    fn new(ctx: &'a Context, namespace: &str, now: Timestamp, unread: bool) -> Self {
        Self {
            users: Api::namespaced(ctx.client.clone(), namespace),
            secrets: Api::namespaced(ctx.client.clone(), namespace),
            own_writes: &ctx.own_writes,
            now,
            unread,
        }
    }
}

/// Where a token acts and what its scope says: the same for every step of one pass.
#[derive(Clone, Copy)]
struct Placed<'a> {
    scope: &'a ResolvedScope,
    facts: &'a ScopeFacts,
}

/// A token in its Secret, with the credential it verifies against.
struct Issued {
    token: Token,
    /// The Secret as read or written; `None` if it is not to be refreshed.
    secret: Option<Secret>,
    credential: Credential,
    expires_at: Timestamp,
}

/// What settling a token in place wrote, for its status report.
struct Report<'a> {
    token_id: &'a str,
    expires_at: Timestamp,
    settled: plan::Settled,
    /// Whether the token is held disabled (revoked, suspended or idle).
    held: bool,
    /// The previous credentials kept, most recent first.
    previous: Vec<Credential>,
    rotated_at: Option<Timestamp>,
    restarts: Option<restart::Verdict>,
}

/// A Secret write backoff still running: how long it lasts, and the status to keep reporting.
struct Waiting {
    left: Duration,
    outcome: Option<Outcome>,
}

/// What the status reports after a Secret write failed.
struct Unwritten {
    phase: Phase,
    token_id: Option<String>,
    expires_at: Option<Timestamp>,
}

/// What a mint attempt came to.
enum Minted {
    /// The token is in the Secret, its credential in the TechnicalUser (as `staged` applied it).
    Written {
        issued: Box<Issued>,
        staged: Box<TechnicalUser>,
    },
    /// Writing the Secret failed (not a race); the staged credential is replaced next time.
    SecretWriteFailed(kube::Error),
}

/// The Secret by `name`, as the plan sees it. One the operator's Secret watch says this token
/// controls is read whole at once; any other, metadata first: the data of a Secret this token
/// does not own is not read (nor kept, should it have been replaced since the watch saw it).
/// A foreign Secret is `Secret::default()` either way: only its presence matters.
async fn read_secret(
    secrets: &Api<Secret>,
    owners: &super::SecretOwners,
    name: &str,
    uid: &str,
) -> Result<Option<Secret>> {
    if owners.controls(secrets.namespace().unwrap_or_default(), name, uid) {
        let secret = secrets.get_opt(name).await.at(Step::ReadSecret)?;
        return Ok(
            secret.map(|s| match build::is_controlled_by(&s.metadata, uid) {
                true => s,
                false => Secret::default(),
            }),
        );
    }
    match secrets.get_metadata_opt(name).await.at(Step::ReadSecret)? {
        Some(meta) if build::is_controlled_by(&meta.metadata, uid) => {
            secrets.get_opt(name).await.at(Step::ReadSecret)
        }
        Some(_) => Ok(Some(Secret::default())), // foreign: only its presence matters
        None => Ok(None),
    }
}

/// The token a Secret of ours holds, if it is well formed and matches its `token-id` key.
fn held_token(secret: &Secret) -> Option<Token> {
    let data = secret.data.as_ref();
    let text = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(|v| std::str::from_utf8(&v.0).ok())
    };
    let token = Token::parse(text(keys::TOKEN)?).ok()?;
    (text(keys::TOKEN_ID)? == token.id().as_str()).then_some(token)
}

impl AccessToken {
    #[instrument(skip_all, fields(namespace = self.namespace(), name = %self.name_any()))]
    async fn reconcile(&self, ctx: &Context, now: Timestamp) -> Result<Action> {
        let namespace = self.namespace().ok_or(Error::MissingNamespace)?;
        if self.looks_new(ctx) {
            match (self.issue_unread(ctx, &Pass::new(ctx, &namespace, now, true))).await {
                Ok(Some(action)) => return Ok(action),
                Ok(None) => {}
                Err(error) if name_taken(&error) => {
                    tracing::debug!("TechnicalUser name taken; reading the children");
                }
                Err(error) => return Err(error),
            }
        }
        (self.reconcile_read(ctx, &Pass::new(ctx, &namespace, now, false))).await
    }

    /// Whether nothing says this token has children yet: no status was ever written for it,
    /// the Secret watch knows no Secret of its, and no Secret write of its is backing off.
    fn looks_new(&self, ctx: &Context) -> bool {
        let (Some(namespace), Some(uid)) = (self.namespace(), self.uid()) else {
            return false;
        };
        let secret_name = build::secret_name(self);
        self.status.is_none()
            && !ctx.secret_owners.controls(&namespace, &secret_name, &uid)
            && self.secret_write_waiting(ctx).is_none()
    }

    /// Issues a token that looks new without reading its children first (issue 22: two reads
    /// fewer per token). The plan is made as if neither exists; a first mint then *creates*
    /// both, so a TechnicalUser or Secret that does exist fails the create (409) and is never
    /// overwritten. `None` when the plan is anything but a first mint: the caller reads the
    /// children and decides again, as it does when the TechnicalUser's name is taken.
    async fn issue_unread(&self, ctx: &Context, pass: &Pass<'_>) -> Result<Option<Action>> {
        let (world, facts) = self.observe(ctx, pass).await?;
        match plan::decide(world) {
            Decision::Mint(minting) if minting.existing.is_none() => {
                let action = self.mint_and_settle(ctx, pass, &facts, *minting, None);
                action.await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Reconciles a token from its children as read.
    async fn reconcile_read(&self, ctx: &Context, pass: &Pass<'_>) -> Result<Action> {
        let (world, facts) = self.observe(ctx, pass).await?;
        let applied = match &world.user {
            UserSeen::Ours(user) => Some(user.clone()),
            _ => None,
        };
        match plan::decide(world) {
            Decision::Refuse(refusal) => self.refuse(ctx, pass, *refusal).await,
            Decision::Keep(keep) => {
                let plan::Keep {
                    scope,
                    expires_at,
                    token,
                    secret,
                    credential,
                } = *keep;
                let placed = Placed {
                    scope: &scope,
                    facts: &facts,
                };
                let issued = Issued {
                    token,
                    secret: Some(secret),
                    credential,
                    expires_at,
                };
                self.settle(ctx, pass, placed, issued, applied).await
            }
            Decision::Rotate(keep, cause) => {
                self.rotate_and_settle(ctx, pass, &facts, *keep, cause, applied)
                    .await
            }
            Decision::Mint(mint) => {
                self.mint_and_settle(ctx, pass, &facts, *mint, applied)
                    .await
            }
        }
    }

    /// Reads the token's world: its scope (from the scope watches, see `fetch_scope`),
    /// expiry, TechnicalUser and Secret, verifying the Secret's token against the
    /// TechnicalUser's credentials.
    async fn observe(&self, ctx: &Context, pass: &Pass<'_>) -> Result<(World, ScopeFacts)> {
        let namespace = self.namespace().ok_or(Error::MissingNamespace)?;
        let uid = self.uid().ok_or(Error::MissingUid)?;
        let fetched = fetch_scope(ctx, &self.spec).await?;
        let scope = resolve_scope(
            &namespace,
            &self.spec,
            |n| fetched.organization(n),
            |n| fetched.group(n),
        );
        let secret_name = build::secret_name(self);
        let (user, secret) = match pass.unread {
            true => (UserSeen::Missing, SecretSeen::Missing),
            false => self.read_children(ctx, pass, &secret_name, &uid).await?,
        };
        let status = self.status.clone().unwrap_or_default();
        let born = self.born(&status, &user, &secret, pass.now);
        let (facts, expiry) = self.scope_facts(&fetched, &status, born, pass.now);
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let world = World {
            secret_name,
            name: self.name_any(),
            previous: (status.phase, ready.map(|c| c.reason.clone())),
            created: expiry::created(self, pass.now),
            organization: managing_organization(&self.spec, &user, &fetched),
            scope,
            expiry: expiry.and_then(|e| plan::within_policy(&status, e)),
            user,
            secret,
            rotation: self.spec.rotation.as_ref().map(|r| plan::RotationAsk {
                trigger: r.trigger.clone(),
                renew_before: r.renew_before.clone(),
                acted_on: status.rotation_trigger.clone(),
                recovered: born.recovered,
            }),
            now: pass.now,
            issued: status.token_id,
        };
        Ok((world, facts))
    }

    /// The TechnicalUser and the Secret as read, the Secret's token verified against the
    /// TechnicalUser's credentials.
    async fn read_children(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        secret_name: &str,
        uid: &str,
    ) -> Result<(UserSeen, SecretSeen)> {
        let user = match pass
            .users
            .get_opt(&self.name_any())
            .await
            .at(Step::ReadTechnicalUser)?
        {
            None => UserSeen::Missing,
            Some(user) if !build::is_controlled_by(&user.metadata, uid) => UserSeen::Foreign,
            Some(user) => UserSeen::Ours(Box::new(user)),
        };
        let secret = match read_secret(&pass.secrets, &ctx.secret_owners, secret_name, uid).await? {
            None => SecretSeen::Missing,
            Some(secret) if !build::is_controlled_by(&secret.metadata, uid) => SecretSeen::Foreign,
            Some(secret) => self.inspect_secret(ctx, secret, &user).await,
        };
        Ok((user, secret))
    }

    /// What the Organization and Group say about the token (kill switch, policy, idleness),
    /// and the expiry their policy gives it.
    fn scope_facts(
        &self,
        fetched: &FetchedScope,
        status: &AccessTokenStatus,
        born: Born,
        now: Timestamp,
    ) -> (ScopeFacts, Result<PolicyExpiry, InvalidLifetime>) {
        let (organization, group) = (
            |n: &str| fetched.organization(n),
            |n: &str| fetched.group(n),
        );
        let policy = policy::of_scope(&self.spec, organization, group);
        let reactivated_at = self.reactivated_at(status, now);
        let expiry = policy::token_expiry_from(self, &policy, born.at);
        let facts = ScopeFacts {
            suspension: suspension(&self.spec, organization, group),
            shortened: expiry
                .as_ref()
                .ok()
                .and_then(|e| plan::shortened(&self.spec, status, *e)),
            policy,
            idle_at: plan::idle_at(
                policy.idle_timeout,
                status.last_used_at.as_ref().map(|t| t.0),
                born.at,
                reactivated_at,
            ),
            reactivated_at,
        };
        (facts, expiry)
    }

    /// When the token in the Secret was born: its last rotation (from status, or recovered
    /// from the TechnicalUser after a crash that lost the status write) or its creation.
    fn born(
        &self,
        status: &AccessTokenStatus,
        user: &UserSeen,
        secret: &SecretSeen,
        now: Timestamp,
    ) -> Born {
        let reported = status.rotated_at.as_ref().map(|t| t.0);
        let recovered = match (user, secret) {
            (UserSeen::Ours(user), SecretSeen::Holding { token, .. }) => {
                rotation::rotated_at(&user.spec.credentials, token.id().as_str())
            }
            _ => None,
        };
        let newer = recovered.filter(|r| reported.is_none_or(|at| *r > at));
        Born {
            at: newer
                .or(reported)
                .unwrap_or_else(|| expiry::created(self, now)),
            recovered: newer.is_some(),
        }
    }

    async fn inspect_secret(&self, ctx: &Context, secret: Secret, user: &UserSeen) -> SecretSeen {
        let Some(token) = held_token(&secret) else {
            return SecretSeen::Damaged(Box::new(secret));
        };
        let user = match user {
            UserSeen::Ours(user) => Some(&**user),
            _ => None,
        };
        let credential = self.credential_for(ctx, &secret, &token, user).await;
        SecretSeen::Holding {
            secret: Box::new(secret),
            token,
            credential,
        }
    }

    /// Applies a refusal: the TechnicalUser first (disabled, or without a lost token's
    /// credential: fail closed), then the Event and the status.
    async fn refuse(&self, ctx: &Context, pass: &Pass<'_>, refusal: Refusal) -> Result<Action> {
        let Refusal {
            user,
            outcome,
            announce,
            wait,
        } = refusal;
        if let Some(user) = user {
            apply_user(pass, &user, self).await?;
            warn!(
                reason = outcome.reason.as_str(),
                "token disabled or its lost credential removed"
            );
        }
        if announce {
            warn!(reason = outcome.reason.as_str(), message = %outcome.message, "token not usable");
            let note = outcome.message.clone();
            ctx.publish(self, EventType::Warning, outcome.reason, "Validate", note)
                .await;
        }
        self.write_status(ctx, &outcome, pass.now).await?;
        Ok(match wait {
            Wait::ForChange => Action::await_change(),
            Wait::Recheck => Action::requeue(plan::RECHECK),
        })
    }

    /// Mints a token unless a Secret write backoff is still running, then settles it.
    async fn mint_and_settle(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        facts: &ScopeFacts,
        minting: plan::Mint,
        applied: Option<Box<TechnicalUser>>,
    ) -> Result<Action> {
        if let Some(waiting) = self.secret_write_waiting(ctx) {
            return self.keep_waiting(ctx, pass, waiting).await;
        }
        let placed = Placed {
            scope: &minting.scope,
            facts,
        };
        // No token the Secret holds verified (or there is none): nothing to keep.
        match self
            .mint(ctx, pass, placed, minting.expires_at, minting.existing)
            .await?
        {
            Minted::Written { issued, staged } => {
                let secret_name = build::secret_name(self);
                self.announce_mint(ctx, &issued.token, &secret_name, minting.why)
                    .await;
                // The pre-mint TechnicalUser is not what is applied now, and its previous
                // credentials went with the mint (the Secret lost its token). What the mint
                // staged is: settling writes the TechnicalUser again only if it differs.
                drop(applied);
                self.settle(ctx, pass, placed, *issued, Some(staged)).await
            }
            Minted::SecretWriteFailed(error) => {
                let failed = Unwritten {
                    phase: Phase::Failed,
                    token_id: self.status.as_ref().and_then(|s| s.token_id.clone()),
                    expires_at: None,
                };
                self.secret_write_failed(ctx, pass, &error, failed).await
            }
        }
    }

    /// With the token in its Secret: applies the TechnicalUser (role, disabled, expiry, the
    /// one credential and the previous ones still in their overlap), announces a change of
    /// state, keeps the Secret's descriptive keys current, and reports the status.
    async fn settle(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        placed: Placed<'_>,
        issued: Issued,
        applied: Option<Box<TechnicalUser>>,
    ) -> Result<Action> {
        let (now, token_id) = (pass.now, issued.token.id().to_string());
        let hold = self.hold(placed.facts, now);
        let previous_phase = self.status.as_ref().and_then(|s| s.phase);
        let mut settled = plan::settle(
            previous_phase,
            hold.as_ref(),
            &token_id,
            issued.expires_at,
            now,
        );
        settled.outcome.organization = Some(placed.scope.scope.organization.clone());
        let applied_credentials = applied.as_ref().map(|u| u.spec.credentials.as_slice());
        let mut previous =
            rotation::previous(applied_credentials.unwrap_or_default(), &token_id, now);
        let rotated_at = self.rotated_at(&previous, &token_id);
        let restarts = self
            .restart_targets(ctx, &token_id, rotated_at, &previous)
            .await?;
        if restarts.as_ref().is_some_and(|r| r.drop_previous) {
            previous.clear(); // every target runs the new token: the previous one goes now
        }
        let held = hold.is_some();
        if let (Some(secret), Some(uid)) = (&issued.secret, self.uid()) {
            // The Secret as read (verified) or just written holds this credential's token.
            ctx.verified.remember(&uid, secret, &issued.credential.id);
        }
        self.apply_settled_user(pass, placed.scope, held, &issued, &previous, applied)
            .await?;
        crash_point::reached("user-applied");
        self.announce_shortened(ctx, placed.facts).await;
        // The token's state changed with the TechnicalUser: say so even if the Secret's
        // update below fails (the status written then already carries the new phase).
        if let Some((reason, note)) = settled.transition.clone() {
            info!(%token_id, reason = reason.as_str(), "token state changed");
            ctx.publish(self, EventType::Normal, reason, "Update", note)
                .await;
        }
        if let Some(secret) = &issued.secret
            && let Some(action) = self
                .refresh_secret(ctx, pass, placed.scope, &issued.token, secret, &settled)
                .await?
        {
            return Ok(action);
        }
        if let Some(uid) = self.uid() {
            ctx.secret_writes.lock().expect("lock").clear(&uid);
        }
        let report = Report {
            token_id: &token_id,
            expires_at: issued.expires_at,
            settled,
            held,
            previous,
            rotated_at,
            restarts,
        };
        self.report_settled(ctx, pass, placed, report).await
    }

    /// Applies the TechnicalUser of a token in place, if it differs from the one applied:
    /// the previous credentials then the current one.
    async fn apply_settled_user(
        &self,
        pass: &Pass<'_>,
        scope: &ResolvedScope,
        disabled: bool,
        issued: &Issued,
        previous: &[Credential],
        applied: Option<Box<TechnicalUser>>,
    ) -> Result<()> {
        let mut credentials = previous.to_vec();
        credentials.push(issued.credential.clone());
        let desired = build::technical_user(self, scope, disabled, issued.expires_at, credentials);
        if plan::user_changed(applied.as_deref(), &desired) {
            apply_user(pass, &desired, self).await?;
        }
        Ok(())
    }

    /// Reports a settled token: its status (phase, ExpiringSoon, rotation, restart targets),
    /// then the Events that status records as sent, and when to look again.
    async fn report_settled(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        placed: Placed<'_>,
        report: Report<'_>,
    ) -> Result<Action> {
        let (now, facts, token_id) = (pass.now, placed.facts, report.token_id);
        let warned = self
            .status
            .as_ref()
            .and_then(|s| s.expiry_warned_token_id.as_deref());
        let warning = plan::expiry_warning(
            token_id,
            report.expires_at,
            facts.policy.expiry_warning,
            warned,
            now,
        );
        let rotated = self.rotation_status(report.rotated_at, &report.previous, report.expires_at);
        let generation = self.meta().generation;
        self.write_status_with(ctx, &report.settled.outcome, now, |status| {
            expiring_soon(status, &warning, token_id, generation);
            rotated.apply(status);
            status.scope_uid = placed.scope.scope.uid.clone();
            status.reactivated_for = self.spec.reactivate.clone();
            status.reactivated_at = facts.reactivated_at.map(Time);
            if let Some(verdict) = &report.restarts {
                targets_rolled_out(status, verdict, token_id, generation);
            }
        })
        .await?;
        self.announce_expiring_soon(ctx, &warning).await;
        let wake_ups = plan::WakeUps {
            settled: report.settled.requeue,
            poll: report
                .restarts
                .as_ref()
                .filter(|r| r.poll)
                .map(|_| RESTART_POLL),
            idle_at: facts.idle_at,
            held: report.held,
            expiring_in: warning.turns_true_in,
            renewal: rotated.renewal_time,
            overlap_end: rotation::next_overlap_end(&report.previous),
        };
        if let Some(verdict) = report.restarts {
            self.announce_restarts(ctx, verdict).await;
        }
        Ok(Action::requeue(plan::requeue(&wake_ups, now)))
    }

    /// The rotation fields of the status, for the credentials applied (`previous` and then the
    /// current one, `token_id`).
    fn rotation_status(
        &self,
        rotated_at: Option<Timestamp>,
        previous: &[Credential],
        expires_at: Timestamp,
    ) -> RotationStatus {
        let spec = self.spec.rotation.as_ref();
        RotationStatus {
            rotated_at,
            previous: previous.first().map(|c| (c.id.clone(), c.not_after.0)),
            renewal_time: spec
                .and_then(|r| rotation::renewal_time(expires_at, r.renew_before.as_deref())),
            trigger: spec.and_then(|r| r.trigger.clone()),
        }
    }

    /// When the current token (`token_id`) was minted by a rotation: recorded by its previous
    /// credentials, else as reported.
    fn rotated_at(&self, previous: &[Credential], token_id: &str) -> Option<Timestamp> {
        let reported = self
            .status
            .as_ref()
            .and_then(|s| s.rotated_at.as_ref())
            .map(|t| t.0);
        rotation::rotated_at(previous, token_id).max(reported)
    }

    /// After a rotation: restarts the restart targets once per new token (stamped with the
    /// rotation time, so doing it again after a crash starts no second rollout) and judges
    /// their rollouts. `None` without targets or rotation, or once the verdict is final.
    async fn restart_targets(
        &self,
        ctx: &Context,
        token_id: &str,
        rotated_at: Option<Timestamp>,
        previous: &[Credential],
    ) -> Result<Option<restart::Verdict>> {
        let targets = self
            .spec
            .rotation
            .as_ref()
            .map(|r| r.restart_targets.as_slice())
            .unwrap_or_default();
        let Some(rotated_at) = rotated_at.filter(|_| !targets.is_empty()) else {
            return Ok(None);
        };
        let namespace = self.namespace().ok_or(Error::MissingNamespace)?;
        let status = self.status.clone().unwrap_or_default();
        let prior = status
            .conditions
            .iter()
            .find(|c| c.type_ == crate::api::ConditionType::TargetsRolledOut.as_str())
            .map(|c| c.reason.as_str());
        let restarted_for = status.restarted_for.as_deref();
        match restart::next(restarted_for, token_id, prior, previous.is_empty()) {
            restart::Next::Done => return Ok(None),
            restart::Next::Judge => {}
            restart::Next::Restart => {
                restart::restart_all(&ctx.client, &namespace, targets, rotated_at).await?;
            }
        }
        let mut results = Vec::with_capacity(targets.len());
        for target in targets {
            let rollout = restart::rollout(&ctx.client, &namespace, target).await?;
            results.push((target.clone(), rollout));
        }
        Ok(Some(restart::judge(&results, previous.is_empty())))
    }

    /// An Event when the restart targets' verdict changes: Normal once all rolled out,
    /// Warning for a missing or stuck target.
    async fn announce_restarts(&self, ctx: &Context, verdict: restart::Verdict) {
        let prior = self.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == crate::api::ConditionType::TargetsRolledOut.as_str())
                .map(|c| c.reason.clone())
        });
        if prior.as_deref() == Some(verdict.reason.as_str())
            || verdict.reason == Reason::RolloutInProgress
        {
            return;
        }
        let type_ = if verdict.done {
            EventType::Normal
        } else {
            warn!(reason = verdict.reason.as_str(), message = %verdict.message, "restart targets");
            EventType::Warning
        };
        ctx.publish(self, type_, verdict.reason, "Restart", verdict.message)
            .await;
    }

    /// Rotates the token in place: stages the new credential beside the current one, which
    /// is retired (bounded by the overlap) in the same TechnicalUser write; then writes the new
    /// token into the Secret at the resourceVersion read; then settles on the new token. A
    /// crash after the first step leaves the Secret's token current and drops the staged
    /// credential (nobody holds it); after the second, the TechnicalUser's retired credential
    /// says a rotation happened, and when.
    async fn rotate_and_settle(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        facts: &ScopeFacts,
        keep: plan::Keep,
        cause: rotation::Cause,
        applied: Option<Box<TechnicalUser>>,
    ) -> Result<Action> {
        let (now, placed) = (
            pass.now,
            Placed {
                scope: &keep.scope,
                facts,
            },
        );
        let expires_at = policy::token_expiry_from(self, &facts.policy, now)
            .map(|e| e.expires_at)
            .unwrap_or(keep.credential.not_after.0);
        let value = Token::try_generate().map_err(|_| Error::Randomness)?;
        let new = credential(&value, ctx.hasher.hash(&value).await?, expires_at);
        let spec = self.spec.rotation.as_ref();
        let overlap = rotation::overlap(spec.and_then(|r| r.overlap.as_deref()));
        let existing = applied.map(|u| u.spec.credentials).unwrap_or_default();
        let credentials = rotation::staged(&existing, &keep.credential, new.clone(), overlap, now);
        let until = credentials
            .iter()
            .find(|c| c.id == keep.credential.id)
            .map_or_else(|| "now".to_string(), |c| c.not_after.0.to_string());
        let disabled = self.hold(facts, now).is_some();
        let staged = build::technical_user(self, placed.scope, disabled, expires_at, credentials);
        apply_user(pass, &staged, self).await?;
        crash_point::reached("rotation-staged");

        let data = build::secret_data(
            self,
            placed.scope,
            &value,
            expires_at,
            ctx.kubeconfig.as_ref(),
        );
        let updated = build::updated_secret(self, &keep.secret, data).unwrap_or(keep.secret);
        let name = build::secret_name(self);
        let writing = pass.own_writes.writing::<Secret>(self, &name);
        let written = pass
            .secrets
            .replace(&name, &PostParams::default(), &updated)
            .await
            .map_err(redacted)
            .at(Step::WriteSecret)?;
        writing.wrote(&written.metadata);
        crash_point::reached("rotation-secret-written");
        self.announce_rotation(ctx, &keep.token, &value, cause, &until)
            .await;
        let issued = Issued {
            token: value,
            secret: Some(written),
            credential: new,
            expires_at,
        };
        self.settle(ctx, pass, placed, issued, Some(Box::new(staged)))
            .await
    }

    /// The TokenRotated Event: which token replaces which, why, and until when the previous
    /// one works.
    async fn announce_rotation(
        &self,
        ctx: &Context,
        old: &Token,
        new: &Token,
        cause: rotation::Cause,
        until: &str,
    ) {
        let (old, new, why) = (old.id(), new.id(), cause.describe());
        info!(token_id = %new, previous = %old, cause = why, "token rotated");
        let note = format!(
            "Rotated: token {new} replaces {old} because {why}; the previous token keeps working until {until}"
        );
        let reason = Reason::TokenRotated;
        ctx.publish(self, EventType::Normal, reason, "Rotate", note)
            .await;
    }

    /// The one TokenExpiringSoon Warning Event of an issued token (after the status recording
    /// it was written, so a retry does not repeat it).
    async fn announce_expiring_soon(&self, ctx: &Context, warning: &plan::ExpiryWarning) {
        if warning.announce {
            info!(message = %warning.message, "token expiring soon");
            let note = warning.message.clone();
            let reason = Reason::TokenExpiringSoon;
            ctx.publish(self, EventType::Warning, reason, "Expiry", note)
                .await;
        }
    }

    /// A Warning Event when a tightened scope policy moved the token's expiry earlier (once:
    /// the status written next reports the new expiry).
    async fn announce_shortened(&self, ctx: &Context, facts: &ScopeFacts) {
        let Some((from, to)) = facts.shortened else {
            return;
        };
        warn!(%from, %to, "expiry moved earlier by the scope's tokenPolicy.maxLifetime");
        let note = format!(
            "The scope's tokenPolicy (maxLifetime or defaultLifetime) moved this token's expiry from {from} to {to}"
        );
        let reason = Reason::TokenExpiryShortened;
        ctx.publish(self, EventType::Warning, reason, "Policy", note)
            .await;
    }

    /// What holds this token disabled at `now`: its revoke, its scope's kill switch, idleness.
    fn hold(&self, facts: &ScopeFacts, now: Timestamp) -> Option<plan::Hold> {
        let idle = plan::idle(facts.idle_at, now);
        plan::hold(self.spec.revoked, facts.suspension.as_ref(), idle.as_ref())
    }

    /// When `spec.reactivate` last changed: `now` if the value is new, else as recorded.
    fn reactivated_at(&self, status: &AccessTokenStatus, now: Timestamp) -> Option<Timestamp> {
        let value = self.spec.reactivate.as_ref()?;
        if status.reactivated_for.as_ref() == Some(value) {
            status.reactivated_at.as_ref().map(|t| t.0)
        } else {
            Some(now)
        }
    }

    /// Keeps the Secret's descriptive keys (role, expiry, ...) current; the token never
    /// changes here. After the TechnicalUser, so that a Secret that cannot be written never
    /// holds up a revocation or a disable. `Some` action if the reconcile ends here.
    async fn refresh_secret(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        scope: &ResolvedScope,
        token: &Token,
        secret: &Secret,
        settled: &plan::Settled,
    ) -> Result<Option<Action>> {
        let expires_at = settled.outcome.expires_at.unwrap_or(pass.now);
        let data = build::secret_data(self, scope, token, expires_at, ctx.kubeconfig.as_ref());
        let Some(updated) = build::updated_secret(self, secret, data) else {
            return Ok(None);
        };
        if let Some(waiting) = self.secret_write_waiting(ctx) {
            return self.keep_waiting(ctx, pass, waiting).await.map(Some);
        }
        let name = build::secret_name(self);
        let writing = pass.own_writes.writing::<Secret>(self, &name);
        match pass
            .secrets
            .replace(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(written) => {
                writing.wrote(&written.metadata);
                if let Some(uid) = self.uid() {
                    // The token it holds is the one just verified: no argon2 next time.
                    ctx.verified.remember(&uid, &written, token.id().as_str());
                }
                Ok(None)
            }
            Err(error) if is_conflict(&error) => Err(redacted(error)).at(Step::WriteSecret),
            Err(error) => {
                let failed = Unwritten {
                    phase: settled.outcome.phase,
                    token_id: Some(token.id().to_string()),
                    expires_at: Some(expires_at),
                };
                self.secret_write_failed(ctx, pass, &error, failed)
                    .await
                    .map(Some)
            }
        }
    }

    /// The credential matching the Secret's token, or `None` if the token is not one this
    /// operator issued (every minted token is recorded in the TechnicalUser before it is
    /// written to the Secret, so a token without a credential was put there by someone else).
    /// argon2 runs only if this very Secret version was not verified before (see
    /// `verified_secret`).
    async fn credential_for(
        &self,
        ctx: &Context,
        secret: &Secret,
        value: &Token,
        user: Option<&TechnicalUser>,
    ) -> Option<Credential> {
        let user = user?;
        // A retired credential (a previous token) is current again only while the status
        // still reports it: a rotation that crashed before its Secret write. Otherwise a Secret
        // put back to a previous token counts as tampered, and gets a fresh token.
        let reported = self.status.as_ref().and_then(|s| s.token_id.as_deref());
        let existing = user.spec.credentials.iter().find(|c| {
            c.id == value.id().as_str() && (c.retired_at.is_none() || reported == Some(&c.id))
        })?;
        let uid = self.uid().unwrap_or_default();
        if ctx.verified.holds(&uid, secret, &existing.id) {
            return Some(existing.clone());
        }
        let matches = ctx.hasher.verify(value, &existing.hash).await;
        tracing::debug!(token_id = %value.id(), matches, "Secret's token checked with argon2id");
        matches.then(|| existing.clone())
    }

    /// Mints a token: records its credential (alone: a mint only happens when the Secret holds
    /// no token that verifies) in the TechnicalUser first, then writes it into the Secret,
    /// created if `existing` is `None`, else replaced at the resourceVersion that was read (a concurrent change fails,
    /// and is retried). A crash or a failed Secret write between the two steps leaves an
    /// unused credential that the next attempt replaces.
    async fn mint(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        placed: Placed<'_>,
        expires_at: Timestamp,
        existing: Option<Secret>,
    ) -> Result<Minted> {
        let (scope, disabled) = (placed.scope, self.hold(placed.facts, pass.now).is_some());
        let value = Token::try_generate().map_err(|_| Error::Randomness)?;
        let hash = ctx.hasher.hash(&value).await?;
        let credential = credential(&value, hash, expires_at);
        // Only the new credential: ones staged by earlier attempts whose Secret write failed
        // belong to tokens nobody holds, so retries never accumulate.
        let staged =
            build::technical_user(self, scope, disabled, expires_at, vec![credential.clone()]);
        // A token that looks new gets its TechnicalUser created (its uid kept, to withdraw it
        // should the Secret's name turn out to be taken); any other, applied.
        let created = match pass.unread {
            true => Some(create_user(pass, &staged, self).await?),
            false => {
                apply_user(pass, &staged, self).await?;
                None
            }
        };
        crash_point::reached("credential-staged");

        let data = build::secret_data(self, scope, &value, expires_at, ctx.kubeconfig.as_ref());
        let writing = (pass.own_writes).writing::<Secret>(self, &build::secret_name(self));
        let written = match self.write_secret(pass, existing, data).await {
            Ok(written) => {
                writing.wrote(&written.metadata);
                written
            }
            // A race (the name was just taken, or the Secret changed): look again soon.
            Err(error) if is_conflict(&error) => {
                if let Some(uid) = created {
                    // Its credential is of a token nobody holds: it goes, so the next pass
                    // reads what a refusal finds (no token issued), not a user of ours.
                    withdraw_user(pass, self, &uid).await;
                }
                return Err(redacted(error)).at(Step::WriteSecret);
            }
            Err(error) => return Ok(Minted::SecretWriteFailed(error)),
        };
        crash_point::reached("secret-written");
        Ok(Minted::Written {
            issued: Box::new(Issued {
                token: value,
                secret: Some(written),
                credential,
                expires_at,
            }),
            staged: Box::new(staged),
        })
    }

    /// Writes a minted token's Secret: created if `existing` is `None`, else replaced at the
    /// resourceVersion that was read, its keys replaced and keys others added kept.
    async fn write_secret(
        &self,
        pass: &Pass<'_>,
        existing: Option<Secret>,
        data: std::collections::BTreeMap<String, k8s_openapi::ByteString>,
    ) -> kube::Result<Secret> {
        match existing {
            None => {
                let secret = build::new_secret(self, data);
                pass.secrets.create(&PostParams::default(), &secret).await
            }
            Some(secret) => {
                let secret = build::updated_secret(self, &secret, data).unwrap_or(secret);
                let name = build::secret_name(self);
                pass.secrets
                    .replace(&name, &PostParams::default(), &secret)
                    .await
            }
        }
    }

    /// Logs and announces a token that is now in its Secret: first issue (`why` is `None`)
    /// or a reissue, which the owner must hear about since the previous token stopped working.
    async fn announce_mint(
        &self,
        ctx: &Context,
        value: &Token,
        secret_name: &str,
        why: Option<&str>,
    ) {
        let Some(why) = why else {
            info!(token_id = %value.id(), "token issued");
            let note = format!("Issued token {} into Secret {secret_name:?}", value.id());
            ctx.publish(self, EventType::Normal, Reason::TokenIssued, "Issue", note)
                .await;
            return;
        };
        warn!(token_id = %value.id(), why, "token reissued");
        let note = format!(
            "Issued a fresh token {} because {why}; the previous token no longer works",
            value.id()
        );
        ctx.publish(
            self,
            EventType::Warning,
            Reason::TokenReissued,
            "Reissue",
            note,
        )
        .await;
    }

    /// How long this generation must still wait before its Secret is written again, and the
    /// status to keep reporting meanwhile, if an earlier write failed.
    fn secret_write_waiting(&self, ctx: &Context) -> Option<Waiting> {
        let uid = self.uid()?;
        let writes = ctx.secret_writes.lock().expect("lock");
        writes
            .waiting(&uid, self.meta().generation, Instant::now())
            .map(|(left, retry)| Waiting {
                left,
                outcome: retry.outcome.clone(),
            })
    }

    /// Waits out a Secret write backoff: writes nothing new (the status is already reported)
    /// and looks again when the wait is over. Watch events from the failed attempt's own
    /// writes land here, so they cannot turn the backoff into a hot loop.
    async fn keep_waiting(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        Waiting { left, outcome }: Waiting,
    ) -> Result<Action> {
        if let Some(outcome) = outcome {
            self.write_status(ctx, &outcome, pass.now).await?;
        }
        tracing::debug!(wait = ?left, "Secret write backing off");
        Ok(Action::requeue(left))
    }

    /// A Secret write failed for another reason than a race: an admission policy or webhook,
    /// a quota, an invalid field. Reports `Stalled` with `SecretWriteFailed` and a Warning
    /// Event, and backs off exponentially for this generation. Only the status code and
    /// reason are reported, never the API server's message (it could quote the request,
    /// which carries the token).
    async fn secret_write_failed(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        error: &kube::Error,
        Unwritten {
            phase,
            token_id,
            expires_at,
        }: Unwritten,
    ) -> Result<Action> {
        let uid = self.uid().ok_or(Error::MissingUid)?;
        let (attempts, delay) = ctx.secret_writes.lock().expect("lock").failed(
            &uid,
            self.meta().generation,
            Instant::now(),
        );
        let next = jiff::SignedDuration::try_from(delay)
            .ok()
            .and_then(|d| pass.now.checked_add(d).ok())
            .and_then(|t| t.round(jiff::Unit::Second).ok())
            .map(|t| t.to_string())
            .unwrap_or_else(|| format!("in {delay:?}"));
        let secret_name = build::secret_name(self);
        let cause = api_failure(error);
        warn!(%cause, attempts, retry_in = ?delay, "Secret write failed");
        let message = format!(
            "Secret {secret_name:?} could not be written ({cause}); {attempts} attempt(s) failed, next at {next} or as soon as the AccessToken's spec changes"
        );
        ctx.publish(
            self,
            EventType::Warning,
            Reason::SecretWriteFailed,
            "WriteSecret",
            message.clone(),
        )
        .await;
        let outcome = Outcome {
            phase,
            ready: false,
            reason: Reason::SecretWriteFailed,
            message,
            stalled: true,
            token_id,
            expires_at,
            organization: None,
        };
        ctx.secret_writes
            .lock()
            .expect("lock")
            .set_outcome(&uid, outcome.clone());
        self.write_status(ctx, &outcome, pass.now).await?;
        Ok(Action::requeue(delay))
    }

    async fn write_status(&self, ctx: &Context, outcome: &Outcome, now: Timestamp) -> Result<()> {
        self.write_status_with(ctx, outcome, now, |_| {}).await
    }

    /// Writes the status for `outcome`, with what `extend` adds (conditions and fields of
    /// the lifecycle steps, which other paths carry over unchanged).
    async fn write_status_with(
        &self,
        ctx: &Context,
        outcome: &Outcome,
        now: Timestamp,
        extend: impl FnOnce(&mut AccessTokenStatus),
    ) -> Result<()> {
        let mut status = build::status(self, outcome, now);
        extend(&mut status);
        let unchanged = self.status.as_ref().is_some_and(|current| {
            let ours = AccessTokenStatus {
                last_used_at: None,
                ..current.clone()
            };
            ours == status
        });
        if unchanged {
            return Ok(());
        }
        let api: Api<AccessToken> =
            Api::namespaced(ctx.client.clone(), &self.namespace().unwrap_or_default());
        // A token's first status only over the version it was decided on: a reconcile that read
        // it from a watch that lags (a child's event can start one before the token's own
        // events arrive) sees no status yet, and must not write over the status, or repeat
        // the Events, of the reconcile that issued it. It gets a conflict, a quiet retry.
        let first = self.status.is_none().then(|| self.resource_version());
        super::apply_status_over(&api, &self.name_any(), &status, first.flatten().as_deref()).await
    }

    /// A token of an earlier build being deleted: only its finalizer goes. Once the token is
    /// gone, the sweep deletes its children and announces it, as for any other token.
    fn cleanup(&self) -> Action {
        info!(namespace = self.namespace(), name = %self.name_any(), "finalizer of an earlier build removed");
        Action::await_change()
    }
}

/// How often restart targets' rollouts are looked at while they run (within the overlap).
const RESTART_POLL: Duration = Duration::from_secs(2);

/// Sets the TargetsRolledOut condition and records the token the targets were restarted for.
fn targets_rolled_out(
    status: &mut AccessTokenStatus,
    verdict: &restart::Verdict,
    token_id: &str,
    generation: Option<i64>,
) {
    let judged = (verdict.done, verdict.reason, verdict.message.as_str());
    let type_ = crate::api::ConditionType::TargetsRolledOut;
    conditions::put_condition(&mut status.conditions, type_, judged, generation);
    status.restarted_for = Some(token_id.to_string());
}

/// The rotation fields of an AccessToken's status.
struct RotationStatus {
    rotated_at: Option<Timestamp>,
    /// The previous token's id and the end of its overlap, while it works.
    previous: Option<(String, Timestamp)>,
    renewal_time: Option<Timestamp>,
    trigger: Option<String>,
}

impl RotationStatus {
    fn apply(&self, status: &mut AccessTokenStatus) {
        status.rotated_at = self.rotated_at.map(Time);
        status.previous_token_id = self.previous.as_ref().map(|(id, _)| id.clone());
        status.previous_valid_until = self.previous.as_ref().map(|(_, until)| Time(*until));
        status.renewal_time = self.renewal_time.map(Time);
        status.rotation_trigger = self.trigger.clone();
    }
}

/// Sets the ExpiringSoon condition, and records the token warned about once the Event is due.
fn expiring_soon(
    status: &mut AccessTokenStatus,
    warning: &plan::ExpiryWarning,
    token_id: &str,
    generation: Option<i64>,
) {
    let judged = (warning.soon, warning.reason, warning.message.as_str());
    let type_ = crate::api::ConditionType::ExpiringSoon;
    conditions::put_condition(&mut status.conditions, type_, judged, generation);
    if warning.announce {
        status.expiry_warned_token_id = Some(token_id.to_string());
    }
}

/// A write that lost a race (409): retried soon with fresh state, not backed off.
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// What went wrong with an API call, without the server's message text.
/// A Secret write's error without the API server's message and details, which could quote
/// the request, and so the token, back into a log line.
fn redacted(error: kube::Error) -> kube::Error {
    match error {
        kube::Error::Api(mut status) => {
            status.message = String::new();
            status.details = None;
            kube::Error::Api(status)
        }
        other => other,
    }
}

fn api_failure(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("HTTP {} {}", status.code, status.reason),
        _ => "the Kubernetes API could not be reached".to_string(),
    }
}

fn credential(value: &Token, hash: String, expires_at: Timestamp) -> Credential {
    Credential {
        id: value.id().to_string(),
        hash,
        not_after: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(expires_at),
        retired_at: None,
    }
}

/// Creates the TechnicalUser of a token whose children were not read; its uid. Under the
/// field manager later applies use: they take over every field it sets (they set the same
/// ones, and `credentials` is an atomic list, so an apply replaces it whole).
async fn create_user(pass: &Pass<'_>, user: &TechnicalUser, token: &AccessToken) -> Result<String> {
    let name = token.name_any();
    let writing = pass.own_writes.writing::<TechnicalUser>(token, &name);
    let params = PostParams {
        field_manager: Some(OPERATOR_MANAGER.to_string()),
        ..PostParams::default()
    };
    let created = (pass.users.create(&params, user).await).at(Step::WriteTechnicalUser)?;
    writing.wrote(&created.metadata);
    created.uid().ok_or(Error::MissingUid)
}

/// Deletes the TechnicalUser `create_user` just created (its `uid`), best effort: if it
/// stays, the next pass reads it as ours and replaces its credential.
async fn withdraw_user(pass: &Pass<'_>, token: &AccessToken, uid: &str) {
    let params = super::sweep::only_this(Some(uid.to_string()));
    if let Err(error) = pass.users.delete(&token.name_any(), &params).await {
        tracing::debug!(%error, "TechnicalUser not withdrawn");
    }
}

/// Whether `error` is a TechnicalUser create that found the name taken (`create_user`).
fn name_taken(error: &Error) -> bool {
    matches!(
        error,
        Error::Api { step: Step::WriteTechnicalUser, source: kube::Error::Api(status) }
            if status.code == 409 && status.reason == "AlreadyExists"
    )
}

async fn apply_user(pass: &Pass<'_>, user: &TechnicalUser, token: &AccessToken) -> Result<()> {
    let mut patch = serde_json::to_value(user)?;
    // Server-side apply sends only the fields we own; status and others' fields are untouched.
    if let Some(meta) = patch.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.retain(|k, _| {
            matches!(
                k.as_str(),
                "name" | "namespace" | "labels" | "ownerReferences"
            )
        });
    }
    let name = token.name_any();
    let writing = pass.own_writes.writing::<TechnicalUser>(token, &name);
    let applied = pass
        .users
        .patch(
            &name,
            &PatchParams::apply(OPERATOR_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .at(Step::WriteTechnicalUser)?;
    writing.wrote(&applied.metadata);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_technical_user_create_that_found_the_name_taken_sends_a_pass_to_read() {
        let api_error = |code: u16, reason: &str| {
            let status: kube::core::Status = serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": code, "reason": reason, "message": "",
            }))
            .unwrap();
            kube::Error::Api(status.into())
        };
        let at = |step, code, reason| Error::Api {
            step,
            source: api_error(code, reason),
        };
        assert!(name_taken(&at(
            Step::WriteTechnicalUser,
            409,
            "AlreadyExists"
        )));
        // A conflict on an existing object, or the Secret's name, or a refusal: not this.
        assert!(!name_taken(&at(Step::WriteTechnicalUser, 409, "Conflict")));
        assert!(!name_taken(&at(Step::WriteSecret, 409, "AlreadyExists")));
        assert!(!name_taken(&at(Step::WriteTechnicalUser, 403, "Forbidden")));
    }

    #[test]
    fn a_redacted_secret_write_error_keeps_code_and_reason_but_not_the_message() {
        let token = Token::generate();
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "code": 409,
            "reason": "Conflict",
            "message": format!("a webhook quoting the request: {}", token.expose_secret()),
        }))
        .unwrap();
        let error = redacted(kube::Error::Api(status.into()));
        assert!(is_conflict(&error), "still a conflict: {error:?}");
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(token.expose_secret()), "{text}");
        }
    }
}
