//! Status of Organizations and Groups: a Ready condition and token counts by phase.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{
    StreamExt,
    channel::mpsc::{self, UnboundedReceiver, UnboundedSender},
    future,
};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{Failures, access_token::Watched, log_result, timed, watch_backoff};

pub(super) mod phase_index;

use self::phase_index::{PhaseIndex, ScopeField};
use crate::{
    Result,
    api::{
        AccessToken, Group, Organization, Reason, ScopeStatus, TokenCounts,
        conditions::{Readiness, conditions},
    },
    domain::policy,
    error::{AtStep, Step},
    observability::metrics::{ControllerKind, Metrics},
};

/// What the scope reconcilers need.
pub struct Context {
    /// Client for the API server.
    pub client: Client,
    /// Consecutive failures per Organization or Group, for the shared backoff.
    pub failures: Failures,
    /// Phases of the tokens, fed by the AccessToken controller's watch ([`TokenFeed`]).
    pub tokens: Arc<PhaseIndex>,
    /// When each scope's status was last written, for the count throttle.
    last_written: WriteTimes,
}

/// When each scope's status was last written.
#[derive(Default)]
struct WriteTimes(Mutex<HashMap<String, Instant>>);

impl WriteTimes {
    fn get(&self, name: &str) -> Option<Instant> {
        self.0
            .lock()
            .expect("status write times")
            .get(name)
            .copied()
    }

    fn record(&self, name: &str, at: Instant) {
        let mut written = self.0.lock().expect("status write times");
        // Only writes within the interval matter: forget the rest once there are many scopes.
        if written.len() >= FORGET_WRITES_ABOVE {
            written.retain(|_, t| at.duration_since(*t) < COUNTS_WRITE_INTERVAL);
        }
        written.insert(name.to_string(), at);
    }
}

/// The least time between two status writes of one scope that change only its token counts:
/// a burst of token changes costs a scope one write a second, not one per token, and under
/// constant churn it is still written every second (a throttle, not a debounce). A change of
/// readiness is written at once.
pub const COUNTS_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// How many scopes' write times are kept before the ones outside the interval are dropped.
const FORGET_WRITES_ABOVE: usize = 1024;

/// How long a status that changes only token counts must wait before it is written: None to
/// write it now (a readiness change, a first write, or the interval since the last is over).
fn counts_wait(last_written: Option<Instant>, now: Instant, counts_only: bool) -> Option<Duration> {
    if !counts_only {
        return None;
    }
    let next = last_written? + COUNTS_WRITE_INTERVAL;
    (next > now).then(|| next - now)
}

/// Whether `status` differs from `previous` in its token counts alone.
fn counts_only(previous: Option<&ScopeStatus>, status: &ScopeStatus) -> bool {
    previous.is_some_and(|p| {
        p.conditions == status.conditions
            && p.observed_generation == status.observed_generation
            && p.tokens != status.tokens
    })
}

/// How long a status reconcile waits for the token index's first list.
const INDEX_NOT_READY: Duration = Duration::from_secs(1);

/// An Organization or a Group: what the one status controller needs to know of each kind.
pub trait ScopeObject:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    /// The controller, for metrics and liveness.
    const CONTROLLER: ControllerKind;
    /// The token field that names a scope of this kind.
    const FIELD: ScopeField;
    /// The status written last.
    fn scope_status(&self) -> Option<&ScopeStatus>;
    /// The scope of this kind a token names, if any.
    fn named_by(token: AccessToken) -> Option<String>;
    /// Whether tokens may be issued in this scope: `(ready, reason, message)`.
    fn readiness(&self, client: &Client) -> impl Future<Output = Result<ScopeReadiness>> + Send;
    /// Wakes the controller on what else its status depends on (a Group: its organization).
    fn more_triggers(controller: Controller<Self>, client: &Client) -> Controller<Self>;
}

/// Whether a scope is ready, and why, as written into its Ready condition.
pub struct ScopeReadiness {
    ready: bool,
    reason: Reason,
    message: String,
}

impl ScopeObject for Organization {
    const CONTROLLER: ControllerKind = ControllerKind::Organization;
    const FIELD: ScopeField = ScopeField::Organization;

    fn scope_status(&self) -> Option<&ScopeStatus> {
        self.status.as_ref()
    }

    fn named_by(token: AccessToken) -> Option<String> {
        token.spec.organization
    }

    async fn readiness(&self, _: &Client) -> Result<ScopeReadiness> {
        Ok(ScopeReadiness {
            ready: true,
            reason: Reason::ScopeValid,
            message: "Organization is ready for tokens".into(),
        })
    }

    fn more_triggers(controller: Controller<Self>, _: &Client) -> Controller<Self> {
        controller
    }
}

impl ScopeObject for Group {
    const CONTROLLER: ControllerKind = ControllerKind::Group;
    const FIELD: ScopeField = ScopeField::Group;

    fn scope_status(&self) -> Option<&ScopeStatus> {
        self.status.as_ref()
    }

    fn named_by(token: AccessToken) -> Option<String> {
        token.spec.group
    }

