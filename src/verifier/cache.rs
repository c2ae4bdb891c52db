//! Cache of argon2id results, keyed by an HMAC of the token under a per-process random key:
//! memory never holds a token or anything that could be checked against one offline.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::{TryRngCore, rngs::OsRng};
use sha2::Sha256;

use crate::token::Token;

/// Bounded (size and age) cache of "does this token match this hash". Capacity 0 disables it.
pub struct HashResultCache {
    key: [u8; 32],
    results: Option<moka::sync::Cache<[u8; 32], bool>>,
}

impl std::fmt::Debug for HashResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashResultCache")
            .field("entries", &self.results.as_ref().map(|r| r.entry_count()))
            .finish_non_exhaustive() // never the key
    }
}

impl HashResultCache {
    /// At most `capacity` results, each kept at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Result<Self, rand::rand_core::OsError> {
        let mut key = [0u8; 32];
        OsRng.try_fill_bytes(&mut key)?;
        Ok(Self {
            key,
            results: (capacity > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build()
            }),
        })
    }

    /// The cache key: HMAC-SHA256 over the token and the PHC string it was checked against,
    /// so a changed credential never reuses an old answer.
    fn key(&self, token: &Token, phc: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length works");
        mac.update(token.expose_secret().as_bytes());
        mac.update(&[0]);
        mac.update(phc.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The cached result, if any.
    pub fn get(&self, token: &Token, phc: &str) -> Option<bool> {
        self.results.as_ref()?.get(&self.key(token, phc))
    }

    /// Remembers a result.
    pub fn insert(&self, token: &Token, phc: &str, matches: bool) {
        if let Some(results) = &self.results {
            results.insert(self.key(token, phc), matches);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_per_token_and_per_hash() {
        let cache = HashResultCache::new(100, Duration::from_secs(60)).unwrap();
        let (a, b) = (Token::generate(), Token::generate());
        cache.insert(&a, "$hash1", true);
        assert_eq!(cache.get(&a, "$hash1"), Some(true));
        assert_eq!(
            cache.get(&a, "$hash2"),
            None,
            "a changed credential is not answered from cache"
        );
        assert_eq!(cache.get(&b, "$hash1"), None);
        assert!(!format!("{cache:?}").contains(a.expose_secret()));
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = HashResultCache::new(0, Duration::from_secs(60)).unwrap();
        let token = Token::generate();
        cache.insert(&token, "$h", true);
        assert_eq!(cache.get(&token, "$h"), None);
    }

    #[test]
    fn two_processes_key_differently() {
        let (one, two) = (
            HashResultCache::new(1, Duration::from_secs(1)).unwrap(),
            HashResultCache::new(1, Duration::from_secs(1)).unwrap(),
        );
        let token = Token::generate();
        assert_ne!(one.key(&token, "h"), two.key(&token, "h"));
    }
}
