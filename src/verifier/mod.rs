//! The verifier: answers "who is this token?" for kube-apiserver's webhook token
//! authentication and for any platform service, from an in-memory index fed by watches.
//!
//! Order of checks: format and checksum (no lookup, no hashing) → credential by token id →
//! state, on every request: disabled, expiry on our own clock, owning AccessToken present,
//! not being deleted, not revoked, and its namespace still admitted by its scope → argon2id
//! on a bounded blocking pool (only this result is cached, under an HMAC key). State before
//! the hash means a denied token never costs argon2 time.

mod cache;
pub mod decide;
mod index;
mod last_used;
pub mod server;

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
    Api, Client,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

pub use cache::HashResultCache;
pub use decide::{Denial, Identity};
pub use index::CredentialIndex;
pub use last_used::LastUsed;

use crate::{
    api::{AccessToken, Group, Organization, TechnicalUser},
    hasher::Hasher,
    metrics::{CacheLabels, CacheResult, Metrics, ReviewLabels},
    token::Token,
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
    /// Most argon2 results kept.
    pub cache_capacity: u64,
    /// Longest an argon2 result is kept.
    pub cache_ttl: Duration,
    /// Longest a request waits for its argon2 check (queueing included) before answering "unavailable".
    pub hash_wait: Duration,
    /// How often lastUsedAt is written.
    pub last_used_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_capacity: 100_000,
            cache_ttl: Duration::from_secs(300),
            hash_wait: Duration::from_secs(2),
            last_used_interval: Duration::from_secs(10),
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
        let Some(user) = self.index.lookup(token.id().as_str()) else {
            return Verdict::Denied(Denial::UnknownId);
        };
        let Some(credential) = user
            .spec
            .credentials
            .iter()
            .find(|c| c.id == token.id().as_str())
        else {
            return Verdict::Denied(Denial::UnknownId);
        };
        // State first: a revoked, expired or deleted token is denied without any hashing, so
        // a known (public) token id cannot be used to make the verifier burn argon2 for it.
        let now = Timestamp::now();
        let identity = match decide::check_state(
            &user,
            credential,
            |ns, name| self.tokens.get(&ObjectRef::new(name).within(ns)),
            |name| self.organizations.get(&ObjectRef::new(name)),
            |name| self.groups.get(&ObjectRef::new(name)),
            now,
        ) {
            Ok(identity) => identity,
            Err(denial) => return Verdict::Denied(denial),
        };
        let cached = self.cache.get(&token, &credential.hash);
        let lookup = if cached.is_some() {
            CacheResult::Hit
        } else {
            CacheResult::Miss
        };
        self.metrics
            .cache
            .get_or_create(&CacheLabels { result: lookup })
            .inc();
        let matches = match cached {
            Some(known) => known,
            None => match tokio::time::timeout(
                self.config.hash_wait,
                self.hasher.verify(&token, &credential.hash),
            )
            .await
            {
                Ok(matches) => {
                    self.cache.insert(&token, &credential.hash, matches);
                    matches
                }
                Err(_) => return Verdict::Unavailable("the verifier is overloaded; try again"),
            },
        };
        if !matches {
            return Verdict::Denied(Denial::WrongSecret);
        }
        self.last_used
            .record(&identity.namespace, &identity.name, now);
        Verdict::Authenticated(Box::new(identity))
    }
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
