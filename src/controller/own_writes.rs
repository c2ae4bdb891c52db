//! The operator's own writes of TechnicalUsers and Secrets, so that their watch events (the
//! echo of a write made by a reconcile that already went on with the result) do not start
//! another reconcile that can only read everything again and find nothing to do. Any other
//! change of a child (a tenant editing the Secret, a deletion, a relist) still passes: a
//! write by anyone else has another resourceVersion.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, runtime::watcher};

/// How many of the operator's own writes of one child may await their echo at once: issuing
/// writes a TechnicalUser twice in a row (the staged credential, then the verified-Secret
/// record), so the first echo often arrives after the second write.
const PENDING_PER_CHILD: usize = 4;

/// The resourceVersions of the operator's latest writes of each child, by uid, until their
/// echoes arrive (oldest first, at most [`PENDING_PER_CHILD`]).
#[derive(Debug, Default)]
pub struct OwnWrites(Mutex<HashMap<String, VecDeque<String>>>);

impl OwnWrites {
    /// Notes a write the operator made, as the API server returned it.
    pub fn wrote(&self, meta: &ObjectMeta) {
        if let (Some(uid), Some(version)) = (&meta.uid, &meta.resource_version) {
            let mut writes = self.0.lock().expect("lock");
            let pending = writes.entry(uid.clone()).or_default();
            if pending.len() == PENDING_PER_CHILD {
                pending.pop_front();
            }
            pending.push_back(version.clone());
        }
    }

    /// Whether a watched state of a child is the echo of one of the operator's pending
    /// writes of it. Events of one object arrive in order, so that write and the ones noted
    /// before it are settled; any other state (someone else's write) forgets them all.
    pub fn is_echo(&self, meta: &ObjectMeta) -> bool {
        let Some(uid) = &meta.uid else {
            return false;
        };
        let mut writes = self.0.lock().expect("lock");
        let Some(pending) = writes.get_mut(uid) else {
            return false;
        };
        let position = meta
            .resource_version
            .as_ref()
            .and_then(|version| pending.iter().position(|v| v == version));
        match position {
            Some(at) => {
                pending.drain(..=at);
                if pending.is_empty() {
                    writes.remove(uid);
                }
                true
            }
            None => {
                writes.remove(uid);
                false
            }
        }
    }

    /// The children of a watch event that must trigger a reconcile: all but echoes of our
    /// own writes (deletions and relisted objects always pass).
    pub fn triggers<K: Resource>(&self, event: watcher::Event<K>) -> Vec<K> {
        use watcher::Event;
        match event {
            Event::Apply(child) if self.is_echo(child.meta()) => Vec::new(),
            Event::Delete(child) => {
                // Gone: nothing of it can echo any more (keeps the map to live children).
                if let Some(uid) = &child.meta().uid {
                    self.0.lock().expect("lock").remove(uid);
                }
                vec![child]
            }
            Event::Apply(child) | Event::InitApply(child) => vec![child],
            Event::Init | Event::InitDone => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::access_token::verified_secret::tests::secret;

    #[test]
    fn only_the_echo_of_our_last_write_is_held_back() {
        use watcher::Event;
        let own = OwnWrites::default();
        own.wrote(&secret("a", "10").metadata);
        assert!(own.triggers(Event::Apply(secret("a", "10"))).is_empty());
        // A tenant's edit after ours: another version, so it passes, and so does what follows.
        assert_eq!(own.triggers(Event::Apply(secret("a", "11"))).len(), 1);
        assert_eq!(own.triggers(Event::Apply(secret("a", "10"))).len(), 1);

        // Someone else wrote before our echo arrived: theirs passes and ours is forgotten.
        own.wrote(&secret("a", "20").metadata);
        assert_eq!(own.triggers(Event::Apply(secret("a", "19"))).len(), 1);
        assert_eq!(own.triggers(Event::Apply(secret("a", "20"))).len(), 1);

        // Two writes in a row (staged credential, then the record): both echoes are ours,
        // even when the first arrives after the second write.
        own.wrote(&secret("e", "50").metadata);
        own.wrote(&secret("e", "52").metadata);
        assert!(own.triggers(Event::Apply(secret("e", "50"))).is_empty());
        assert!(own.triggers(Event::Apply(secret("e", "52"))).is_empty());
        assert_eq!(own.triggers(Event::Apply(secret("e", "52"))).len(), 1);
        // A write by someone else between two of ours passes, and so does what follows.
        own.wrote(&secret("f", "60").metadata);
        own.wrote(&secret("f", "62").metadata);
        assert_eq!(own.triggers(Event::Apply(secret("f", "61"))).len(), 1);
        assert_eq!(own.triggers(Event::Apply(secret("f", "62"))).len(), 1);

        // Deletions and relists always pass; other children are not affected.
        own.wrote(&secret("b", "30").metadata);
        assert_eq!(own.triggers(Event::Delete(secret("b", "30"))).len(), 1);
        own.wrote(&secret("c", "40").metadata);
        assert_eq!(own.triggers(Event::InitApply(secret("c", "40"))).len(), 1);
        assert_eq!(own.triggers(Event::Apply(secret("d", "40"))).len(), 1);
    }
}
