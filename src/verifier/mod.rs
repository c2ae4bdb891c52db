//! The verifier: answers "who is this token?" for kube-apiserver's webhook token
//! authentication and for any platform service, from an in-memory index fed by watches.
//!
//! Order of checks: format and checksum (no lookup, no hashing) → credential by token id →
//! state, on every request: disabled, expiry on our own clock, owning AccessToken present,
//! not being deleted, not revoked, and its namespace still admitted by its scope → argon2id
//! on a bounded blocking pool (only this result is cached, under an HMAC key). State before
//! the hash means a denied token never costs argon2 time.
//!
//! A wrong secret for a public token id costs bounded work: once a secret has matched a
//! credential, any other is refused by a digest compare (cache.rs); before that, each id gets
//! one argon2 at a time and a few misses per window (budget.rs), then "could not check".
//! Stored PHC parameters above the configured limits are refused without hashing.

mod budget;
mod cache;
pub mod decide;
mod index;
mod last_used;
pub mod server;
#[cfg(test)]
mod tests;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

pub use budget::MissBudget;
pub use cache::HashResultCache;
pub use decide::{Denial, Identity};
pub use index::CredentialIndex;
pub use last_used::LastUsed;

use crate::{
    api::{AccessToken, Credential, Group, Organization, TechnicalUser},
    hasher::Hasher,
    metrics::{Argon2Labels, Argon2Result, CacheLabels, CacheResult, Metrics, ReviewLabels},
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
    /// How long a proven secret is remembered without being presented again.
    pub cache_ttl: Duration,
    /// Longest a request waits for its argon2 check (queueing included) before answering "unavailable".
    pub hash_wait: Duration,
    /// How often lastUsedAt is written.
    pub last_used_interval: Duration,
    /// Largest argon2id parameters accepted in a stored PHC string.
    pub hash_limits: HashLimits,
    /// Wrong secrets per token id that may cost an argon2 check, per window.
    pub miss_budget: MissBudget,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_capacity: 100_000,
            cache_ttl: Duration::from_secs(300),
            hash_wait: Duration::from_secs(2),
            last_used_interval: Duration::from_secs(10),
            hash_limits: HashLimits::default(),
            miss_budget: MissBudget::default(),
        }
    }
}

/// The verifier's state: watch-fed caches and the argon2 result cache.
pub struct Verifier {
    index: Arc<CredentialIndex>,
    /// One flag per watch: TechnicalUsers, AccessTokens, Organizations, Groups.
    synced: [Arc<AtomicBool>; 4],
    tokens: Store<AccessToken>,
    organizations: Store<Organization>,
    groups: Store<Group>,
    hasher: Hasher,
    cache: HashResultCache,
    gates: Arc<budget::IdGates>,
    last_used: Arc<LastUsed>,
    config: Config,
    metrics: Arc<Metrics>,
}