    /// Not ready while its organization is missing.
    async fn readiness(&self, client: &Client) -> Result<ScopeReadiness> {
        let org = &self.spec.organization;
        let organization = Api::<Organization>::all(client.clone())
            .get_opt(org)
            .await
            .at(Step::ReadScope)?
            .filter(|o| o.meta().deletion_timestamp.is_none());
        let Some(organization) = organization else {
            return Ok(ScopeReadiness {
                ready: false,
                reason: Reason::OrganizationMissing,
                message: format!(
                    "Organization {org:?} does not exist; tokens scoped to this group are not issued"
                ),
            });
        };
        let looser = policy::looser_fields(
            organization.spec.token_policy.as_ref(),
            self.spec.token_policy.as_ref(),
        );
        Ok(ScopeReadiness {
            ready: true,
            reason: Reason::ScopeValid,
            message: group_ready_message(org, &looser),
        })
    }

    /// A change of its organization (created, deleted) changes a Group's readiness.
    fn more_triggers(controller: Controller<Self>, client: &Client) -> Controller<Self> {
        let groups = controller.store();
        controller.watches(
            Api::<Organization>::all(client.clone()),
            watcher::Config::default(),
            move |org| {
                let name = org.name_any();
                groups
                    .state()
                    .into_iter()
                    .filter(|g| g.spec.organization == name)
                    .map(|g| ObjectRef::from_obj(&*g))
                    .collect::<Vec<_>>()
            },
        )
    }
}

/// The token side of both status controllers, fed by the AccessToken controller's watch (one
/// watch of every token, not one per controller: each token event was decoded three times):
/// the phase index, updated before the tokens whose phase or scope changed are passed on.
pub struct TokenFeed {
    index: Arc<PhaseIndex>,
    organizations: UnboundedSender<Watched>,
    groups: UnboundedSender<Watched>,
}

/// What [`TokenFeed`] feeds: the index, and the changed tokens for each kind's controller.
pub struct TokenChanges {
    index: Arc<PhaseIndex>,
    organizations: UnboundedReceiver<Watched>,
    groups: UnboundedReceiver<Watched>,
}

/// A feed and what it feeds.
pub fn token_feed() -> (TokenFeed, TokenChanges) {
    let index = Arc::new(PhaseIndex::default());
    let (organizations, organization_changes) = mpsc::unbounded();
    let (groups, group_changes) = mpsc::unbounded();
    let feed = TokenFeed {
        index: index.clone(),
        organizations,
        groups,
    };
    let changes = TokenChanges {
        index,
        organizations: organization_changes,
        groups: group_changes,
    };
    (feed, changes)
}

impl TokenFeed {
    /// Records one event of the AccessToken watch.
    pub fn on(&self, event: &watcher::Event<Watched>) {
        for token in self.index.on(event) {
            // A controller that has stopped (shutdown) no longer needs its triggers.
            let _ = self.organizations.unbounded_send(token.clone());
            let _ = self.groups.unbounded_send(token);
        }
    }
}

/// Both status controllers, on the tokens `changes` passes on.
pub async fn controllers(client: &Client, changes: TokenChanges, metrics: &Arc<Metrics>) {
    let TokenChanges {
        index,
        organizations,
        groups,
    } = changes;
    future::join(
        controller::<Organization>(client, index.clone(), organizations, metrics),
        controller::<Group>(client, index, groups, metrics),
    )
    .await;
}

/// The status controller of one kind, woken by the tokens naming each object (counted in
/// the shared index of token phases) and by what else its readiness depends on.
fn controller<K: ScopeObject>(
    client: &Client,
    index: Arc<PhaseIndex>,
    changed: UnboundedReceiver<Watched>,
    metrics: &Arc<Metrics>,
) -> impl Future<Output = ()> + use<K> {
    let metrics = metrics.clone();
    let ctx = Arc::new(Context {
        client: client.clone(),
        failures: Failures::default(),
        tokens: index.clone(),
        last_written: WriteTimes::default(),
    });
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default())
        .trigger_backoff(watch_backoff());
    K::more_triggers(controller, client)
        .watches_stream(changed.map(Ok), |token: Watched| {
            Some(ObjectRef::<K>::new(&K::named_by(token.0.ok()?)?))
        })
        .shutdown_on_signal()
        .run(
            timed(metrics.clone(), K::CONTROLLER, reconcile::<K>),
            error_policy,
            ctx,
        )
        .for_each(move |result| {
            log_result(&metrics, K::CONTROLLER, result);
            future::ready(())
        })
}

/// Writes an Organization's or Group's status: its readiness and its tokens by phase.
async fn reconcile<K: ScopeObject>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let Some(counts) = ctx.tokens.counts(K::FIELD, &object.name_any()) else {
        return Ok(Action::requeue(INDEX_NOT_READY));
    };
    let readiness = object.readiness(&ctx.client).await?;
    let status = scope_status(
        object.scope_status(),
        object.meta().generation,
        readiness,
        counts,
    );
    let previous = object.scope_status();
    if previous == Some(&status) {
        ctx.failures.succeeded(&*object);
        return Ok(Action::await_change());
    }
    let name = object.name_any();
    let now = Instant::now();
    let counts_only = counts_only(previous, &status);
    if let Some(wait) = counts_wait(ctx.last_written.get(&name), now, counts_only) {
        return Ok(Action::requeue(wait));
    }
    super::apply_status(&Api::<K>::all(ctx.client.clone()), &name, &status).await?;
    ctx.last_written.record(&name, now);
    ctx.failures.succeeded(&*object);
    Ok(Action::await_change())
}

