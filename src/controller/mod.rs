//! The controllers: AccessTokens into TechnicalUsers and Secrets, and the status of
//! Organizations and Groups. `run` wires the watches; each reconciler lives in its own module.

mod access_token;
pub mod build;
mod crash_point;
pub mod group_index;
mod plan;
mod restart;
mod rotation;
mod scope_status;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        Controller,
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

use access_token::Watched;

use crate::{
    api::{AccessToken, Group, Organization, Reason, TechnicalUser},
    hasher::Hasher,
    metrics::{ControllerKind, Metrics},
};

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch AccessTokens in this namespace only; `None` watches all namespaces. In
    /// single-namespace mode Organization and Group status is not written, since token
    /// counts need every namespace.
    pub namespace: Option<String>,
    /// Reporting instance for Events (e.g. the pod name).
    pub instance: Option<String>,
    /// Namespace of the group index ConfigMap that the AccessToken admission policy reads
    /// (see `group_index`); `None` writes no index.
    pub group_index_namespace: Option<String>,
}

/// What every reconcile needs.
pub struct Context {
    /// Client for the API server.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// argon2id hashing off the async threads.
    pub hasher: Hasher,
    /// Secrets whose token was verified against its credential, by uid, at this resourceVersion:
    /// avoids re-running argon2 on every reconcile of an unchanged Secret.
    pub verified_secrets: Mutex<HashMap<String, String>>,
    /// Consecutive failures per AccessToken, for exponential backoff.
    failures: Failures,
    /// AccessTokens whose Secret write failed, by uid: when the next write may be tried.
    secret_writes: Mutex<SecretWriteBackoff>,
}

/// The one backoff policy of every controller: consecutive failures per object (by kind,
/// namespace and name), each retry waiting [`backoff`] of the count; a success forgets them.
#[derive(Debug, Default)]
pub(crate) struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
        let meta = object.meta();
        let (namespace, name) = (meta.namespace.as_deref(), meta.name.as_deref());
        format!(
            "{}/{}/{}",
            K::kind(&()),
            namespace.unwrap_or_default(),
            name.unwrap_or_default()
        )
    }

    /// Records one more failure of `object`: (failures so far, wait before the retry).
    pub fn failed<K: Resource<DynamicType = ()>>(&self, object: &K) -> (u32, Duration) {
        let mut counts = self.0.lock().expect("lock");
        let count = counts.entry(Self::key(object)).or_insert(0);
        *count = count.saturating_add(1);
        (*count, backoff(*count - 1))
    }

    /// Forgets `object`'s failures after a successful reconcile.
    pub fn succeeded<K: Resource<DynamicType = ()>>(&self, object: &K) {
        self.0.lock().expect("lock").remove(&Self::key(object));
    }
}

/// Backoff for Secret writes that fail, per AccessToken (by uid) and generation.
///
/// A failed issue stages a credential into the TechnicalUser and writes a status, and both
/// writes come back through the watches as immediate reconciles; `error_policy`'s requeue
/// cannot space those out. So the reconciler asks here first and, while an AccessToken's
/// generation is still waiting, writes nothing and requeues for the remaining time. A new
/// generation (the owner changed the spec, perhaps fixing it) is tried at once.
#[derive(Debug, Default)]
pub(crate) struct SecretWriteBackoff {
    entries: HashMap<String, SecretWriteRetry>,
}

/// One AccessToken's failed Secret writes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SecretWriteRetry {
    /// The generation whose writes failed.
    pub generation: Option<i64>,
    /// Consecutive failed attempts for that generation.
    pub attempts: u32,
    /// No new attempt before this instant.
    pub not_before: std::time::Instant,
    /// The status reported while waiting (rewriting it is a no-op).
    pub outcome: Option<build::Outcome>,
}

impl SecretWriteBackoff {
    /// The retry to wait for, and how long is left, if `generation` of `uid` is still waiting.
    pub fn waiting(
        &self,
        uid: &str,
        generation: Option<i64>,
        now: std::time::Instant,
    ) -> Option<(Duration, &SecretWriteRetry)> {
        let retry = self.entries.get(uid)?;
        let left = retry.not_before.checked_duration_since(now)?;
        (retry.generation == generation && !left.is_zero()).then_some((left, retry))
    }

