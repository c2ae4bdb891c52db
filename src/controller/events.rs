//! Events (`events.k8s.io/v1`), published as kube's `Recorder` publishes them, with a cache
//! that stays small and cheap (issue 22). The same Event again within 6 minutes (the same
//! type, action and reason about the same object reference) continues the first one as a
//! series (`series.count`) instead of creating another. kube's `Recorder` keeps each Event
//! whole for those 6 minutes and scans all of them on every publish: at 100,000 issued
//! tokens that is about 2 KiB and 100,000 comparisons per Event. This keeps, per Event,
//! a keyed hash of its series key, its name and count, and expires them oldest first.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, Hash, Hasher},
    sync::Mutex,
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event as K8sEvent},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::events::EventType,
};

/// How long an Event can be continued as a series: kube's `Recorder` uses the same window.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// Publishes the operator's Events.
pub struct Publisher {
    client: Client,
    /// `reportingController`.
    controller: String,
    /// `reportingInstance` (the pod's name; the controller's name without one).
    instance: String,
    sent: Mutex<Sent>,
}

/// One Event to publish.
pub struct Note<'a> {
    pub type_: EventType,
    pub reason: &'a str,
    pub action: &'a str,
    pub note: String,
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: Option<&str>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or(controller).to_string(),
            sent: Mutex::default(),
        }
    }

    /// Publishes `event` about the object `regarding` refers to: a new Event, or the next
    /// of a series if the same one was published within the window.
    pub async fn publish(&self, regarding: &ObjectReference, event: Note<'_>) -> kube::Result<()> {
        let now = Timestamp::now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let (key, continued) = {
            let mut sent = self.sent.lock().expect("lock");
            let key = sent.key(regarding, &event);
            (key, sent.continued(key, now))
        };
        if let Some((name, count)) = continued {
            let series = serde_json::json!({
                "series": {"count": count, "lastObservedTime": MicroTime(now)}
            });
            let patched =
                (events.patch(&name, &PatchParams::default(), &Patch::Merge(&series))).await;
            match patched {
                Ok(_) => {
                    self.sent
                        .lock()
                        .expect("lock")
                        .record(key, name, count, now);
                    return Ok(());
                }
                // Gone (its time to live, or deleted): the Event is published anew.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let created = events
            .create(
                &PostParams::default(),
                &self.new_event(regarding, event, now),
            )
            .await?;
        let name = created.metadata.name.unwrap_or_default();
        self.sent.lock().expect("lock").record(key, name, 1, now);
        Ok(())
    }

    /// A new Event, as kube's `Recorder` writes it.
    fn new_event(&self, regarding: &ObjectReference, event: Note<'_>, now: Timestamp) -> K8sEvent {
        let about = regarding.name.as_deref().unwrap_or(&self.controller);
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{about}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(event.action.to_string()),
            reason: Some(event.reason.to_string()),
            note: Some(event.note),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(type_name(event.type_).to_string()),
            ..K8sEvent::default()
        }
    }
}

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// The Events published within the window, by series key.
#[derive(Default)]
struct Sent {
    by_key: HashMap<u64, Series>,
    /// Each publish's time and key, oldest first: expiry pops from the front.
    order: VecDeque<(Timestamp, u64)>,
    keys: std::hash::RandomState,
}

/// A published Event that can still be continued.
struct Series {
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

impl Sent {
    /// The series key of `event` about `regarding`: what kube's `Recorder` compares (type,
    /// action, reason and the whole object reference, resourceVersion included), hashed with
    /// a key of this process's (two keys colliding is a 2^-64 chance per pair; it would only
    /// make one Event count as the other's repeat).
    fn key(&self, regarding: &ObjectReference, event: &Note<'_>) -> u64 {
        let mut hasher = self.keys.build_hasher();
        (type_name(event.type_), event.action, event.reason).hash(&mut hasher);
        let r = regarding;
        let reference = (&r.api_version, &r.kind, &r.name, &r.namespace, &r.uid);
        (reference, &r.resource_version, &r.field_path).hash(&mut hasher);
        hasher.finish()
    }

