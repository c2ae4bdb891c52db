//! The controllers: AccessTokens into TechnicalUsers and Secrets, and the status of
//! Organizations and Groups. `run` wires the watches; each reconciler lives in its own module.

pub mod access_token;
mod events;
mod own_writes;
mod scope_status;
mod secret_owners;
mod sweep;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt, TryStreamExt, future, stream};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller, Predicate, WatchStreamExt,
        events::EventType,
        predicates,
        reflector::{self, ObjectRef, Store, reflector},
        watcher,
    },
};
use tracing::{info, warn};

use access_token::Watched;
#[cfg(test)]
pub(crate) use access_token::build::technical_user as technical_user_of;
use own_writes::OwnWrites;
use secret_owners::SecretOwners;

use crate::{
    api::{AccessToken, Group, Organization, Reason, TechnicalUser, wellknown},
    observability::metrics::{ControllerKind, Metrics, TriggerSource},
    runtime::hash_pool::Hasher,
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
    /// How many AccessTokens are reconciled at once (0: no bound).
    pub reconcile_concurrency: u16,
    /// Where clients connect with a token: each token Secret then carries a `kubeconfig`.
    pub kubeconfig: Option<access_token::kubeconfig::Endpoint>,
}

/// The default of [`Config::reconcile_concurrency`], chosen with `make bench-scale` (see
/// BENCHMARKS.md): at 1,000 tokens, 32 issued about as fast as no bound (each reconcile
/// mostly waits on the API server) and 8 was slower, while no bound held every reconcile's
/// reads at once after a restart (RSS 87 MiB against 41 MiB with 32).
pub const DEFAULT_RECONCILE_CONCURRENCY: u16 = 32;

/// What every reconcile needs.
pub struct Context {
    /// Client for the API server.
    pub client: Client,
    /// Publishes Events.
    events: events::Publisher,
    /// argon2id hashing off the async threads.
    pub hasher: Hasher,
    /// Where clients connect (the Secrets' `kubeconfig` key), if configured.
    pub kubeconfig: Option<access_token::kubeconfig::Endpoint>,
    /// Consecutive failures per AccessToken, for exponential backoff.
    failures: Failures,
    /// AccessTokens whose Secret write failed, by uid: when the next write may be tried.
    secret_writes: Mutex<SecretWriteBackoff>,
    /// Which Secret version each token's credential was last verified against.
    verified: access_token::verified_secret::VerifiedSecrets,
    /// The operator's own child writes, whose watch events start no reconcile.
    own_writes: Arc<OwnWrites>,
    /// Organizations and Groups, from the watches that wake tokens on their changes.
    scopes: Scopes,
    /// Which token controls each of the operator's Secrets, from the watch that wakes them.
    secret_owners: Arc<SecretOwners>,
}

/// The Organizations and Groups as the token controller's own watches last saw them. A
/// reconcile that a scope change started reads that change here: the watch updates its store
/// before it passes the change on. A name missing here is read from the API server (a token
/// created right after its scope may be reconciled before the scope's watch event arrives).
#[derive(Clone)]
pub(crate) struct Scopes {
    organizations: Store<Organization>,
    groups: Store<Group>,
}

/// The writers of [`Scopes`], fed by the token controller's scope watches.
struct ScopeWriters {
    organizations: reflector::store::Writer<Organization>,
    groups: reflector::store::Writer<Group>,
}

impl Scopes {
    fn new() -> (Self, ScopeWriters) {
        let (organizations, organizations_writer) = reflector::store();
        let (groups, groups_writer) = reflector::store();
        let writers = ScopeWriters {
            organizations: organizations_writer,
            groups: groups_writer,
        };
        (
            Self {
                organizations,
                groups,
            },
            writers,
        )
    }

    /// The Organization `name`, as last watched.
    pub fn organization(&self, name: &str) -> Option<Arc<Organization>> {
        self.organizations.get(&ObjectRef::new(name))
    }

