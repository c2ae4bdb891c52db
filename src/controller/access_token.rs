//! The AccessToken reconciler: validate scope → Secret (the token, minted once) →
//! TechnicalUser (its hash, role, disabled, expiry) → status and Events. Cleanup on delete.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Secret,
    jiff::{self, Timestamp},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
        reflector::ObjectRef,
    },
};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{
    Context, backoff,
    build::{self, FINALIZER, MANAGER, Outcome, keys},
    crash_point,
    validate::{ResolvedScope, resolve_scope},
};
use crate::{
    Error, Result,
    api::{
        AccessToken, AccessTokenSpec, AccessTokenStatus, Credential, Group, Organization, Phase,
        Reason, TechnicalUser,
    },
    expiry,
    token::Token,
};

/// How often an object waiting on something the operator cannot watch is looked at again.
const RECHECK: Duration = Duration::from_secs(60);
/// Longest wait between reconciles of a healthy token (expiry is also requeued exactly).
const RESYNC: Duration = Duration::from_secs(3600);

/// Entry point from the controller: routes to reconcile or cleanup through the finalizer.
pub async fn reconcile(token: Arc<AccessToken>, ctx: Arc<Context>) -> Result<Action> {
    tracing::debug!(name = %token.name_any(), version = token.resource_version(), "reconciling");
    let namespace = token.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<AccessToken> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, token.clone(), |event| async {
        match event {
            Finalizer::Apply(token) => token.reconcile(&ctx).await,
            Finalizer::Cleanup(token) => token.cleanup(&ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.failures
        .lock()
        .expect("lock")
        .remove(&ObjectRef::from_obj(&*token));
    Ok(action)
}

/// Transient failures back off exponentially per object and become Warning Events.
pub fn error_policy(token: Arc<AccessToken>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_write_conflict() {
        // Our cached copy was stale; the watch brings the fresh one in a moment.
        tracing::debug!(name = %token.name_any(), %error, "write conflict; retrying");
        return Action::requeue(Duration::from_millis(500));
    }
    let failures = {
        let mut failures = ctx.failures.lock().expect("lock");
        let count = failures.entry(ObjectRef::from_obj(&*token)).or_insert(0);
        *count += 1;
        *count
    };
    warn!(name = %token.name_any(), namespace = token.namespace(), %error, failures, "reconcile failed");
    let note = error.event_note();
    tokio::spawn(async move {
        ctx.publish(
            &*token,
            EventType::Warning,
            Reason::ReconcileError,
            "Reconcile",
            note,
        )
        .await;
    });
    Action::requeue(backoff(failures - 1))
}

/// The Organization and Group a token names, read from the API server (not a watch cache):
/// a reconcile triggered by a scope change must see that change, and a watch cache fed by
/// another watch may not have it yet.
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
    let organizations: Api<Organization> = Api::all(ctx.client.clone());
    let group = match &spec.group {
        Some(name) => Api::<Group>::all(ctx.client.clone()).get_opt(name).await?,
        None => None,
    };
    // For a group token, the organization that matters is the group's.
    let org_name = spec
        .organization
        .as_ref()
        .or(group.as_ref().map(|g| &g.spec.organization));
    let organization = match org_name {
        Some(name) => organizations.get_opt(name).await?,
        None => None,
    };
    Ok(FetchedScope {
        organization: organization.map(Arc::new),
        group: group.map(Arc::new),
    })
}

/// The children of one AccessToken and what they are built from.
struct Children<'a> {
    users: &'a Api<TechnicalUser>,
    secrets: &'a Api<Secret>,
    resolved: &'a ResolvedScope,
    credentials: &'a [Credential],
    expires_at: Timestamp,
}

/// What to do about the Secret's token.
enum Plan {
    /// The Secret holds the issued token, which verified against this credential.
    Keep(Token, Secret, Credential),
    /// Mint a token into the Secret (`existing`, or a new one); `why` a reissue, if it is one.
    Mint {
        existing: Option<Secret>,
        why: Option<&'static str>,
    },
}

/// What a mint attempt came to.
enum Minted {
    /// The token is in the Secret, its credential in the TechnicalUser.
    Written(Token, Box<Secret>, Credential),
    /// Writing the Secret failed (not a race); the staged credential is replaced next time.
    SecretWriteFailed(kube::Error),
}

/// The state of the Secret that should hold the token.
enum SecretState {
    /// No Secret by that name.
    Missing,
    /// A Secret by that name that this AccessToken does not control: never touched.
    Foreign,
    /// Our Secret, holding a well-formed token whose id matches its `token-id` key.
    Holding(Secret, Token),
    /// Our Secret, but its token is missing or unreadable.
    Damaged(Secret),
}

fn inspect_secret(secret: Option<Secret>, uid: &str) -> SecretState {
    let Some(secret) = secret else {
        return SecretState::Missing;
    };
    if !build::is_controlled_by(&secret.metadata, uid) {
        return SecretState::Foreign;
    }
    let data = secret.data.as_ref();
    let text = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(|v| std::str::from_utf8(&v.0).ok())
    };
    match (text(keys::TOKEN).map(Token::parse), text(keys::TOKEN_ID)) {
        (Some(Ok(token)), Some(id)) if token.id().as_str() == id => {
            SecretState::Holding(secret, token)
        }
        _ => SecretState::Damaged(secret),
    }
}