    /// Forgets what left the window; then the name and next count of `key`'s series, if any.
    fn continued(&mut self, key: u64, now: Timestamp) -> Option<(String, i32)> {
        while let Some(&(at, oldest)) = self.order.front() {
            if at + SERIES_WINDOW > now {
                break;
            }
            self.order.pop_front();
            // A series continued since has a later entry in `order`: it stays.
            if self.by_key.get(&oldest).is_some_and(|s| s.last <= at) {
                self.by_key.remove(&oldest);
            }
        }
        let series = self.by_key.get(&key)?;
        Some((series.name.to_string(), series.count + 1))
    }

    fn record(&mut self, key: u64, name: String, count: i32, now: Timestamp) {
        let name = name.into_boxed_str();
        self.by_key.insert(
            key,
            Series {
                name,
                count,
                last: now,
            },
        );
        self.order.push_back((now, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about(name: &str, version: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("AccessToken".into()),
            name: Some(name.into()),
            namespace: Some("acme".into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some(version.into()),
            ..ObjectReference::default()
        }
    }

    fn issued() -> Note<'static> {
        Note {
            type_: EventType::Normal,
            reason: "TokenIssued",
            action: "Issue",
            note: String::new(),
        }
    }

    #[test]
    fn the_same_event_continues_its_series_within_the_window_and_not_after() {
        let mut sent = Sent::default();
        let t0 = Timestamp::UNIX_EPOCH;
        let key = sent.key(&about("ci", "1"), &issued());
        assert_eq!(sent.continued(key, t0), None, "a first Event is new");
        sent.record(key, "ci.1".into(), 1, t0);
        let t1 = t0 + SignedDuration::from_mins(5);
        assert_eq!(sent.continued(key, t1), Some(("ci.1".into(), 2)));
        sent.record(key, "ci.1".into(), 2, t1);
        // Six minutes after the first, but not after the second: the series goes on.
        let t2 = t0 + SignedDuration::from_mins(7);
        assert_eq!(sent.continued(key, t2), Some(("ci.1".into(), 3)));
        // Six minutes after the last: a new Event, and the entry is gone.
        assert_eq!(sent.continued(key, t1 + SERIES_WINDOW), None);
        assert!(sent.by_key.is_empty() && sent.order.is_empty());
    }

    #[test]
    fn another_object_version_reason_or_type_is_another_event() {
        let sent = Sent::default();
        let key = sent.key(&about("ci", "1"), &issued());
        assert_eq!(key, sent.key(&about("ci", "1"), &issued()));
        assert_ne!(key, sent.key(&about("cd", "1"), &issued()));
        assert_ne!(key, sent.key(&about("ci", "2"), &issued()));
        let revoked = Note {
            reason: "TokenRevoked",
            ..issued()
        };
        assert_ne!(key, sent.key(&about("ci", "1"), &revoked));
        let warning = Note {
            type_: EventType::Warning,
            ..issued()
        };
        assert_ne!(key, sent.key(&about("ci", "1"), &warning));
    }

    #[test]
    fn expiry_keeps_only_the_window() {
        let mut sent = Sent::default();
        let t0 = Timestamp::UNIX_EPOCH;
        for i in 0..1_000 {
            let key = sent.key(&about(&format!("t{i}"), "1"), &issued());
            sent.record(key, format!("t{i}.1"), 1, t0 + SignedDuration::from_secs(i));
        }
        let later = t0 + SERIES_WINDOW + SignedDuration::from_secs(500);
        let key = sent.key(&about("t999", "1"), &issued());
        assert_eq!(sent.continued(key, later), Some(("t999.1".into(), 2)));
        assert_eq!(
            sent.by_key.len(),
            499,
            "the 501 older than the window are gone"
        );
    }
}