    /// Records one more failed attempt; returns (attempts so far, delay before the next).
    pub fn failed(
        &mut self,
        uid: &str,
        generation: Option<i64>,
        now: std::time::Instant,
    ) -> (u32, Duration) {
        let attempts = match self.entries.get(uid) {
            Some(retry) if retry.generation == generation => retry.attempts.saturating_add(1),
            _ => 1,
        };
        let delay = backoff(attempts - 1);
        self.entries.insert(
            uid.to_string(),
            SecretWriteRetry {
                generation,
                attempts,
                not_before: now + delay,
                outcome: None,
            },
        );
        (attempts, delay)
    }

    /// Remembers the status reported for the current wait.
    pub fn set_outcome(&mut self, uid: &str, outcome: build::Outcome) {
        if let Some(retry) = self.entries.get_mut(uid) {
            retry.outcome = Some(outcome);
        }
    }

    /// Forgets an AccessToken's failures (its Secret was written, or it is gone).
    pub fn clear(&mut self, uid: &str) {
        self.entries.remove(uid);
    }
}

impl Context {
    /// Publishes an Event about `object`; failing to publish is logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: Reason,
        action: &str,
        note: String,
    ) {
        self.publish_reason(object, type_, reason.as_str(), action, note)
            .await;
    }

    /// Publishes an Event with a reason outside [`Reason`] (a failed step's, see
    /// `Step::reason`); failing to publish is logged, never fatal.
    pub async fn publish_reason<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            warn!(%error, reason, "could not publish Event");
        }
    }
}

/// Runs the controllers until SIGTERM or SIGINT.
pub async fn run(
    client: Client,
    config: Config,
    hasher: Hasher,
    metrics: Arc<Metrics>,
) -> crate::Result<()> {
    let tokens: Api<Watched> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: build::MANAGER.into(),
                instance: config.instance.clone(),
            },
        ),
        client: client.clone(),
        hasher,
        verified_secrets: Mutex::default(),
        failures: Failures::default(),
        secret_writes: Mutex::default(),
    });
    let group_index_task = {
        let (client, namespace) = (client.clone(), config.group_index_namespace.clone());
        async move {
            match namespace {
                Some(namespace) => group_index::run(client, namespace).await,
                None => future::pending().await,
            }
        }
    };
    let token_task = token_controller(&client, &config, tokens.clone())
        .shutdown_on_signal()
        .run(access_token::reconcile, access_token::error_policy, ctx)
        .for_each(|result| {
            log_result(&metrics, ControllerKind::AccessToken, result);
            future::ready(())
        });

    if config.namespace.is_some() {
        info!(
            namespace = config.namespace.as_deref(),
            "watching AccessTokens in one namespace"
        );
        // The index task only ends with its watch; the controller ends on a signal.
        future::select(Box::pin(token_task), Box::pin(group_index_task)).await;
        return Ok(());
    }
    info!("watching AccessTokens in all namespaces");
    let controllers = future::join3(
        token_task,
        organization_task(&client, tokens.clone(), &metrics),
        group_task(&client, tokens, &metrics),
    );
    future::select(Box::pin(controllers), Box::pin(group_index_task)).await;
    Ok(())
}