/// The Ready message of a usable Group, naming the policy fields that have no effect.
fn group_ready_message(org: &str, looser: &[&str]) -> String {
    if looser.is_empty() {
        return "Group is ready for tokens".to_string();
    }
    let fields = looser
        .iter()
        .map(|f| format!("tokenPolicy.{f}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "Group is ready for tokens; {fields} is looser than Organization {org:?}'s and has no effect (a group can only tighten its organization's policy)"
    )
}

fn scope_status(
    previous: Option<&ScopeStatus>,
    generation: Option<i64>,
    readiness: ScopeReadiness,
    tokens: TokenCounts,
) -> ScopeStatus {
    let ScopeReadiness {
        ready,
        reason,
        message,
    } = readiness;
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let readiness = Readiness {
        ready,
        // Not ready means a missing organization: only an outside change fixes it.
        stalled: !ready,
        reason,
        message: &message,
    };
    let conditions = conditions(previous_conditions, readiness, generation, Timestamp::now());
    ScopeStatus {
        observed_generation: generation,
        conditions,
        tokens,
    }
}

/// Retries a failed scope status write with the shared exponential backoff.
fn error_policy<K>(object: Arc<K>, error: &crate::Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let (failures, wait) = ctx.failures.failed(&*object);
    warn!(kind = %K::kind(&()), name = %object.meta().name.clone().unwrap_or_default(), %error, failures, "status update failed");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{
        COUNTS_WRITE_INTERVAL, FORGET_WRITES_ABOVE, WriteTimes, counts_only, counts_wait,
        phase_index::count,
    };
    use k8s_openapi::jiff::Timestamp;

    use crate::api::{
        ConditionType, Phase, Reason, ScopeStatus, TokenCounts, conditions::condition,
    };

    #[test]
    fn count_changes_are_written_at_most_once_an_interval_and_readiness_at_once() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        // (last written, counts only) -> wait before writing
        let table = [
            (None, true, None),
            (Some(now - ms(300)), false, None),
            (Some(now - ms(300)), true, Some(ms(700))),
            (Some(now), true, Some(COUNTS_WRITE_INTERVAL)),
            (Some(now - COUNTS_WRITE_INTERVAL), true, None),
            (Some(now - ms(5000)), true, None),
        ];
        for (last, only, wait) in table {
            assert_eq!(counts_wait(last, now, only), wait, "{last:?} {only}");
        }
    }

    #[test]
    fn write_times_forget_what_is_outside_the_interval_once_there_are_many() {
        let times = WriteTimes::default();
        let start = Instant::now();
        for i in 0..FORGET_WRITES_ABOVE - 1 {
            times.record(&format!("old-{i}"), start);
        }
        let later = start + COUNTS_WRITE_INTERVAL;
        times.record("recent", later - Duration::from_millis(1));
        assert_eq!(times.get("old-0"), Some(start), "kept below the bound");
        times.record("new", later);
        assert_eq!(times.get("old-0"), None, "outside the interval: forgotten");
        assert!(times.get("recent").is_some(), "inside the interval: kept");
        assert_eq!(times.get("new"), Some(later));
        assert_eq!(times.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn only_a_change_of_the_counts_alone_is_throttled() {
        let status = |active: i64, ready: bool, generation: i64| ScopeStatus {
            observed_generation: Some(generation),
            conditions: vec![condition(
                &[],
                ConditionType::Ready,
                ready,
                Reason::ScopeValid,
                "",
                Some(1),
                Timestamp::UNIX_EPOCH,
            )],
            tokens: TokenCounts {
                active,
                ..Default::default()
            },
        };
        let before = status(1, true, 1);
        assert!(counts_only(Some(&before), &status(2, true, 1)));
        assert!(
            !counts_only(Some(&before), &status(1, true, 1)),
            "no change"
        );
        assert!(
            !counts_only(Some(&before), &status(2, false, 1)),
            "readiness"
        );
        assert!(
            !counts_only(Some(&before), &status(2, true, 2)),
            "a new spec"
        );
        assert!(!counts_only(None, &status(2, true, 1)), "the first status");
    }

    #[test]
    fn counts_tokens_by_phase_and_no_status_as_pending() {
        let mut counts = TokenCounts::default();
        for phase in [
            None,
            Some(Phase::Active),
            Some(Phase::Active),
            Some(Phase::Revoked),
            Some(Phase::Expired),
            Some(Phase::Failed),
            Some(Phase::Suspended),
        ] {
            count(&mut counts, phase);
        }
        assert_eq!(
            counts,
            TokenCounts {
                pending: 1,
                active: 2,
                revoked: 1,
                expired: 1,
                failed: 1,
                suspended: 1,
            }
        );
    }
}
