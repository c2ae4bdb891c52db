//! One argon2 check at a time per token id. Token ids are public, so forged secrets for one id
//! must not take more than one hashing thread; they queue behind each other (first come,
//! first served) instead. There is deliberately no cap on how many wrong secrets an id may
//! cost: any cap is reached by forgeries before the owner's first request, and then refuses
//! the owner too (a lockout anyone who has seen the id could keep up). At the default cost an
//! argon2 check takes about 0.1 ms, so one id's queue drains at about 10,000 checks a second,
//! more than kube-apiserver can forward.

use std::{sync::Arc, time::Duration};

use tokio::sync::{Mutex, OwnedMutexGuard};

/// One gate per token id that has needed argon2 recently. Only ids present in the index get
/// here, so the number of gates is bounded by the credentials in the cluster (and by capacity).
pub struct IdGates {
    gates: moka::sync::Cache<String, Arc<Mutex<()>>>,
}

impl IdGates {
    /// Gates for up to `capacity` ids; an idle gate is dropped after a minute.
    pub fn new(capacity: u64) -> Self {
        Self {
            gates: moka::sync::Cache::builder()
                .max_capacity(capacity.max(1))
                .time_to_idle(Duration::from_secs(60))
                .build(),
        }
    }

    /// Waits for the id's gate: held for the whole argon2 check, so at most one runs per id.
    pub async fn enter(&self, id: &str) -> OwnedMutexGuard<()> {
        self.gates
            .get_with(id.to_string(), || Arc::new(Mutex::new(())))
            .lock_owned()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_check_at_a_time_per_id_and_ids_are_independent() {
        use futures::FutureExt;
        let gates = IdGates::new(10);
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
