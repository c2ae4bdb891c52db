//! Runs argon2id off the async threads, on a fixed set of threads of its own.
//!
//! One hash costs a fraction of a millisecond with the default parameters, but stored PHC
//! strings may carry costlier ones (up to the verifier's limits: tens of milliseconds and
//! ~19 MiB): run inline on the async runtime they would stall every other task, and
//! unbounded they would let a burst of work exhaust memory. They run on `concurrency`
//! long-lived threads rather than tokio's blocking pool, each keeping one argon2 working
//! memory ([`Workspace`]) for every hash it runs: memory is `concurrency` blocks at the
//! largest cost seen, not an allocation per hash. With 19 MiB hashes, issuing 1,000 tokens
//! took the operator to 1,080 MiB of RSS on the blocking pool (BENCHMARKS.md).

use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::{Semaphore, oneshot};

use crate::token::{
    HashError, HashLimits, HashParams, Token, Workspace, hash_token_in, verify_token_within_in,
};

/// Work for a hashing thread, in that thread's argon2 memory.
type Job = Box<dyn FnOnce(&mut Workspace) + Send>;

/// A bounded pool for argon2id hashing and verification.
#[derive(Clone)]
pub struct Hasher {
    params: HashParams,
    permits: Arc<Semaphore>,
    /// To the hashing threads; they end when the last clone of the hasher is dropped.
    jobs: mpsc::Sender<Job>,
}

impl Hasher {
    /// A hasher with these parameters running at most `concurrency` hashes at a time, on
    /// as many threads of its own.
    pub fn new(params: HashParams, concurrency: usize) -> Result<Self, HashError> {
        params.validate()?;
        let threads = concurrency.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    let mut workspace = Workspace::default();
                    loop {
                        // The lock is held only while waiting for the next job, not during it.
                        let job = queue.lock().expect("lock").recv();
                        match job {
                            Ok(job) => job(&mut workspace),
                            Err(_) => return, // every Hasher is gone
                        }
                    }
                })
                .map_err(HashError::Thread)?;
        }
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(threads)),
            jobs,
        })
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Hashes a token into a PHC string.
    pub async fn hash(&self, token: &Token) -> Result<String, HashError> {
        let (token, params) = (token.clone(), self.params);
        self.run(move |ws| hash_token_in(&token, &params, ws)).await
    }

    /// Checks a token against a PHC string the operator itself wrote (within the crate's
    /// hard bounds); false for a mismatch or a malformed string.
    pub async fn verify(&self, token: &Token, phc: &str) -> bool {
        let (token, phc) = (token.clone(), phc.to_string());
        self.run(move |ws| verify_token_within_in(&token, &phc, &HashLimits::HARD, ws))
            .await
    }

    /// Checks a token against a PHC string; false for a mismatch, a malformed string, or
    /// parameters above `limits` (those are refused before any slot is taken).
    pub async fn verify_within(&self, token: &Token, phc: &str, limits: &HashLimits) -> bool {
        if !crate::token::phc_params(phc).is_some_and(|params| limits.admits(&params)) {
            return false;
        }
        let (token, phc, limits) = (token.clone(), phc.to_string(), *limits);
        self.run(move |ws| verify_token_within_in(&token, &phc, &limits, ws))
            .await
    }

    /// Runs `work` on a hashing thread once a slot is free. The slot travels with the work,
    /// so a caller that stops waiting (a timeout) does not free it while argon2 still runs,
    /// and no more jobs wait in the queue than there are threads.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Workspace) -> T + Send + 'static,
    ) -> T {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |workspace| {
            let _permit = permit;
            // The caller may have stopped waiting: nobody to tell then.
            let _ = done.send(work(workspace));
        });
        self.jobs
            .send(job)
            .expect("hashing threads live as long as the hasher");
        result.await.expect("argon2 does not panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: HashParams = HashParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[tokio::test]
    async fn hashes_run_on_the_hashers_own_threads_and_all_complete() {
        let hasher = Hasher::new(FAST, 2).unwrap();
        let names: Vec<String> = futures::future::join_all((0..16).map(|_| {
            hasher.run(|_| {
                std::thread::current()
                    .name()
                    .unwrap_or_default()
                    .to_string()
            })
        }))
        .await;
        assert!(
            names.iter().all(|n| n == "argon2-0" || n == "argon2-1"),
            "{names:?}"
        );

        let token = Token::generate();
        let phc = hasher.hash(&token).await.unwrap();
        assert!(hasher.verify(&token, &phc).await);
        assert!(!hasher.verify(&Token::generate(), &phc).await);
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_does_not_free_a_slot_before_the_work_ends() {
        let hasher = Hasher::new(FAST, 1).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            hasher.run(move |_| wait.recv().ok()),
        )
        .await;
        assert!(abandoned.is_err(), "the first job is still running");
        assert_eq!(
            hasher.permits.available_permits(),
            0,
            "its slot is still taken"
        );
        release.send(()).unwrap();
        assert_eq!(
            hasher.run(|_| 7).await,
            7,
            "the slot comes back when the work ends"
        );
    }
}
