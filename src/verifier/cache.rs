//! Secrets already proven by argon2id, remembered as keyed digests under a per-process random
//! key: memory never holds a token or anything that could be checked against one offline.
//!
//! Only successes are remembered. One credential (token id + PHC string) has exactly one
//! secret, so once a secret has matched, any other secret presented for that credential is
//! refused by a constant-time compare of digests, without argon2: knowing a token id (they
//! are public) buys no hashing for a token that has been used. A proof is kept until its
//! credential's `notAfter` (a credential is never accepted later), however long the token
//! goes unused: nightly jobs and break-glass tokens are as well guarded as busy ones.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use hmac::{Hmac, KeyInit, Mac};
use rand::{TryRng, rngs::SysRng};
use sha2::Sha256;

use crate::token::Token;

/// Bounded map from credential to the digest of the secret that matched it, each entry kept
/// until its credential's `notAfter`. Capacity 0 disables it (every request then runs argon2).
#[derive(Clone)]
pub struct HashResultCache {
    key: [u8; 32],
    verified: Option<moka::sync::Cache<[u8; 32], Proof>>,
}

/// The digest of a proven secret and when its credential stops being accepted.
#[derive(Clone)]
struct Proof {
    digest: [u8; 32],
    until: Instant,
}

/// Entries expire at their credential's `notAfter`, reads or not.
struct UntilNotAfter;

impl moka::Expiry<[u8; 32], Proof> for UntilNotAfter {
    fn expire_after_create(&self, _: &[u8; 32], proof: &Proof, now: Instant) -> Option<Duration> {
        Some(proof.until.saturating_duration_since(now))
    }
}

impl std::fmt::Debug for HashResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashResultCache")
            .field("entries", &self.verified.as_ref().map(|r| r.entry_count()))
            .finish_non_exhaustive() // never the key
    }
}

impl HashResultCache {
    /// At most `capacity` credentials.
    pub fn new(capacity: u64) -> Result<Self, rand::rngs::SysError> {
        let mut key = [0u8; 32];
        SysRng.try_fill_bytes(&mut key)?;
        Ok(Self {
            key,
            verified: (capacity > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(capacity)
                    .expire_after(UntilNotAfter)
                    .build()
            }),
        })
    }

    fn mac(&self, domain: u8) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("any key length works");
        mac.update(&[domain]);
        mac
    }

    /// Which credential: HMAC over the token id and the PHC string, so a changed credential
    /// (same id, other hash) never reuses an old answer.
    fn credential_key(&self, token: &Token, phc: &str) -> [u8; 32] {
        let mut mac = self.mac(b'c');
        mac.update(token.id().as_str().as_bytes());
        mac.update(&[0]);
        mac.update(phc.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The presented token's digest for this credential (not yet finalized).
    fn token_mac(&self, token: &Token, phc: &str) -> Hmac<Sha256> {
        let mut mac = self.mac(b't');
        mac.update(token.expose_secret().as_bytes());
        mac.update(&[0]);
        mac.update(phc.as_bytes());
        mac
    }

    /// `Some(matches)` if a secret has already matched this credential (answered by a
    /// constant-time digest compare, no argon2); `None` if argon2 must decide.
    pub fn check(&self, token: &Token, phc: &str) -> Option<bool> {
        let known = self
            .verified
            .as_ref()?
            .get(&self.credential_key(token, phc))?;
        Some(
            self.token_mac(token, phc)
                .verify_slice(&known.digest)
                .is_ok(),
        )
    }

    /// Remembers that argon2id matched this token against this credential, until the
    /// credential's `not_after`.
    pub fn remember(&self, token: &Token, phc: &str, not_after: Timestamp) {
        let Some(verified) = &self.verified else {
            return;
        };
        let left = Timestamp::now().duration_until(not_after);
        let Ok(left) = Duration::try_from(left) else {
            return; // already past: the credential is refused before any lookup
        };
        let proof = Proof {
            digest: self.token_mac(token, phc).finalize().into_bytes().into(),
            until: Instant::now() + left,
        };
        verified.insert(self.credential_key(token, phc), proof);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> Timestamp {
        Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1)
    }

    /// A token with the same id as `token` and another (random) secret: a forgery.
    fn forged(token: &Token) -> Token {
        let other = Token::generate();
        let text = format!(
            "atk_{}_{}",
            token.id(),
            &other.expose_secret_part()[..crate::token::SECRET_LEN]
        );
        Token::parse(&crate::token::with_checksum(&text)).unwrap()
    }

    #[test]
    fn after_one_success_other_secrets_for_the_credential_are_refused_without_argon2() {
        let cache = HashResultCache::new(100).unwrap();
        let token = Token::generate();
        assert_eq!(
            cache.check(&token, "$hash1"),
            None,
            "unknown: argon2 decides"
        );
        cache.remember(&token, "$hash1", later());
        assert_eq!(cache.check(&token, "$hash1"), Some(true));
        let forgery = forged(&token);
        assert_eq!(forgery.id(), token.id());
        assert_eq!(cache.check(&forgery, "$hash1"), Some(false));
        assert_eq!(
            cache.check(&token, "$hash2"),
            None,
            "a changed credential is not answered from memory"
        );
        assert_eq!(cache.check(&Token::generate(), "$hash1"), None);
        assert!(!format!("{cache:?}").contains(token.expose_secret()));
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let cache = HashResultCache::new(0).unwrap();
        let token = Token::generate();
        cache.remember(&token, "$h", later());
        assert_eq!(cache.check(&token, "$h"), None);
    }

    #[test]
    fn two_processes_key_differently() {
        let (one, two) = (
            HashResultCache::new(1).unwrap(),
            HashResultCache::new(1).unwrap(),
        );
        let token = Token::generate();
        assert_ne!(
            one.credential_key(&token, "h"),
            two.credential_key(&token, "h")
        );
        assert_ne!(
            one.token_mac(&token, "h").finalize().into_bytes(),
            two.token_mac(&token, "h").finalize().into_bytes()
        );
    }

    #[test]
    fn a_credential_past_its_not_after_is_not_remembered() {
        let cache = HashResultCache::new(100).unwrap();
        let token = Token::generate();
        let past = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(1);
        cache.remember(&token, "$h", past);
        assert_eq!(cache.check(&token, "$h"), None);
    }
}
