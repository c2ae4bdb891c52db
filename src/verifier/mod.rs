//! The verifier: answers "who is this token?" for kube-apiserver's webhook token
//! authentication and for any platform service, from an in-memory index fed by watches.
//!
//! Order of checks: format and checksum (no lookup, no hashing) → credential by token id →
//! state, on every request: disabled, expiry on our own clock, owning AccessToken present,
//! not being deleted, not revoked, and its namespace still admitted by its scope → argon2id
//! on a bounded blocking pool (only this result is cached, under an HMAC key). State before
//! the hash means a denied token never costs argon2 time.
//!
//! The caches are only as good as the watches feeding them: when a watch has been failing for
//! longer than `Config::max_staleness`, the verifier is not ready and answers "could not
//! check" instead of deciding from state that may no longer be true (a revoke it missed).
//! A wrong secret for a public token id costs bounded work: once a secret has matched a
//! credential, any other is refused by a digest compare (cache.rs, remembered until the
//! credential's notAfter); before that, each id gets one argon2 at a time (gates.rs), and no
//! number of forgeries turns the owner's secret away.
//! Stored PHC parameters above the configured limits are refused without hashing.

mod cache;
pub mod decide;
mod gates;
mod index;
mod last_used;
pub mod metrics;
pub mod server;
#[cfg(test)]
mod tests;
mod token_table;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client,
    runtime::{
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{debug, info, warn};

pub use cache::HashResultCache;
pub use decide::{Denial, Identity};
pub use index::{CredentialIndex, IndexedUser};
pub use last_used::LastUsed;
use metrics::{
    Argon2Labels, Argon2Result, CacheLabels, CacheResult, ReviewLabels, VerifierMetrics,
};
pub use token_table::TokenTable;

use crate::{
    api::{AccessToken, Credential, Group, Organization, TechnicalUser, Trimmed},
    observability::metrics::Metrics,
    runtime::hash_pool::Hasher,
    token::{HashLimits, Token},
};

/// What the verifier answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: this identity.
    Authenticated(Box<Identity>),
    /// Invalid, for this reason (answered without an error, so callers may cache it).
    Denied(Denial),
    /// Could not check (not synced yet, or overloaded): answered with an error.
    Unavailable(&'static str),
}

/// Tuning of the verifier.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most proven secrets (argon2 successes) remembered, as digests.
    pub cache_capacity: u64,
    /// Longest a request waits for its argon2 check (queueing included) before answering "unavailable".
    pub hash_wait: Duration,
    /// How often lastUsedAt is written.
    pub last_used_interval: Duration,
    /// Most lastUsedAt writes a second, on average over an interval.
    pub last_used_writes_per_second: u32,
    /// Longest a watch may keep failing before the verifier stops answering from its caches.
    pub max_staleness: Duration,
    /// Largest argon2id parameters accepted in a stored PHC string.
    pub hash_limits: HashLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_capacity: 100_000,
            hash_wait: Duration::from_secs(2),
            last_used_interval: Duration::from_secs(10),
            last_used_writes_per_second: 200,
            max_staleness: Duration::from_secs(30),
            hash_limits: HashLimits::default(),
        }
    }
}

/// The verifier's state: watch-fed caches and the argon2 result cache.
pub struct Verifier {
    index: Arc<CredentialIndex>,
    /// One per watch: TechnicalUsers, AccessTokens, Organizations, Groups.
    watches: [Arc<WatchHealth>; 4],
    /// AccessTokens as written by tenants: one that no longer deserializes is left out (and
    /// so treated as absent) instead of failing the whole watch for every token.
    tokens: Arc<TokenTable>,
    organizations: Store<Organization>,
    groups: Store<Group>,
    hasher: Hasher,
    cache: HashResultCache,
    gates: Arc<gates::IdGates>,
    last_used: Arc<LastUsed>,
    config: Config,
    metrics: Arc<VerifierMetrics>,
    /// The process's metrics, which the verifier's server serves too.
    process_metrics: Arc<Metrics>,
}

