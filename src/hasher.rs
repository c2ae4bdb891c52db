//! Runs argon2id off the async threads, with a bound on how many run at once.
//!
//! One hash costs tens of milliseconds of CPU and ~19 MiB of memory: run inline on the async
//! runtime it would stall every other task, and unbounded it would let a burst of work
//! exhaust memory.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::token::{HashError, HashParams, Token, hash_token, verify_token};

/// A bounded pool for argon2id hashing and verification.
#[derive(Clone)]
pub struct Hasher {
    params: HashParams,
    permits: Arc<Semaphore>,
}

impl Hasher {
    /// A hasher with these parameters running at most `concurrency` hashes at a time.
    pub fn new(params: HashParams, concurrency: usize) -> Result<Self, HashError> {
        params.validate()?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Hashes a token into a PHC string.
    pub async fn hash(&self, token: &Token) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore is never closed");
        let (token, params) = (token.clone(), self.params);
        tokio::task::spawn_blocking(move || hash_token(&token, &params))
            .await
            .expect("hashing does not panic")
    }

    /// Checks a token against a PHC string; false for a mismatch or a malformed string.
    pub async fn verify(&self, token: &Token, phc: &str) -> bool {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore is never closed");
        let (token, phc) = (token.clone(), phc.to_string());
        tokio::task::spawn_blocking(move || verify_token(&token, &phc))
            .await
            .expect("verification does not panic")
    }
}
