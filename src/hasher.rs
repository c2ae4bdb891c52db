//! Runs argon2id off the async threads, with a bound on how many run at once.
//!
//! One hash costs a fraction of a millisecond with the default parameters, but stored PHC
//! strings may carry costlier ones (up to the verifier's limits: tens of milliseconds and
//! ~19 MiB): run inline on the async runtime they would stall every other task, and
//! unbounded they would let a burst of work exhaust memory.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::token::{
    HashError, HashLimits, HashParams, Token, hash_token, verify_token, verify_token_within,
};

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
        let (token, params) = (token.clone(), self.params);
        self.run(move || hash_token(&token, &params)).await
    }

    /// Checks a token against a PHC string the operator itself wrote (within the crate's
    /// hard bounds); false for a mismatch or a malformed string.
    pub async fn verify(&self, token: &Token, phc: &str) -> bool {
        let (token, phc) = (token.clone(), phc.to_string());
        self.run(move || verify_token(&token, &phc)).await
    }

    /// Checks a token against a PHC string; false for a mismatch, a malformed string, or
    /// parameters above `limits` (those are refused before any slot is taken).
    pub async fn verify_within(&self, token: &Token, phc: &str, limits: &HashLimits) -> bool {
        if !crate::token::phc_params(phc).is_some_and(|params| limits.admits(&params)) {
            return false;
        }
        let (token, phc, limits) = (token.clone(), phc.to_string(), *limits);
        self.run(move || verify_token_within(&token, &phc, &limits))
            .await
    }

    /// Runs `work` on the blocking pool once a slot is free. The slot travels with the work,
    /// so a caller that stops waiting (a timeout) does not free it while argon2 still runs.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .expect("argon2 does not panic")
    }
}