impl AccessToken {
    #[instrument(skip_all, fields(namespace = self.namespace(), name = %self.name_any()))]
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let namespace = self.namespace().ok_or(Error::MissingNamespace)?;
        let name = self.name_any();
        let uid = self.uid().ok_or(Error::MissingUid)?;
        let now = Timestamp::now();
        let users: Api<TechnicalUser> = Api::namespaced(ctx.client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let previous = self.status.clone().unwrap_or_default();

        // Fetch what the token refers to, then validate: scope and expiry.
        let scope = fetch_scope(ctx, &self.spec).await?;
        let resolved = resolve_scope(
            &namespace,
            &self.spec,
            |n| scope.organization(n),
            |n| scope.group(n),
        );
        let expiry = expiry::of_token(self, now);

        let user = users.get_opt(&name).await?;
        if let Some(user) = &user
            && !build::is_controlled_by(&user.metadata, &uid)
        {
            let message = format!(
                "TechnicalUser {name:?} exists and is not controlled by this AccessToken; it is left untouched"
            );
            return self
                .fail(
                    ctx,
                    Reason::TechnicalUserConflict,
                    message,
                    previous.token_id,
                )
                .await;
        }

        let (resolved, expires_at) = match (resolved, expiry) {
            (Ok(resolved), Ok(expires_at)) => (resolved, expires_at),
            (Err(problem), _) => {
                // Fail closed: an issued token whose scope is gone stops working now.
                if let Some(user) = user.filter(|u| !u.spec.disabled) {
                    let mut disabled = user.clone();
                    disabled.spec.disabled = true;
                    apply_user(&users, &disabled, self).await?;
                    warn!(
                        reason = problem.reason.as_str(),
                        "scope no longer valid: token disabled"
                    );
                }
                return self
                    .fail(ctx, problem.reason, problem.message, previous.token_id)
                    .await;
            }
            (Ok(_), Err(invalid)) => {
                return self
                    .fail(
                        ctx,
                        Reason::InvalidSpec,
                        invalid.to_string(),
                        previous.token_id,
                    )
                    .await;
            }
        };

        // The Secret is the source of truth for the token: minted only when it is missing or
        // unusable, created with POST (never overwriting), replaced only at the resourceVersion read.
        let secret_name = build::secret_name(self);
        let credentials = user
            .as_ref()
            .map(|u| u.spec.credentials.clone())
            .unwrap_or_default();
        // Metadata first: the data of a Secret this token does not own is never read.
        let state = match secrets.get_metadata_opt(&secret_name).await? {
            None => SecretState::Missing,
            Some(meta) if !build::is_controlled_by(&meta.metadata, &uid) => SecretState::Foreign,
            Some(_) => inspect_secret(secrets.get_opt(&secret_name).await?, &uid),
        };
        let children = Children {
            users: &users,
            secrets: &secrets,
            resolved: &resolved,
            credentials: &credentials,
            expires_at,
        };
        let plan = match state {
            SecretState::Foreign => {
                // Our Secret is gone and its name taken: the issued token was lost with it, so
                // its credential goes too (the token must not outlive the only copy we wrote).
                if let Some(user) = user.as_ref().filter(|u| !u.spec.credentials.is_empty()) {
                    let mut emptied = user.clone();
                    emptied.spec.credentials.clear();
                    apply_user(&users, &emptied, self).await?;
                    warn!("Secret name taken by a foreign Secret: issued credential removed");
                }
                let message = format!(
                    "Secret {secret_name:?} already exists and is not owned by this AccessToken; it is left untouched. Delete it or set spec.secretName on a new AccessToken"
                );
                return self
                    .fail(ctx, Reason::SecretConflict, message, previous.token_id)
                    .await;
            }
            SecretState::Holding(secret, value) => {
                match self
                    .credential_for(ctx, &secret, &value, &credentials, expires_at)
                    .await
                {
                    Some(credential) => Plan::Keep(value, secret, credential),
                    None => Plan::Mint {
                        existing: Some(secret),
                        why: Some("the token in its Secret is not the one issued (tampered)"),
                    },
                }
            }
            SecretState::Damaged(secret) => Plan::Mint {
                existing: Some(secret),
                why: Some("its Secret no longer holds a readable token (lost or tampered)"),
            },
            // Never reported as issued: this is the first issue (or a retry of one that crashed).
            SecretState::Missing if previous.token_id.is_none() => Plan::Mint {
                existing: None,
                why: None,
            },
            SecretState::Missing => Plan::Mint {
                existing: None,
                why: Some("its Secret was deleted"),
            },
        };
        let (value, secret, credential) = match plan {
            Plan::Keep(value, secret, credential) => (value, Some(secret), credential),
            Plan::Mint { existing, why } => {
                if let Some(waiting) = self.secret_write_waiting(ctx) {
                    return self.keep_waiting(ctx, waiting).await;
                }
                // No token the Secret holds verified (or there is none): nothing to keep.
                match self.mint(ctx, &children, existing, None).await? {
                    Minted::Written(value, secret, credential) => {
                        self.announce_mint(ctx, &value, &secret_name, why).await;
                        (value, Some(*secret), credential)
                    }
                    Minted::SecretWriteFailed(error) => {
                        return self
                            .secret_write_failed(
                                ctx,
                                &error,
                                Phase::Failed,
                                previous.token_id,
                                None,
                            )
                            .await;
                    }
                }
            }
        };

        let phase = if now >= expires_at {
            Phase::Expired
        } else if self.spec.revoked {
            Phase::Revoked
        } else {
            Phase::Active
        };
        let desired = build::technical_user(
            self,
            &resolved,
            self.spec.revoked,
            expires_at,
            vec![credential],
        );
        if user
            .as_ref()
            .map(|u| (&u.spec, &u.metadata.owner_references))
            != Some((&desired.spec, &desired.metadata.owner_references))
        {
            apply_user(&users, &desired, self).await?;
        }
        crash_point::reached("user-applied");
        // The token's state changed with the TechnicalUser: say so even if the Secret's
        // update below fails (the status written then already carries the new phase).
        self.announce_transition(ctx, previous.phase, phase, &value)
            .await;

        // Keep the Secret's descriptive keys (role, expiry, ...) current; the token never
        // changes here. After the TechnicalUser, so that a Secret that cannot be written
        // never holds up a revocation or a disable.
        if let Some(secret) = &secret {
            let data = build::secret_data(self, &resolved, &value, expires_at);
            if let Some(updated) = build::updated_secret(self, secret, data) {
                if let Some(waiting) = self.secret_write_waiting(ctx) {
                    return self.keep_waiting(ctx, waiting).await;
                }
                if let Err(error) = secrets
                    .replace(&secret_name, &PostParams::default(), &updated)
                    .await
                {
                    if is_conflict(&error) {
                        return Err(error.into());
                    }
                    let token_id = Some(value.id().to_string());
                    return self
                        .secret_write_failed(ctx, &error, phase, token_id, Some(expires_at))
                        .await;
                }
            }
        }
        if let Some(uid) = self.uid() {
            ctx.secret_writes.lock().expect("lock").clear(&uid);
        }

        let (ready, reason, message) = match phase {
            Phase::Active => (
                true,
                Reason::TokenActive,
                format!("Token {} is active until {expires_at}", value.id()),
            ),
            Phase::Revoked => (
                false,
                Reason::TokenRevoked,
                "spec.revoked is true: the token is disabled; set it to false to re-enable it"
                    .to_string(),
            ),
            _ => (
                false,
                Reason::TokenExpired,
                format!("The token expired at {expires_at}"),
            ),
        };
        self.write_status(
            ctx,
            &Outcome {
                phase,
                ready,
                reason,
                message,
                stalled: false,
                token_id: Some(value.id().to_string()),
                expires_at: Some(expires_at),
            },
        )
        .await?;

        // Wake up exactly at expiry, so the phase flips on time (the verifier never waits for this).
        let until_expiry = expires_at.duration_since(now);
        Ok(match Duration::try_from(until_expiry) {
            Ok(wait) if !wait.is_zero() => {
                Action::requeue(wait.min(RESYNC) + Duration::from_millis(100))
            }
            _ => Action::requeue(RESYNC),
        })
    }