impl Verifier {
    /// Starts the watches (as background tasks) and returns the verifier.
    pub fn start(
        client: Client,
        hasher: Hasher,
        config: Config,
        process_metrics: Arc<Metrics>,
        metrics: Arc<VerifierMetrics>,
    ) -> crate::Result<Arc<Self>> {
        let index = Arc::new(CredentialIndex::default());
        let watch_config = watch_config(config.max_staleness);
        let index_health = Arc::new(WatchHealth::new("TechnicalUser"));
        tokio::spawn(feed(
            Api::<Trimmed<TechnicalUser>>::all(client.clone()),
            watch_config.clone(),
            index.clone(),
            index_health.clone(),
        ));
        let tokens = Arc::new(TokenTable::default());
        let tokens_health = Arc::new(WatchHealth::new("AccessToken"));
        tokio::spawn(feed(
            Api::<Trimmed<AccessToken>>::all(client.clone()),
            watch_config.clone(),
            tokens.clone(),
            tokens_health.clone(),
        ));
        let (organizations, organizations_health) = spawn_reflector(
            "Organization",
            Api::<Organization>::all(client.clone()),
            watch_config.clone(),
        );
        let (groups, groups_health) =
            spawn_reflector("Group", Api::<Group>::all(client.clone()), watch_config);
        let last_used = Arc::new(LastUsed::default());
        {
            let (last_used, client, interval, rate) = (
                last_used.clone(),
                client.clone(),
                config.last_used_interval,
                config.last_used_writes_per_second,
            );
            tokio::spawn(async move { last_used.flush_forever(client, interval, rate).await });
        }
        let cache =
            HashResultCache::new(config.cache_capacity).map_err(|_| crate::Error::Randomness)?;
        let gates = Arc::new(gates::IdGates::new(config.cache_capacity.max(10_000)));
        let watches = [
            index_health,
            tokens_health,
            organizations_health,
            groups_health,
        ];
        Ok(Arc::new(Self {
            metrics,
            process_metrics,
            index,
            watches,
            tokens,
            organizations,
            groups,
            hasher,
            cache,
            gates,
            last_used,
            config,
        }))
    }

    /// Whether every watch has delivered its initial list.
    pub fn is_synced(&self) -> bool {
        self.watches.iter().all(|watch| watch.is_synced())
    }

