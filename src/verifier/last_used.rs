//! `status.lastUsedAt`: recorded on the request path in memory only, written by a
//! background task, at most once a minute per token (minute precision) and at most
//! `writes_per_second` in all: with more busy tokens than that allows each a minute, the
//! tokens waiting longest are written first, so each is written at least every
//! `busy tokens / writes_per_second` seconds (100,000 busy tokens at 200/s: every 500 s).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tracing::{debug, warn};

use crate::api::{AccessToken, wellknown::VERIFIER_MANAGER};

type Key = (String, String);

/// Pending and written last-use minutes per AccessToken.
#[derive(Default)]
pub struct LastUsed {
    pending: Mutex<Pending>,
    written: Mutex<HashMap<Key, Timestamp>>,
}

/// Uses not written yet: the latest minute of each token, and when it began to wait (a
/// sequence number, kept while newer uses replace the minute) so the longest waiting go first.
#[derive(Default)]
struct Pending {
    uses: HashMap<Key, (Timestamp, u64)>,
    next: u64,
}

impl Pending {
    fn insert(&mut self, key: Key, minute: Timestamp) {
        let next = &mut self.next;
        let entry = self.uses.entry(key).or_insert_with(|| {
            *next += 1;
            (minute, *next)
        });
        entry.0 = minute;
    }

    /// Takes at most `budget` uses, the longest waiting first; the rest keep waiting.
    fn take(&mut self, budget: usize) -> Vec<(Key, Timestamp)> {
        if self.uses.len() > budget {
            let mut waiting: Vec<(u64, Key)> = self
                .uses
                .iter()
                .map(|(k, (_, seq))| (*seq, k.clone()))
                .collect();
            waiting.select_nth_unstable(budget);
            waiting.truncate(budget);
            return waiting
                .into_iter()
                .filter_map(|(_, key)| self.uses.remove_entry(&key))
                .map(|(key, (minute, _))| (key, minute))
                .collect();
        }
        self.uses
            .drain()
            .map(|(key, (minute, _))| (key, minute))
            .collect()
    }
}

impl LastUsed {
    /// Notes a use now; cheap, never blocks on the API server.
    pub fn record(&self, namespace: &str, name: &str, now: Timestamp) {
        let seconds = now.as_second();
        let minute = Timestamp::from_second(seconds - seconds.rem_euclid(60)).unwrap_or(now);
        let key = (namespace.to_string(), name.to_string());
        if self.written.lock().expect("lock").get(&key) == Some(&minute) {
            return;
        }
        self.pending.lock().expect("lock").insert(key, minute);
    }

    /// Writes pending uses every `interval`, at most `writes_per_second` on average, forever.
    pub async fn flush_forever(&self, client: Client, interval: Duration, writes_per_second: u32) {
        let budget = write_budget(interval, writes_per_second);
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            self.flush(&client, budget).await;
        }
    }

    async fn flush(&self, client: &Client, budget: usize) {
        let pending = self.pending.lock().expect("lock").take(budget);
        // Only the current minute's writes dedupe anything; older entries would only grow.
        let recent = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_mins(2);
        self.written
            .lock()
            .expect("lock")
            .retain(|_, minute| *minute > recent);
        for ((namespace, name), minute) in pending {
            let api: Api<AccessToken> = Api::namespaced(client.clone(), &namespace);
            let patch = json!({
                "apiVersion": "iam.accesstoken.io/v1alpha1",
                "kind": "AccessToken",
                "status": {"lastUsedAt": minute.to_string()},
            });
            match api
                .patch_status(
                    &name,
                    &PatchParams::apply(VERIFIER_MANAGER).force(),
                    &Patch::Apply(patch),
                )
                .await
            {
                Ok(_) => {
                    debug!(%namespace, %name, %minute, "lastUsedAt written");
                    self.written
                        .lock()
                        .expect("lock")
                        .insert((namespace, name), minute);
                }
                Err(error) => warn!(%namespace, %name, %error, "could not write lastUsedAt"),
            }
        }
    }
}

/// How many writes one flush may make: `writes_per_second` over the interval, at least one.
fn write_budget(interval: Duration, writes_per_second: u32) -> usize {
    ((interval.as_secs_f64() * f64::from(writes_per_second)) as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_over_budget_writes_the_longest_waiting_and_keeps_the_rest() {
        let minute: Timestamp = "2026-06-01T10:15:00Z".parse().unwrap();
        let later = minute + k8s_openapi::jiff::SignedDuration::from_mins(1);
        let key = |name: &str| ("ns".to_string(), name.to_string());
        let mut pending = Pending::default();
        for name in ["a", "b", "c", "d"] {
            pending.insert(key(name), minute);
        }
        // A newer use of "a" updates its minute but keeps its place in the queue.
        pending.insert(key("a"), later);
        let mut first = pending.take(2);
        first.sort();
        assert_eq!(first, vec![(key("a"), later), (key("b"), minute)]);
        pending.insert(key("e"), later);
        let mut rest = pending.take(10);
        rest.sort();
        assert_eq!(
            rest,
            vec![(key("c"), minute), (key("d"), minute), (key("e"), later)]
        );
        assert!(pending.take(10).is_empty());
    }

    #[test]
    fn the_budget_spreads_the_rate_over_the_interval() {
        assert_eq!(write_budget(Duration::from_secs(10), 200), 2000);
        assert_eq!(write_budget(Duration::from_millis(100), 200), 20);
        assert_eq!(write_budget(Duration::from_millis(100), 1), 1, "never zero");
    }

    #[test]
    fn uses_within_a_minute_collapse_into_one_pending_write() {
        let used = LastUsed::default();
        let t: Timestamp = "2026-06-01T10:15:20Z".parse().unwrap();
        used.record("ns", "a", t);
        used.record(
            "ns",
            "a",
            t + k8s_openapi::jiff::SignedDuration::from_secs(30),
        );
        let pending = used.pending.lock().unwrap().uses.clone();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            pending[&("ns".to_string(), "a".to_string())].0.to_string(),
            "2026-06-01T10:15:00Z"
        );
        // Once written, the same minute is not queued again.
        let taken = used.pending.lock().unwrap().take(10);
        used.written.lock().unwrap().extend(taken);
        used.record(
            "ns",
            "a",
            t + k8s_openapi::jiff::SignedDuration::from_secs(35),
        );
        assert!(used.pending.lock().unwrap().uses.is_empty());
    }
}