/// The AccessToken controller: its own watch, its children (only Secrets this operator
/// labelled, and only their metadata: memory does not grow with unrelated Secrets, and no
/// foreign Secret's data is cached), and the Organizations and Groups tokens name.
fn token_controller(client: &Client, config: &Config, tokens: Api<Watched>) -> Controller<Watched> {
    let (users, secrets): (Api<TechnicalUser>, Api<Secret>) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let managed = watcher::Config::default().labels(&format!(
        "{}={}",
        build::MANAGED_BY_LABEL,
        build::MANAGER
    ));
    let controller = Controller::new(tokens, watcher::Config::default())
        .trigger_backoff(WatchBackoff::default())
        .owns(users, managed.clone())
        .owns(secrets, managed);
    let (by_org, by_group) = (controller.store(), controller.store());
    controller
        .watches(
            Api::<Organization>::all(client.clone()),
            watcher::Config::default(),
            move |org| {
                // Group tokens too: the organization of their group may be this one. Scope
                // changes are rare, and a reconcile with nothing to do writes nothing.
                let name = org.name_any();
                tokens_where(&by_org, |t| {
                    t.spec.organization.as_deref() == Some(name.as_str()) || t.spec.group.is_some()
                })
            },
        )
        .watches(
            Api::<Group>::all(client.clone()),
            watcher::Config::default(),
            move |group| {
                tokens_where(&by_group, |t| {
                    t.spec.group.as_deref() == Some(&group.name_any())
                })
            },
        )
}

/// The Organization status controller, woken by the tokens naming each organization.
fn organization_task(
    client: &Client,
    tokens: Api<Watched>,
    metrics: &Arc<Metrics>,
) -> impl Future<Output = ()> {
    let metrics = metrics.clone();
    let ctx = Arc::new(scope_status::Context {
        client: client.clone(),
        failures: Failures::default(),
    });
    Controller::new(
        Api::<Organization>::all(client.clone()),
        watcher::Config::default(),
    )
    .trigger_backoff(WatchBackoff::default())
    .watches(tokens, watcher::Config::default(), |token: Watched| {
        let org = token.0.ok()?.spec.organization?;
        Some(ObjectRef::<Organization>::new(&org))
    })
    .shutdown_on_signal()
    .run(
        scope_status::reconcile_organization,
        scope_status::error_policy,
        ctx,
    )
    .for_each(move |result| {
        log_result(&metrics, ControllerKind::Organization, result);
        future::ready(())
    })
}

/// The Group status controller, woken by the tokens naming each group and by changes of
/// its organization.
fn group_task(
    client: &Client,
    tokens: Api<Watched>,
    metrics: &Arc<Metrics>,
) -> impl Future<Output = ()> {
    let metrics = metrics.clone();
    let ctx = Arc::new(scope_status::Context {
        client: client.clone(),
        failures: Failures::default(),
    });
    let controller = Controller::new(
        Api::<Group>::all(client.clone()),
        watcher::Config::default(),
    )
    .trigger_backoff(WatchBackoff::default());
    let group_store = controller.store();
    controller
        .watches(tokens, watcher::Config::default(), |token: Watched| {
            let group = token.0.ok()?.spec.group?;
            Some(ObjectRef::<Group>::new(&group))
        })
        .watches(
            Api::<Organization>::all(client.clone()),
            watcher::Config::default(),
            move |org| {
                let name = org.name_any();
                group_store
                    .state()
                    .into_iter()
                    .filter(|g| g.spec.organization == name)
                    .map(|g| ObjectRef::from_obj(&*g))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(
            scope_status::reconcile_group,
            scope_status::error_policy,
            ctx,
        )
        .for_each(move |result| {
            log_result(&metrics, ControllerKind::Group, result);
            future::ready(())
        })
}

/// The one status writer of the three kinds: a forced server-side apply of `status` alone,
/// under the operator's field manager (so the verifier's `lastUsedAt` keeps its own owner).
async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> crate::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    use crate::error::{AtStep, Step};
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &kube::api::PatchParams::apply(build::MANAGER).force(),
        &kube::api::Patch::Apply(patch),
    )
    .await
    .at(Step::WriteStatus)?;
    Ok(())
}

fn tokens_where(
    store: &Store<Watched>,
    matches: impl Fn(&AccessToken) -> bool,
) -> Vec<ObjectRef<Watched>> {
    store
        .state()
        .into_iter()
        .filter(|t| t.0.as_ref().is_ok_and(&matches))
        .map(|t| ObjectRef::from_obj(&*t))
        .collect()
}