    /// The kind of a watch that has been failing for longer than the maximum staleness, if any.
    pub fn stale_watch(&self) -> Option<&'static str> {
        // Every watch is looked at (not just up to the first stale one) so each logs its own staleness.
        self.watches
            .iter()
            .filter(|watch| watch.is_stale(self.config.max_staleness))
            .fold(None, |first, watch| first.or(Some(watch.kind)))
    }

    /// Whether the verifier may answer from its caches: synced, and no watch stale.
    pub fn is_ready(&self) -> bool {
        self.is_synced() && self.stale_watch().is_none()
    }

    /// `is_ready`, with the reason a readiness probe reports when it is not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_ready() {
            return Ok(());
        }
        Err(
            "verifier caches not synced, or a watch failing for longer than the maximum staleness"
                .to_string(),
        )
    }

    /// Decides about a presented token, and counts and times the answer.
    pub async fn review(&self, presented: &str) -> Verdict {
        let started = std::time::Instant::now();
        let verdict = self.decide(presented).await;
        self.metrics
            .review_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels::from(&verdict))
            .inc();
        verdict
    }

    /// The families this verifier records into.
    pub fn metrics(&self) -> &VerifierMetrics {
        &self.metrics
    }

    /// The process's metrics (what `/metrics` serves, and the controllers' liveness).
    pub fn process_metrics(&self) -> &Metrics {
        &self.process_metrics
    }

    async fn decide(&self, presented: &str) -> Verdict {
        // Format and checksum first: garbage costs no lookup and no hashing.
        let Ok(token) = Token::parse(presented) else {
            return Verdict::Denied(Denial::Malformed);
        };
        if !self.is_synced() {
            return Verdict::Unavailable("the verifier has not synced its caches yet");
        }
        if self.stale_watch().is_some() {
            return Verdict::Unavailable(
                "the verifier cannot reach the API server; its state may be stale",
            );
        }
        let id = token.id().as_str();
        let users = self.index.lookup(id);
        if users.is_empty() {
            return Verdict::Denied(Denial::UnknownId);
        }
        let now = Timestamp::now();
        let admitted = match self.admitted(&users, id, now) {
            Ok(admitted) => admitted,
            Err(denial) => return Verdict::Denied(denial),
        };
        let (mut matched, hashed) = match self.matching(&token, admitted).await {
            Ok(matched) => matched,
            Err(reason) => return Verdict::Unavailable(reason),
        };
        let candidate = match matched.len() {
            0 => return Verdict::Denied(Denial::WrongSecret),
            1 => matched.pop().expect("one"),
            _ => return Verdict::Denied(Denial::Ambiguous),
        };
        // After waiting for argon2 the world may have moved on: read the user again and check
        // its state at a fresh `now`, so a revoke that landed meanwhile wins.
        let (identity, now) = if hashed {
            let now = Timestamp::now();
            match decide::recheck(
                &candidate.uid,
                &candidate.credential,
                &self.index.lookup(id),
                |ns, name| self.access_token(ns, name),
                |name| self.organizations.get(&ObjectRef::new(name)),
                |name| self.groups.get(&ObjectRef::new(name)),
                now,
            ) {
                Ok(identity) => (identity, now),
                Err(reason) => return Verdict::Denied(reason),
            }
        } else {
            (candidate.identity, now)
        };
        self.last_used
            .record(&identity.namespace, &identity.name, now);
        Verdict::Authenticated(Box::new(identity))
    }

    /// The candidates among the users holding `id` (normally one) whose state admits them at
    /// `now`, or the most telling denial: a revoked, expired, deleted or untrusted token, or a
    /// hash over the limits, is denied without hashing.
    fn admitted(
        &self,
        users: &[Arc<IndexedUser>],
        id: &str,
        now: Timestamp,
    ) -> Result<Vec<Candidate>, Denial> {
        let mut denial = None;
        let mut admitted = Vec::new();
        for user in users {
            match self.state_of(user, id, now) {
                Ok(candidate) => admitted.push(candidate),
                Err(reason) => denial = Some(decide::preferred(denial, reason)),
            }
        }
        if admitted.is_empty() {
            return Err(denial.unwrap_or(Denial::UnknownId));
        }
        Ok(admitted)
    }

    /// The candidates whose secret `token` matches: secrets already proven by argon2 by a
    /// constant-time digest compare, the others by argon2 (then `true`: the world may have
    /// moved on meanwhile).
    async fn matching(
        &self,
        token: &Token,
        admitted: Vec<Candidate>,
    ) -> Result<(Vec<Candidate>, bool), &'static str> {
        let mut matched = Vec::new();
        let mut unproven = Vec::new();
        for candidate in admitted {
            match self.cache.check(token, &candidate.credential.hash) {
                Some(true) => matched.push(candidate),
                Some(false) => {}
                None => unproven.push(candidate),
            }
        }
        let hashed = !unproven.is_empty();
        let lookup = if hashed {
            CacheResult::Miss
        } else {
            CacheResult::Hit
        };
        self.metrics
            .cache
            .get_or_create(&CacheLabels { result: lookup })
            .inc();
        if hashed {
            matched.extend(self.hash_unproven(token, unproven).await?);
        }
        Ok((matched, hashed))
    }

    /// The AccessToken `namespace/name` from the watch; `None` if absent or undecodable (its
    /// TechnicalUser then has no trusted owner, so only that token is denied).
    fn access_token(&self, namespace: &str, name: &str) -> Option<Arc<AccessToken>> {
        self.tokens.get(namespace, name).map(Arc::new)
    }

    /// Everything but the secret, for one user holding the token id.
    fn state_of(&self, user: &IndexedUser, id: &str, now: Timestamp) -> Result<Candidate, Denial> {
        let credential = user
            .spec
            .credentials
            .iter()
            .find(|c| c.id == id)
            .ok_or(Denial::UnknownId)?;
        let identity = decide::check_state(
            user,
            credential,
            |ns, name| self.access_token(ns, name),
            |name| self.organizations.get(&ObjectRef::new(name)),
            |name| self.groups.get(&ObjectRef::new(name)),
            now,
        )?;
        decide::check_hash_params(credential, &self.config.hash_limits)?;
        Ok(Candidate {
            uid: user.uid.clone(),
            credential: credential.clone(),
            identity,
        })
    }

    /// argon2id for candidates whose secret is not proven yet: one check at a time per id
    /// (first come, first served), within `hash_wait` in all. The check runs on its own task,
    /// so the id's gate is held until argon2 has finished even if this request stops waiting;
    /// a check whose requester has already given up is skipped, so a queue of abandoned
    /// forgeries drains without hashing.
    async fn hash_unproven(
        &self,
        token: &Token,
        unproven: Vec<Candidate>,
    ) -> Result<Vec<Candidate>, &'static str> {
        let deadline = Instant::now() + self.config.hash_wait;
        let (gates, hasher, cache, metrics, limits, token) = (
            self.gates.clone(),
            self.hasher.clone(),
            self.cache.clone(),
            self.metrics.clone(),
            self.config.hash_limits,
            token.clone(),
        );
        let work = tokio::spawn(async move {
            let _gate = gates.enter(token.id().as_str()).await;
            if Instant::now() >= deadline {
                return Err(OVERLOADED);
            }
            let mut matched = Vec::new();
            for candidate in unproven {
                let phc = &candidate.credential.hash;
                // Another request for this id may have proven its secret while this one waited.
                let ok = match cache.check(&token, phc) {
                    Some(known) => known,
                    None => {
                        let ok = hasher.verify_within(&token, phc, &limits).await;
                        let result = if ok {
                            Argon2Result::Match
                        } else {
                            Argon2Result::Mismatch
                        };
                        metrics
                            .argon2_verifications
                            .get_or_create(&Argon2Labels { result })
                            .inc();
                        if ok {
                            cache.remember(&token, phc, candidate.credential.not_after.0);
                        }
                        ok
                    }
                };
                if ok {
                    matched.push(candidate);
                }
            }
            Ok(matched)
        });
        let result = match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(OVERLOADED),
        };
        if result.is_err() {
            self.metrics.argon2_timeouts.inc();
        }
        result
    }
}

