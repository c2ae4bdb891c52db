//! Per-token-id bound on argon2 work for secrets not yet proven: at most one argon2 in flight
//! per id, and at most `misses` failed argon2 checks per id per `window`. Token ids are
//! public, so without it one id could keep the whole hashing pool busy with forged secrets.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{Mutex, OwnedMutexGuard};

/// How many wrong secrets per token id may cost an argon2 check, per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissBudget {
    /// Failed argon2 checks allowed per id and window.
    pub misses: u32,
    /// The window.
    pub window: Duration,
}

impl Default for MissBudget {
    fn default() -> Self {
        Self {
            misses: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// The misses of one id in the current window.
#[derive(Debug)]
pub struct Misses {
    window_start: Instant,
    count: u32,
}

impl Misses {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            count: 0,
        }
    }

    /// Whether one more argon2 check may run at `now` (a new window starts afresh).
    pub fn allows(&mut self, budget: &MissBudget, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= budget.window {
            *self = Self::new(now);
        }
        self.count < budget.misses
    }

    /// Counts a failed argon2 check.
    pub fn record_miss(&mut self) {
        self.count = self.count.saturating_add(1);
    }
}

/// One gate per token id that has needed argon2 recently. Only ids present in the index get
/// here, so the number of gates is bounded by the credentials in the cluster (and by capacity).
pub struct IdGates {
    gates: moka::sync::Cache<String, Arc<Mutex<Misses>>>,
    budget: MissBudget,
}

impl IdGates {
    /// Gates for up to `capacity` ids; an id's gate is dropped once idle for two windows,
    /// when its count would have restarted anyway.
    pub fn new(budget: MissBudget, capacity: u64) -> Self {
        Self {
            gates: moka::sync::Cache::builder()
                .max_capacity(capacity.max(1))
                .time_to_idle(budget.window.saturating_mul(2).max(Duration::from_secs(1)))
                .build(),
            budget,
        }
    }

    /// The budget these gates enforce.
    pub fn budget(&self) -> MissBudget {
        self.budget
    }

    /// Waits for the id's gate: held for the whole argon2 check, so at most one runs per id.
    pub async fn enter(&self, id: &str) -> OwnedMutexGuard<Misses> {
        self.gates
            .get_with(id.to_string(), || {
                Arc::new(Mutex::new(Misses::new(Instant::now())))
            })
            .lock_owned()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_bounded_per_window() {
        let budget = MissBudget {
            misses: 2,
            window: Duration::from_secs(10),
        };
        let start = Instant::now();
        let mut misses = Misses::new(start);
        for _ in 0..2 {
            assert!(misses.allows(&budget, start));
            misses.record_miss();
        }
        assert!(!misses.allows(&budget, start + Duration::from_secs(9)));
        assert!(
            misses.allows(&budget, start + Duration::from_secs(10)),
            "a new window starts afresh"
        );
    }

    #[tokio::test]
    async fn one_check_at_a_time_per_id_and_ids_are_independent() {
        use futures::FutureExt;
        let gates = IdGates::new(MissBudget::default(), 10);
        let held = gates.enter("aaaaaaaaaaaa").await;
        assert!(
            gates.enter("aaaaaaaaaaaa").now_or_never().is_none(),
            "the same id waits for the gate"
        );
        assert!(
            gates.enter("bbbbbbbbbbbb").now_or_never().is_some(),
            "another id does not wait"
        );
        drop(held);
        assert!(gates.enter("aaaaaaaaaaaa").now_or_never().is_some());
    }
}