    /// The Group `name`, as last watched.
    pub fn group(&self, name: &str) -> Option<Arc<Group>> {
        self.groups.get(&ObjectRef::new(name))
    }
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
    pub outcome: Option<access_token::build::Outcome>,
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
    pub fn set_outcome(&mut self, uid: &str, outcome: access_token::build::Outcome) {
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
    fn new(
        client: &Client,
        config: &Config,
        hasher: Hasher,
        own_writes: Arc<OwnWrites>,
        scopes: Scopes,
        secret_owners: Arc<SecretOwners>,
    ) -> Self {
        let events = events::Publisher::new(
            client.clone(),
            wellknown::OPERATOR_MANAGER,
            config.instance.as_deref(),
        );
        Self {
            events,
            client: client.clone(),
            hasher,
            kubeconfig: config.kubeconfig.clone(),
            failures: Failures::default(),
            secret_writes: Mutex::default(),
            verified: Default::default(),
            own_writes,
            scopes,
            secret_owners,
        }
    }

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
        self.publish_to(object.object_ref(&()), type_, reason, action, note)
            .await;
    }

    /// Publishes an Event about the object `regarding` refers to (which may be gone).
    pub async fn publish_to(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = events::Note {
            type_,
            reason,
            action,
            note,
        };
        if let Err(error) = self.events.publish(&regarding, event).await {
            warn!(%error, reason, "could not publish Event");
        }
    }

    /// Forgets what is kept in memory about the token `uid` (deleted).
    pub(crate) fn forget(&self, uid: &str) {
        self.secret_writes.lock().expect("lock").clear(uid);
        self.verified.forget(uid);
    }
}

/// Runs the controllers until SIGTERM or SIGINT.
pub async fn run(
    client: Client,
    config: Config,
    hasher: Hasher,
    metrics: Arc<Metrics>,
) -> crate::Result<()> {
    let (own_writes, asked_again) = OwnWrites::new();
    let own_writes = Arc::new(own_writes);
    let (scopes, scope_writers) = Scopes::new();
    let secret_owners = Arc::new(SecretOwners::default());
    let (sweeper, leftovers) = sweep::channel();
    let ctx = Arc::new(Context::new(
        &client,
        &config,
        hasher,
        own_writes.clone(),
        scopes.clone(),
        secret_owners.clone(),
    ));
    // The status controllers count tokens from the token controller's watch (cluster-wide
    // only: in one namespace they do not run).
    let (feed, token_changes) = config
        .namespace
        .is_none()
        .then(scope_status::token_feed)
        .unzip();
    let watches = TokenWatches {
        tokens: in_scope(&client, &config),
        own_writes,
        scopes,
        scope_writers,
        secret_owners,
        feed,
        metrics: metrics.clone(),
        asked_again,
        sweeper,
    };
    let token_controller = token_controller(&client, &config, watches);
    metrics.tokens.attach(token_controller.store());
    let token_task = token_controller
        .shutdown_on_signal()
        .run(
            timed(
                metrics.clone(),
                ControllerKind::AccessToken,
                access_token::reconcile,
            ),
            access_token::error_policy,
            ctx.clone(),
        )
        .for_each(|result| {
            log_result(&metrics, ControllerKind::AccessToken, result);
            future::ready(())
        });

    let Some(token_changes) = token_changes else {
        info!(
            namespace = config.namespace.as_deref(),
            "watching AccessTokens in one namespace"
        );
        future::join(token_task, sweep::run(ctx, leftovers)).await;
        return Ok(());
    };
    info!("watching AccessTokens in all namespaces");
    let status_controllers = scope_status::controllers(&client, token_changes, &metrics);
    future::join3(token_task, sweep::run(ctx, leftovers), status_controllers).await;
    Ok(())
}

/// What the AccessToken controller watches with, beyond the client and its config.
struct TokenWatches {
    tokens: Api<Watched>,
    own_writes: Arc<OwnWrites>,
    scopes: Scopes,
    scope_writers: ScopeWriters,
    secret_owners: Arc<SecretOwners>,
    /// Where the status controllers' token counts are fed from this watch, if they run.
    feed: Option<scope_status::TokenFeed>,
    /// Where what asks for reconciles is counted.
    metrics: Arc<Metrics>,
    /// Tokens whose child changed while the operator was writing it (see [`OwnWrites`]).
    asked_again: futures::channel::mpsc::UnboundedReceiver<ObjectRef<Watched>>,
    /// Where deleted tokens and orphaned children are sent (see [`sweep`]).
    sweeper: sweep::Sweeper,
}

