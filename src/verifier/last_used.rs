//! `status.lastUsedAt`: recorded on the request path in memory only, written by a
//! background task, at most once a minute per token (minute precision).

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
    pending: Mutex<HashMap<Key, Timestamp>>,
    written: Mutex<HashMap<Key, Timestamp>>,
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

    /// Writes pending uses every `interval`, forever.
    pub async fn flush_forever(&self, client: Client, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            self.flush(&client).await;
        }
    }

    async fn flush(&self, client: &Client) {
        let pending: Vec<(Key, Timestamp)> = self.pending.lock().expect("lock").drain().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let pending = used.pending.lock().unwrap().clone();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            pending[&("ns".to_string(), "a".to_string())].to_string(),
            "2026-06-01T10:15:00Z"
        );
        // Once written, the same minute is not queued again.
        used.written
            .lock()
            .unwrap()
            .extend(used.pending.lock().unwrap().drain());
        used.record(
            "ns",
            "a",
            t + k8s_openapi::jiff::SignedDuration::from_secs(35),
        );
        assert!(used.pending.lock().unwrap().is_empty());
    }
}