/// Reconcile failures are logged (with backoff state) by the error policies; what reaches
/// here otherwise is a watch or queue problem.
fn log_result<T, Q>(
    metrics: &Metrics,
    controller: ControllerKind,
    result: Result<T, kube::runtime::controller::Error<crate::Error, Q>>,
) where
    T: std::fmt::Debug,
    Q: std::error::Error + 'static,
{
    use kube::runtime::controller::Error as E;
    metrics.reconciled(controller, result.is_ok());
    if let Err(E::ReconcilerFailed(error, _)) = &result {
        metrics.failed(controller, error.step());
    }
    let kind = format!("{controller:?}");
    let kind = kind.as_str();
    match result {
        Ok(object) => tracing::debug!(kind, ?object, "reconciled"),
        Err(E::ReconcilerFailed(error, object)) => {
            tracing::debug!(kind, %error, ?object, "reconcile failed")
        }
        Err(error) => warn!(kind, %error, "controller error"),
    }
}

/// Backoff of a controller's watches after an error: 0.5 s doubling to at most 5 s, reset by
/// the next delivery. A controller's watches share one backoff (kube-runtime merges them),
/// so with kube's default (up to 30 s plus jitter, and a 410 after an API server restart
/// counting as one more error) a controller could sit out a minute after a short outage.
#[derive(Clone, Copy, Debug)]
struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (wait * 2).min(Self::MAX);
        Some(wait)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Exponential backoff for an object's consecutive failures: 1s, 2s, 4s ... capped at 256 s.
/// Used by every error policy (through [`Failures`]) and by the Secret write backoff.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(8)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_secret_write_waits_out_a_growing_backoff_unless_the_spec_changes() {
        let mut writes = SecretWriteBackoff::default();
        let t0 = std::time::Instant::now();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        assert!(
            writes.waiting("u", Some(1), t0).is_none(),
            "nothing failed yet"
        );

        assert_eq!(writes.failed("u", Some(1), t0), (1, Duration::from_secs(1)));
        let (left, retry) = writes.waiting("u", Some(1), at(0.25)).expect("waiting");
        assert_eq!(left, Duration::from_millis(750));
        assert_eq!(retry.attempts, 1);
        assert!(writes.waiting("u", Some(1), at(1.0)).is_none(), "1 s later");
        assert!(writes.waiting("other", Some(1), at(0.25)).is_none());

        // Each failure doubles the wait: 1 s, 2 s, 4 s, ...
        assert_eq!(
            writes.failed("u", Some(1), at(1.0)),
            (2, Duration::from_secs(2))
        );
        assert!(writes.waiting("u", Some(1), at(2.9)).is_some());
        assert_eq!(
            writes.failed("u", Some(1), at(3.0)),
            (3, Duration::from_secs(4))
        );
        assert!(writes.waiting("u", Some(1), at(6.9)).is_some());

        // A spec change is tried at once, and its failures start over.
        assert!(writes.waiting("u", Some(2), at(3.5)).is_none());
        assert_eq!(
            writes.failed("u", Some(2), at(3.5)),
            (1, Duration::from_secs(1))
        );

        writes.clear("u");
        assert!(writes.waiting("u", Some(2), at(3.6)).is_none());
    }

    #[test]
    fn failures_grow_the_wait_per_object_until_a_success() {
        let failures = Failures::default();
        let (a, b) = (
            Organization::new("a", Default::default()),
            Organization::new("b", Default::default()),
        );
        assert_eq!(failures.failed(&a), (1, Duration::from_secs(1)));
        assert_eq!(failures.failed(&a), (2, Duration::from_secs(2)));
        assert_eq!(failures.failed(&b), (1, Duration::from_secs(1)));
        failures.succeeded(&a);
        assert_eq!(failures.failed(&a), (1, Duration::from_secs(1)));
    }

    #[test]
    fn watch_backoff_doubles_to_five_seconds_and_resets() {
        use kube::runtime::utils::Backoff;
        let mut backoff = WatchBackoff::default();
        let waits: Vec<_> = backoff.by_ref().take(6).collect();
        assert_eq!(waits[0], Duration::from_millis(500));
        assert_eq!(waits[1], Duration::from_secs(1));
        assert_eq!(waits[5], Duration::from_secs(5));
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(256));
    }
}