/// The AccessToken controller: its own watch, its children (only Secrets this operator
/// labelled, and only their metadata: memory does not grow with unrelated Secrets, and no
/// foreign Secret's data is cached), and the Organizations and Groups tokens name (kept in
/// [`Scopes`] for the reconciles).
fn token_controller(
    client: &Client,
    config: &Config,
    watches: TokenWatches,
) -> Controller<Watched> {
    let TokenWatches {
        tokens,
        own_writes,
        scopes,
        scope_writers,
        secret_owners,
        feed,
        metrics,
        asked_again,
        sweeper,
    } = watches;
    let (reader, writer) = reflector::store();
    // Secrets as metadata only (`PartialObjectMeta`: kube asks for metadata alone), so
    // their data is neither sent nor parsed here.
    let users: Api<TechnicalUser> = in_scope(client, config);
    let secrets: Api<PartialObjectMeta<Secret>> = in_scope(client, config);
    let (user_sweeper, secret_sweeper) = (sweeper.clone(), sweeper.clone());
    let controller = Controller::for_stream(
        own_changes(tokens, writer, own_writes.clone(), feed, sweeper)
            .inspect_ok(counted(&metrics, TriggerSource::AccessToken)),
        reader,
    )
    .with_config(
        kube::runtime::controller::Config::default().concurrency(config.reconcile_concurrency),
    )
    .trigger_backoff(watch_backoff())
    .reconcile_on(asked_again.inspect(counted(&metrics, TriggerSource::ChangeDuringWrite)))
    .owns_stream(
        filtered_watch(watcher(users, owned_children()), {
            let own_writes = own_writes.clone();
            move |event| {
                user_sweeper.on_child(&event);
                own_writes.triggers(event)
            }
        })
        .inspect_ok(counted(&metrics, TriggerSource::TechnicalUser)),
    )
    .owns_stream(
        filtered_watch(
            watcher(secrets, owned_secrets()),
            secret_triggers(secret_owners, own_writes, secret_sweeper),
        )
        .inspect_ok(counted(&metrics, TriggerSource::Secret)),
    );
    woken_by_scopes(controller, client, scopes, scope_writers, &metrics)
}

/// `controller`, woken by spec changes of Organizations and Groups: the tokens that act in
/// them. Their watches keep [`Scopes`] for the reconciles.
fn woken_by_scopes(
    controller: Controller<Watched>,
    client: &Client,
    scopes: Scopes,
    scope_writers: ScopeWriters,
    metrics: &Arc<Metrics>,
) -> Controller<Watched> {
    let (by_org, by_group) = (controller.store(), controller.store());
    // Which organization each Group belongs to, so that an Organization's change wakes only
    // its own tokens and its groups' (audit F12: every group token in the cluster before).
    let group_events = reflector(
        scope_writers.groups,
        watcher(
            Api::<Group>::all(client.clone()),
            watcher::Config::default(),
        ),
    );
    let organization_events = reflector(
        scope_writers.organizations,
        watcher(
            Api::<Organization>::all(client.clone()),
            watcher::Config::default(),
        ),
    );
    let (org_metrics, group_metrics) = (metrics.clone(), metrics.clone());
    controller
        .watches_stream(spec_changes(organization_events), move |org| {
            let name = org.name_any();
            let group_organization =
                |group: &str| scopes.group(group).map(|g| g.spec.organization.clone());
            let woken = tokens_where(&by_org, |t| of_organization(t, &name, group_organization));
            org_metrics.triggered(TriggerSource::Organization, woken.len());
            woken
        })
        .watches_stream(spec_changes(group_events), move |group| {
            let woken = tokens_where(&by_group, |t| {
                t.spec.group.as_deref() == Some(&group.name_any())
            });
            group_metrics.triggered(TriggerSource::Group, woken.len());
            woken
        })
}

/// `K` where the operator acts: in one namespace (`--namespace`), or in all.
fn in_scope<K>(client: &Client, config: &Config) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Counts each object of a trigger stream as one reconcile asked for by `source`.
fn counted<K>(metrics: &Arc<Metrics>, source: TriggerSource) -> impl FnMut(&K) + use<K> {
    let metrics = metrics.clone();
    move |_| metrics.triggered(source, 1)
}