/// Answer when argon2 could not run in time: "could not check", never a denial.
const OVERLOADED: &str = "the verifier is overloaded; try again";

/// A user holding the presented id whose state admits it; only the secret remains to check.
struct Candidate {
    uid: String,
    credential: Credential,
    identity: Identity,
}

/// Health of one watch: whether its initial list arrived, and since when it has been failing.
struct WatchHealth {
    kind: &'static str,
    synced: AtomicBool,
    /// The first error not followed by a delivery since; `None` while healthy.
    failing_since: Mutex<Option<Instant>>,
    /// Whether the current failure was already reported as stale (logged once).
    reported_stale: AtomicBool,
}

impl WatchHealth {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            synced: AtomicBool::new(false),
            failing_since: Mutex::new(None),
            reported_stale: AtomicBool::new(false),
        }
    }

    fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The watch delivered (objects from the API server): healthy again.
    fn delivered(&self) {
        let recovered = self.failing_since.lock().expect("lock").take();
        if let Some(since) = recovered {
            self.reported_stale.store(false, Ordering::Release);
            info!(kind = self.kind, failed_for = ?since.elapsed(), "watch healthy again");
        }
    }

    /// The watch failed; the staleness clock runs from the first failure.
    fn failed(&self, error: &watcher::Error) {
        let mut since = self.failing_since.lock().expect("lock");
        if since.is_none() {
            *since = Some(Instant::now());
            warn!(kind = self.kind, %error, "watch failing; retrying with backoff");
        } else {
            debug!(kind = self.kind, %error, "watch still failing");
        }
    }

    /// Whether the watch has been failing for longer than `max_staleness`.
    fn is_stale(&self, max_staleness: Duration) -> bool {
        self.is_stale_at(max_staleness, Instant::now())
    }

    fn is_stale_at(&self, max_staleness: Duration, now: Instant) -> bool {
        let since = *self.failing_since.lock().expect("lock");
        let stale = since.is_some_and(|since| now.saturating_duration_since(since) > max_staleness);
        if stale && !self.reported_stale.swap(true, Ordering::AcqRel) {
            warn!(
                kind = self.kind,
                ?max_staleness,
                "watch failing for longer than the maximum staleness; not ready, answering \"could not check\""
            );
        }
        stale
    }
}

/// Watches end server-side after about the staleness bound, so a connection that died
/// silently (no error, no data) is noticed by the watcher's idle timeout (this + 5 s) rather
/// than after the default 295 s.
fn watch_config(max_staleness: Duration) -> watcher::Config {
    let seconds = u32::try_from(max_staleness.as_secs()).unwrap_or(u32::MAX);
    watcher::Config::default()
        .timeout(seconds.clamp(10, 290))
        .page_size(crate::api::LIST_PAGE_SIZE)
}

/// Backoff between restarts of a failed watch: long enough not to hammer a struggling API
/// server, short enough to recover well within the default staleness bound.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(8));