    /// The credential matching the Secret's token, or `None` if the token is not one this
    /// operator issued (every minted token is recorded in the TechnicalUser before it is
    /// written to the Secret, so a token without a credential was put there by someone else).
    async fn credential_for(
        &self,
        ctx: &Context,
        secret: &Secret,
        value: &Token,
        credentials: &[Credential],
        expires_at: Timestamp,
    ) -> Option<Credential> {
        let existing = credentials.iter().find(|c| c.id == value.id().as_str())?;
        let (uid, version) = (
            secret.uid().unwrap_or_default(),
            secret.resource_version().unwrap_or_default(),
        );
        let known_good = ctx.verified_secrets.lock().expect("lock").get(&uid) == Some(&version);
        if known_good || ctx.hasher.verify(value, &existing.hash).await {
            ctx.verified_secrets
                .lock()
                .expect("lock")
                .insert(uid, version);
            Some(credential(value, existing.hash.clone(), expires_at))
        } else {
            None
        }
    }

    /// Mints a token: records its credential in the TechnicalUser first (beside the credential
    /// of the token the Secret holds now, if `held` names one that verified; see
    /// `build::staged_credentials`), then writes it into the Secret, created if `existing` is
    /// `None`, else replaced at the resourceVersion that was read (a concurrent change fails,
    /// and is retried). A crash or a failed Secret write between the two steps leaves an
    /// unused credential that the next attempt replaces.
    async fn mint(
        &self,
        ctx: &Context,
        children: &Children<'_>,
        existing: Option<Secret>,
        held: Option<&str>,
    ) -> Result<Minted> {
        let value = Token::try_generate().map_err(|_| Error::Randomness)?;
        let hash = ctx.hasher.hash(&value).await?;
        let credential = credential(&value, hash, children.expires_at);
        let staged = build::technical_user(
            self,
            children.resolved,
            self.spec.revoked,
            children.expires_at,
            build::staged_credentials(children.credentials, held, credential.clone()),
        );
        apply_user(children.users, &staged, self).await?;
        crash_point::reached("credential-staged");

        let data = build::secret_data(self, children.resolved, &value, children.expires_at);
        let written = match existing {
            None => {
                children
                    .secrets
                    .create(&PostParams::default(), &build::new_secret(self, data))
                    .await
            }
            Some(secret) => {
                // Our keys are replaced; keys others added to the Secret are kept.
                let secret = build::updated_secret(self, &secret, data).unwrap_or(secret);
                children
                    .secrets
                    .replace(&build::secret_name(self), &PostParams::default(), &secret)
                    .await
            }
        };
        let written = match written {
            Ok(written) => written,
            // A race (the name was just taken, or the Secret changed): look again soon.
            Err(error) if is_conflict(&error) => return Err(error.into()),
            Err(error) => return Ok(Minted::SecretWriteFailed(error)),
        };
        crash_point::reached("secret-written");
        Ok(Minted::Written(value, Box::new(written), credential))
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
    fn secret_write_waiting(&self, ctx: &Context) -> Option<(Duration, Option<Outcome>)> {
        let uid = self.uid()?;
        let writes = ctx.secret_writes.lock().expect("lock");
        writes
            .waiting(&uid, self.meta().generation, Instant::now())
            .map(|(left, retry)| (left, retry.outcome.clone()))
    }

    /// Waits out a Secret write backoff: writes nothing new (the status is already reported)
    /// and looks again when the wait is over. Watch events from the failed attempt's own
    /// writes land here, so they cannot turn the backoff into a hot loop.
    async fn keep_waiting(
        &self,
        ctx: &Context,
        (left, outcome): (Duration, Option<Outcome>),
    ) -> Result<Action> {
        if let Some(outcome) = outcome {
            self.write_status(ctx, &outcome).await?;
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
        error: &kube::Error,
        phase: Phase,
        token_id: Option<String>,
        expires_at: Option<Timestamp>,
    ) -> Result<Action> {
        let uid = self.uid().ok_or(Error::MissingUid)?;
        let (attempts, delay) = ctx.secret_writes.lock().expect("lock").failed(
            &uid,
            self.meta().generation,
            Instant::now(),
        );
        let next = jiff::SignedDuration::try_from(delay)
            .ok()
            .and_then(|d| Timestamp::now().checked_add(d).ok())
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
        };
        ctx.secret_writes
            .lock()
            .expect("lock")
            .set_outcome(&uid, outcome.clone());
        self.write_status(ctx, &outcome).await?;
        Ok(Action::requeue(delay))
    }

    async fn announce_transition(
        &self,
        ctx: &Context,
        from: Option<Phase>,
        to: Phase,
        value: &Token,
    ) {
        let (reason, note) = match (from, to) {
            (Some(Phase::Revoked), Phase::Revoked) | (Some(Phase::Expired), Phase::Expired) => {
                return;
            }
            (_, Phase::Revoked) => (
                Reason::TokenRevoked,
                format!("Token {} revoked", value.id()),
            ),
            (_, Phase::Expired) => (
                Reason::TokenExpired,
                format!("Token {} expired", value.id()),
            ),
            (Some(Phase::Revoked), Phase::Active) => (
                Reason::TokenReenabled,
                format!("Token {} re-enabled", value.id()),
            ),
            _ => return,
        };
        info!(token_id = %value.id(), reason = reason.as_str(), "token state changed");
        ctx.publish(self, EventType::Normal, reason, "Update", note)
            .await;
    }

    /// Records a failure that waits for a change (scope, conflict, invalid spec) without hot-looping.
    async fn fail(
        &self,
        ctx: &Context,
        reason: Reason,
        message: String,
        token_id: Option<String>,
    ) -> Result<Action> {
        let previous_reason = self
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.reason.clone());
        if previous_reason.as_deref() != Some(reason.as_str()) {
            warn!(reason = reason.as_str(), %message, "token not usable");
            ctx.publish(
                self,
                EventType::Warning,
                reason,
                "Validate",
                message.clone(),
            )
            .await;
        }
        let issued = token_id.is_some();
        self.write_status(
            ctx,
            &Outcome {
                // Never issued: waiting for a valid scope. Issued: disabled until it is valid again.
                phase: if issued
                    || matches!(
                        reason,
                        Reason::SecretConflict | Reason::TechnicalUserConflict
                    ) {
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
            },
        )
        .await?;
        // Scope changes arrive through watches; a foreign Secret's removal does not, so look again.
        Ok(Action::requeue(RECHECK))
    }

    async fn write_status(&self, ctx: &Context, outcome: &Outcome) -> Result<()> {
        let now = Timestamp::now();
        let status = build::status(self, outcome, now);
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
        let patch = json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1",
            "kind": "AccessToken",
            "status": status,
        });
        api.patch_status(
            &self.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
        Ok(())
    }