/// Whether `token` acts in organization `name`: an organization token of it, or a token of a
/// group of it. A group `group_organization` does not know yet counts as one of it: a wasted
/// reconcile writes nothing, a missed one would leave the token on the old state.
fn of_organization(
    token: &AccessToken,
    name: &str,
    group_organization: impl Fn(&str) -> Option<String>,
) -> bool {
    match (&token.spec.organization, &token.spec.group) {
        (Some(organization), _) => organization == name,
        (None, Some(group)) => group_organization(group).is_none_or(|o| o == name),
        (None, None) => false,
    }
}

/// AccessTokens as their own controller hears of them (its store sees every change): new
/// ones, spec changes (deletion included: marking an object deleted bumps its generation) and
/// finalizer changes, but not the echo of the finalizer a reconcile added before it went on
/// (see [`access_token::reconcile`]). Not status-only writes (the operator's own after every
/// reconcile, the verifier's `lastUsedAt`): no outcome depends on them, and each cost a
/// reconcile's reads. Every event, status-only ones included, first feeds the status
/// controllers' token counts (`feed`).
fn own_changes(
    tokens: Api<Watched>,
    writer: reflector::store::Writer<Watched>,
    own_writes: Arc<OwnWrites>,
    feed: Option<scope_status::TokenFeed>,
    sweeper: sweep::Sweeper,
) -> impl Stream<Item = Result<Watched, watcher::Error>> + Send + 'static {
    // The store keeps every AccessToken as `Trimmed`: metadata cut to what reconciles read
    // (no labels, annotations or managed fields a tenant could pad).
    let watched =
        watcher(tokens, tenant_written(watcher::Config::default())).inspect(move |event| {
            if let Ok(event) = event {
                sweeper.on_token(event);
                if let Some(feed) = &feed {
                    feed.on(event);
                }
            }
        });
    reflector(writer, watched)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            Default::default(),
        )
        .try_filter(move |token| future::ready(own_writes.is_change(token)))
}

/// Organizations or Groups as the token controller hears of them: see [`SpecChanges`].
fn spec_changes<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + 'static,
{
    let mut changes = SpecChanges::default();
    filtered_watch(events, move |event| changes.on(event))
}

/// A watch's events through `filter`, which returns the objects that go on to trigger
/// reconciles; errors pass (the controller's watch backoff handles them).
fn filtered_watch<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    mut filter: impl FnMut(watcher::Event<K>) -> Vec<K> + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
{
    events.flat_map(move |event| {
        let passed: Vec<_> = match event {
            Ok(event) => filter(event).into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error)],
        };
        stream::iter(passed)
    })
}

/// The TechnicalUsers and Secrets the operator watches: those carrying its label only, so
/// that no other Secret of the cluster is ever sent to it or cached (DESIGN.md, "Never").
fn owned_children() -> watcher::Config {
    watcher::Config::default().labels(&format!(
        "{}={}",
        wellknown::MANAGED_BY_LABEL,
        wellknown::OPERATOR_MANAGER
    ))
}

/// The Secrets of tokens: the operator's label (and metadata only, by the `Api` type), in
/// small pages since tenants may pad them.
fn owned_secrets() -> watcher::Config {
    tenant_written(owned_children())
}

/// Which events of the operator's Secrets wake their tokens (not the echo of its own writes),
/// each first recorded in `owners`.
fn secret_triggers(
    owners: Arc<SecretOwners>,
    own_writes: Arc<OwnWrites>,
    sweeper: sweep::Sweeper,
) -> impl FnMut(watcher::Event<PartialObjectMeta<Secret>>) -> Vec<PartialObjectMeta<Secret>> {
    move |event| {
        owners.on(&event);
        sweeper.on_child(&event);
        own_writes.triggers(event)
    }
}

/// How AccessTokens (and the Secrets of tokens, which tenants may edit) are listed: in small
/// pages, so what tenants pad them with cannot make a relist's response large.
fn tenant_written(config: watcher::Config) -> watcher::Config {
    config.page_size(crate::api::LIST_PAGE_SIZE)
}