impl Verifier {
    /// Starts the watches (as background tasks) and returns the verifier.
    pub fn start(
        client: Client,
        hasher: Hasher,
        config: Config,
        metrics: Arc<Metrics>,
    ) -> crate::Result<Arc<Self>> {
        let index = Arc::new(CredentialIndex::default());
        let index_synced = Arc::new(AtomicBool::new(false));
        tokio::spawn(feed_index(
            Api::<TechnicalUser>::all(client.clone()),
            index.clone(),
            index_synced.clone(),
        ));
        let (tokens, tokens_synced) = spawn_reflector(Api::<AccessToken>::all(client.clone()));
        let (organizations, organizations_synced) =
            spawn_reflector(Api::<Organization>::all(client.clone()));
        let (groups, groups_synced) = spawn_reflector(Api::<Group>::all(client.clone()));
        let last_used = Arc::new(LastUsed::default());
        {
            let (last_used, client, interval) =
                (last_used.clone(), client.clone(), config.last_used_interval);
            tokio::spawn(async move { last_used.flush_forever(client, interval).await });
        }
        let cache = HashResultCache::new(config.cache_capacity, config.cache_ttl)
            .map_err(|_| crate::Error::Randomness)?;
        let gates = Arc::new(budget::IdGates::new(
            config.miss_budget,
            config.cache_capacity.max(10_000),
        ));
        let synced = [
            index_synced,
            tokens_synced,
            organizations_synced,
            groups_synced,
        ];
        Ok(Arc::new(Self {
            metrics,
            index,
            synced,
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
    pub fn is_ready(&self) -> bool {
        self.synced
            .iter()
            .all(|synced| synced.load(Ordering::Acquire))
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

    /// The metrics this verifier records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    async fn decide(&self, presented: &str) -> Verdict {
        // Format and checksum first: garbage costs no lookup and no hashing.
        let Ok(token) = Token::parse(presented) else {
            return Verdict::Denied(Denial::Malformed);
        };
        if !self.is_ready() {
            return Verdict::Unavailable("the verifier has not synced its caches yet");
        }
        let id = token.id().as_str();
        let users = self.index.lookup(id);
        if users.is_empty() {
            return Verdict::Denied(Denial::UnknownId);
        }
        // State first, for every user holding the id (normally one): a revoked, expired,
        // deleted or untrusted token, or a hash over the limits, is denied without hashing.
        let now = Timestamp::now();
        let mut denial = None;
        let mut admitted = Vec::new();
        for user in &users {
            match self.state_of(user, id, now) {
                Ok(candidate) => admitted.push(candidate),
                Err(reason) => denial = Some(decide::preferred(denial, reason)),
            }
        }
        if admitted.is_empty() {
            return Verdict::Denied(denial.unwrap_or(Denial::UnknownId));
        }
        // Secrets already proven by argon2: a constant-time digest compare decides.
        let mut matched = Vec::new();
        let mut unproven = Vec::new();
        for candidate in admitted {
            match self.cache.check(&token, &candidate.credential.hash) {
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
            match self.hash_within_budget(&token, unproven).await {
                Ok(more) => matched.extend(more),
                Err(reason) => return Verdict::Unavailable(reason),
            }
        }
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
                |ns, name| self.tokens.get(&ObjectRef::new(name).within(ns)),
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

    /// Everything but the secret, for one user holding the token id.
    fn state_of(
        &self,
        user: &TechnicalUser,
        id: &str,
        now: Timestamp,
    ) -> Result<Candidate, Denial> {
        let credential = user
            .spec
            .credentials
            .iter()
            .find(|c| c.id == id)
            .ok_or(Denial::UnknownId)?;
        let identity = decide::check_state(
            user,
            credential,
            |ns, name| self.tokens.get(&ObjectRef::new(name).within(ns)),
            |name| self.organizations.get(&ObjectRef::new(name)),
            |name| self.groups.get(&ObjectRef::new(name)),
            now,
        )?;
        decide::check_hash_params(credential, &self.config.hash_limits)?;
        Ok(Candidate {
            uid: user.uid().unwrap_or_default(),
            credential: credential.clone(),
            identity,
        })
    }

    /// argon2id for candidates whose secret is not proven yet, within the id's budget: one
    /// check at a time per id, a bounded number of misses per window, and `hash_wait` in
    /// all. The check runs to its end even if this request stops waiting, so the gate stays
    /// held and a miss is always counted.
    async fn hash_within_budget(
        &self,
        token: &Token,
        unproven: Vec<Candidate>,
    ) -> Result<Vec<Candidate>, &'static str> {
        let (gates, hasher, cache, metrics, limits, token) = (
            self.gates.clone(),
            self.hasher.clone(),
            self.cache.clone(),
            self.metrics.clone(),
            self.config.hash_limits,
            token.clone(),
        );
        let work = tokio::spawn(async move {
            let mut misses = gates.enter(token.id().as_str()).await;
            let mut matched = Vec::new();
            for candidate in unproven {
                // Another request for this id may have proven its secret while this one waited.
                match cache.check(&token, &candidate.credential.hash) {
                    Some(true) => matched.push(candidate),
                    Some(false) => {}
                    None if !misses.allows(&gates.budget(), std::time::Instant::now()) => {
                        metrics.argon2_budget_refusals.inc();
                        return Err(BUDGET_SPENT);
                    }
                    None => {
                        let ok = hasher
                            .verify_within(&token, &candidate.credential.hash, &limits)
                            .await;
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
                            cache.remember(&token, &candidate.credential.hash);
                            matched.push(candidate);
                        } else {
                            misses.record_miss();
                        }
                    }
                }
            }
            Ok(matched)
        });
        match tokio::time::timeout(self.config.hash_wait, work).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err("the verifier is overloaded; try again"),
        }
    }
}

/// Answer when a token id's argon2 budget is spent: "could not check", never a denial, since
/// the secret may be the right one.
const BUDGET_SPENT: &str = "too many wrong secrets for this token id; try again later";

/// A user holding the presented id whose state admits it; only the secret remains to check.
struct Candidate {
    uid: String,
    credential: Credential,
    identity: Identity,
}

/// A watch-fed store, and a flag raised once it holds the initial list.
fn spawn_reflector<K>(api: Api<K>) -> (Store<K>, Arc<AtomicBool>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let synced = Arc::new(AtomicBool::new(false));
    let flag = synced.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => flag.store(true, Ordering::Release),
                Ok(_) => {}
                Err(error) => {
                    warn!(kind = %K::kind(&()), %error, "watch error; retrying with backoff")
                }
            }
        }
    });
    (reader, synced)
}

async fn feed_index(api: Api<TechnicalUser>, index: Arc<CredentialIndex>, synced: Arc<AtomicBool>) {
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(user)) => index.apply(user),
            Ok(watcher::Event::Delete(user)) => index.delete(&user),
            Ok(watcher::Event::Init) => index.relist_start(),
            Ok(watcher::Event::InitApply(user)) => index.relist_apply(user),
            Ok(watcher::Event::InitDone) => {
                index.relist_done();
                if !synced.swap(true, Ordering::AcqRel) {
                    info!(credentials = index.len(), "verifier index synced");
                }
            }
            Err(error) => warn!(%error, "TechnicalUser watch error; retrying with backoff"),
        }
    }
}