/// Runs a watch forever, handing every event to `apply` and keeping `health` current.
/// After an error the watch starts over, after a backoff, with a fresh list: kube's watcher
/// would resume silently, and the list succeeding is the proof that the watch works again.
async fn run_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    health: Arc<WatchHealth>,
    mut apply: impl FnMut(watcher::Event<K>),
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut backoff = RESTART_BACKOFF.0;
    loop {
        let events = watcher(api.clone(), config.clone());
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    // Current again once a list is complete (applied below) or a change
                    // arrives on a running watch; `Init` is emitted before asking the API
                    // server, and until `InitDone` the caches still hold the old state.
                    let current = matches!(
                        event,
                        watcher::Event::InitDone
                            | watcher::Event::Apply(_)
                            | watcher::Event::Delete(_)
                    );
                    apply(event);
                    if current {
                        health.synced.store(true, Ordering::Release);
                        health.delivered();
                        backoff = RESTART_BACKOFF.0;
                    }
                }
                Err(error) => {
                    health.failed(&error);
                    break;
                }
            }
        }
        let jitter = rand::random_range(0.8..1.2);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(RESTART_BACKOFF.1);
    }
}

/// A watch-fed store and the health of its watch.
fn spawn_reflector<K>(
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, Arc<WatchHealth>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, mut writer) = reflector::store();
    let health = Arc::new(WatchHealth::new(kind));
    tokio::spawn(run_watch(api, config, health.clone(), move |event| {
        writer.apply_watcher_event(&event);
    }));
    (reader, health)
}

/// A table the verifier keeps from a watch of `K`, relisted the way kube's store is: a
/// relist builds the new state while the old one serves, and replaces it when complete.
pub trait WatchFed<K> {
    /// Adds or replaces an object.
    fn apply(&self, object: K);
    /// Removes an object (or what is left of one that no longer deserializes).
    fn delete(&self, gone: &impl kube::Resource);
    /// A relist starts.
    fn relist_start(&self);
    /// An object seen during a relist.
    fn relist_apply(&self, object: K);
    /// The relist is complete.
    fn relist_done(&self);
    /// How many entries the table holds (for the log line when it first syncs).
    fn entries(&self) -> usize;
}

/// Feeds `table` from a watch of `K`, keeping `health` current. An object that no longer
/// deserializes is treated as absent: only its own tokens are denied.
async fn feed<K, T>(
    api: Api<Trimmed<K>>,
    config: watcher::Config,
    table: Arc<T>,
    health: Arc<WatchHealth>,
) where
    K: crate::api::Trim + Clone + std::fmt::Debug + Send + 'static,
    T: WatchFed<K>,
{
    let kind = health.kind;
    let mut synced = false;
    run_watch(api, config, health, |event| match event {
        watcher::Event::Apply(Trimmed(Ok(object))) => table.apply(object),
        watcher::Event::Apply(gone) | watcher::Event::Delete(gone) => table.delete(&gone),
        watcher::Event::Init => table.relist_start(),
        watcher::Event::InitApply(Trimmed(Ok(object))) => table.relist_apply(object),
        watcher::Event::InitApply(Trimmed(Err(_))) => {}
        watcher::Event::InitDone => {
            table.relist_done();
            if !std::mem::replace(&mut synced, true) {
                info!(kind, entries = table.entries(), "verifier cache synced");
            }
        }
    })
    .await;
}

#[cfg(test)]
mod watch_health_tests {
    use super::*;

    fn an_error() -> watcher::Error {
        watcher::Error::NoResourceVersion
    }

    const BOUND: Duration = Duration::from_secs(30);

    #[test]
    fn a_watch_is_stale_only_after_failing_for_longer_than_the_bound() {
        let health = WatchHealth::new("Test");
        let later = Instant::now() + BOUND * 2;
        assert!(!health.is_stale_at(BOUND, later), "healthy until an error");
        health.failed(&an_error());
        assert!(!health.is_stale_at(BOUND, Instant::now()));
        assert!(health.is_stale_at(BOUND, later));
    }

    #[test]
    fn the_staleness_clock_runs_from_the_first_error_and_stops_on_delivery() {
        let health = WatchHealth::new("Test");
        health.failed(&an_error());
        let first = Instant::now();
        // A later error does not restart the clock.
        health.failed(&an_error());
        assert!(health.is_stale_at(BOUND, first + BOUND * 2));
        health.delivered();
        assert!(!health.is_stale_at(BOUND, first + BOUND * 2));
        assert!(!health.is_synced(), "only InitDone marks a watch synced");
    }
}