/// Which changes of a scope object (Organization or Group) reach the tokens: a new one, a
/// spec change (a new generation) and a deletion, also one a relist reveals. Not their
/// status: the operator rewrites it whenever a token of the scope changes phase, it cannot
/// change any token's outcome, and passed on it woke every token of the scope each time
/// (issuing N tokens in one organization cost on the order of N² reconciles).
struct SpecChanges<K> {
    /// The generation and last state of every object seen, by name.
    seen: HashMap<String, (Option<i64>, K)>,
    /// During a relist: the names listed so far.
    relisted: Option<HashSet<String>>,
}

impl<K> Default for SpecChanges<K> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
            relisted: None,
        }
    }
}

impl<K: Resource + Clone> SpecChanges<K> {
    /// The objects of `event` that tokens must hear about.
    fn on(&mut self, event: watcher::Event<K>) -> Vec<K> {
        use watcher::Event;
        match event {
            Event::Apply(object) | Event::InitApply(object) => {
                let name = object.name_any();
                if let Some(relisted) = &mut self.relisted {
                    relisted.insert(name.clone());
                }
                let generation = object.meta().generation;
                let previous = self.seen.insert(name, (generation, object.clone()));
                match previous {
                    Some((seen, _)) if seen == generation => Vec::new(),
                    _ => vec![object],
                }
            }
            Event::Delete(object) => {
                self.seen.remove(&object.name_any());
                vec![object]
            }
            Event::Init => {
                self.relisted = Some(HashSet::new());
                Vec::new()
            }
            Event::InitDone => {
                // Deleted while the watch was down: gone from the relist.
                let Some(relisted) = self.relisted.take() else {
                    return Vec::new();
                };
                let gone: Vec<String> = (self.seen.keys())
                    .filter(|name| !relisted.contains(*name))
                    .cloned()
                    .collect();
                (gone.iter())
                    .filter_map(|name| self.seen.remove(name).map(|(_, object)| object))
                    .collect()
            }
        }
    }
}

/// The one status writer of the three kinds: a forced server-side apply of `status` alone,
/// under the operator's field manager (so the verifier's `lastUsedAt` keeps its own owner).
async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> crate::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    apply_status_over(api, name, status, None).await
}