    /// Deletes the TechnicalUser and the Secret (only if this AccessToken controls them).
    #[instrument(skip_all, fields(namespace = self.namespace(), name = %self.name_any()))]
    async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        let namespace = self.namespace().ok_or(Error::MissingNamespace)?;
        let uid = self.uid().ok_or(Error::MissingUid)?;
        let users: Api<TechnicalUser> = Api::namespaced(ctx.client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        if let Some(user) = users.get_opt(&self.name_any()).await? {
            delete_if_controlled(&users, &user.metadata, &uid).await?;
        }
        if let Some(secret) = secrets.get_metadata_opt(&build::secret_name(self)).await? {
            delete_if_controlled(&secrets, &secret.metadata, &uid).await?;
            if let Some(secret_uid) = &secret.metadata.uid {
                ctx.verified_secrets
                    .lock()
                    .expect("lock")
                    .remove(secret_uid);
            }
        }
        ctx.secret_writes.lock().expect("lock").clear(&uid);
        info!("token deleted with its TechnicalUser and Secret");
        let note = "Deleted the TechnicalUser and Secret this AccessToken controlled; the token no longer works".to_string();
        ctx.publish(
            self,
            EventType::Normal,
            Reason::TokenDeleted,
            "Delete",
            note,
        )
        .await;
        Ok(Action::await_change())
    }
}

/// A write that lost a race (409): retried soon with fresh state, not backed off.
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// What went wrong with an API call, without the server's message text.
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
    }
}

async fn apply_user(
    users: &Api<TechnicalUser>,
    user: &TechnicalUser,
    token: &AccessToken,
) -> Result<()> {
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
    users
        .patch(
            &token.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

/// Deletes an object only if `uid` controls it, and only that very object (uid precondition);
/// already gone counts as done.
async fn delete_if_controlled<K>(
    api: &Api<K>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    uid: &str,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if !build::is_controlled_by(meta, uid) {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api
        .delete(meta.name.as_deref().unwrap_or_default(), &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