/// As [`apply_status`], and with `version`, only over that resourceVersion (409 otherwise).
async fn apply_status_over<K, S>(
    api: &Api<K>,
    name: &str,
    status: &S,
    version: Option<&str>,
) -> crate::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    use crate::error::{AtStep, Step};
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(version) = version {
        patch["metadata"] = serde_json::json!({"resourceVersion": version});
    }
    api.patch_status(
        name,
        &kube::api::PatchParams::apply(wellknown::OPERATOR_MANAGER).force(),
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

/// Runs one reconcile of `controller`, timing it and tracking it for liveness.
async fn observe_reconcile<T>(
    metrics: Arc<Metrics>,
    controller: ControllerKind,
    reconcile: impl Future<Output = T>,
) -> T {
    let _running = metrics.progress.reconcile_started(controller);
    let started = std::time::Instant::now();
    let result = reconcile.await;
    metrics.observe_reconcile_duration(controller, started.elapsed());
    result
}

/// `reconcile`, timed and tracked for liveness (see `observe_reconcile`).
fn timed<K, C, Fut>(
    metrics: Arc<Metrics>,
    controller: ControllerKind,
    reconcile: impl Fn(Arc<K>, Arc<C>) -> Fut,
) -> impl FnMut(Arc<K>, Arc<C>) -> futures::future::BoxFuture<'static, Fut::Output>
where
    Fut: Future + Send + 'static,
{
    move |object, ctx| {
        Box::pin(observe_reconcile(
            metrics.clone(),
            controller,
            reconcile(object, ctx),
        ))
    }
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
    // Liveness: a finished reconcile (even a failed one) is progress; a failed watch is not.
    match &result {
        Ok(_) | Err(E::ReconcilerFailed(..)) => metrics
            .progress
            .progressed(controller, std::time::Instant::now()),
        Err(E::QueueError(_)) => metrics.watch_failed(controller),
        Err(_) => {}
    }
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

/// Backoff of a controller's watches after an error: 0.5 s doubling to at most 5 s, no
/// jitter, reset by the next delivery. A controller's watches share one backoff (kube-runtime
/// merges them), so with kube's default (up to 30 s plus jitter, and a 410 after an API
/// server restart counting as one more error) a controller could sit out a minute after a
/// short outage.
fn watch_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .without_max_times()
        .into()
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
    fn only_the_operators_own_secrets_are_watched_in_small_pages() {
        let config = owned_secrets();
        assert_eq!(
            config.label_selector.as_deref(),
            Some("app.kubernetes.io/managed-by=access-token-operator"),
            "a foreign Secret is never listed, sent or cached (audit S9)"
        );
        assert_eq!(config.page_size, Some(crate::api::LIST_PAGE_SIZE));
        assert_eq!(owned_children().label_selector, config.label_selector);
    }

    #[test]
    fn an_organization_change_wakes_its_tokens_and_its_groups_tokens_only() {
        let token = |json: serde_json::Value| -> AccessToken {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
                "metadata": {"name": "t"}, "spec": json,
            }))
            .unwrap()
        };
        let group_organization = |group: &str| match group {
            "web" => Some("acme".to_string()),
            "ops" => Some("other".to_string()),
            _ => None,
        };
        let of_acme = |t: &AccessToken| of_organization(t, "acme", group_organization);
        assert!(of_acme(&token(serde_json::json!({"organization": "acme"}))));
        assert!(!of_acme(&token(
            serde_json::json!({"organization": "other"})
        )));
        assert!(of_acme(&token(serde_json::json!({"group": "web"}))));
        assert!(!of_acme(&token(serde_json::json!({"group": "ops"}))));
        assert!(
            of_acme(&token(serde_json::json!({"group": "unseen"}))),
            "a group not seen yet may be acme's"
        );
        assert!(!of_acme(&token(serde_json::json!({}))));
    }

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
        let mut backoff = watch_backoff();
        let waits: Vec<_> = backoff.by_ref().take(6).collect();
        assert_eq!(waits[0], Duration::from_millis(500));
        assert_eq!(waits[1], Duration::from_secs(1));
        assert_eq!(waits[5], Duration::from_secs(5));
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn scope_objects_reach_tokens_on_spec_changes_and_deletions_only() {
        use watcher::Event;
        let org = |generation: i64, tokens: i64| {
            let mut org = Organization::new("acme", Default::default());
            org.metadata.generation = Some(generation);
            org.status = Some(crate::api::ScopeStatus {
                tokens: crate::api::TokenCounts {
                    active: tokens,
                    ..Default::default()
                },
                ..Default::default()
            });
            org
        };
        let generations = |passed: Vec<Organization>| {
            passed
                .iter()
                .map(|o| o.metadata.generation.unwrap_or_default())
                .collect::<Vec<_>>()
        };
        let mut changes = SpecChanges::default();
        assert!(changes.on(Event::Init).is_empty());
        assert_eq!(generations(changes.on(Event::InitApply(org(1, 0)))), [1]);
        assert!(changes.on(Event::InitDone).is_empty());
        // Status writes (token counts) keep the generation: nothing reaches the tokens.
        assert!(changes.on(Event::Apply(org(1, 1))).is_empty());
        assert!(changes.on(Event::Apply(org(1, 2))).is_empty());
        // A spec change does, and so does a deletion.
        assert_eq!(generations(changes.on(Event::Apply(org(2, 2)))), [2]);
        assert_eq!(generations(changes.on(Event::Delete(org(2, 2)))), [2]);
        // Created again, then deleted while the watch was down: the relist reveals it.
        assert_eq!(generations(changes.on(Event::Apply(org(1, 0)))), [1]);
        assert!(changes.on(Event::Init).is_empty());
        assert_eq!(generations(changes.on(Event::InitDone)), [1]);
        // A relist of an unchanged object passes nothing.
        changes.on(Event::Apply(org(3, 0)));
        changes.on(Event::Init);
        assert!(changes.on(Event::InitApply(org(3, 5))).is_empty());
        assert!(changes.on(Event::InitDone).is_empty());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(256));
    }
}
