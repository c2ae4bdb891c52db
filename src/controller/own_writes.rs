//! The operator's own writes of TechnicalUsers and Secrets, so that their watch events (the
//! echo of a write made by a reconcile that already went on with the result) do not start
//! another reconcile that can only read everything again and find nothing to do. Any other
//! change of a child (a tenant editing the Secret, a deletion, a relist) still passes: a
//! write by anyone else has another resourceVersion.

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, runtime::watcher};

/// The resourceVersion of the operator's last write of each child, by uid, until its echo
/// arrives (one entry per child at most).
#[derive(Debug, Default)]
pub struct OwnWrites(Mutex<HashMap<String, String>>);

impl OwnWrites {
    /// Notes a write the operator made, as the API server returned it.
    pub fn wrote(&self, meta: &ObjectMeta) {
        if let (Some(uid), Some(version)) = (&meta.uid, &meta.resource_version) {
            let mut writes = self.0.lock().expect("lock");
            writes.insert(uid.clone(), version.clone());
        }
    }

    /// Whether a watched state of a child is the echo of the operator's last write of it;
    /// either way that write is forgotten (the next event is someone else's or a newer one).
    fn is_echo(&self, meta: &ObjectMeta) -> bool {
        let Some(uid) = &meta.uid else {
            return false;
        };
        let written = self.0.lock().expect("lock").remove(uid);
        written.is_some() && written == meta.resource_version
    }

    /// The children of a watch event that must trigger a reconcile: all but echoes of our
    /// own writes (deletions and relisted objects always pass).
    pub fn triggers<K: Resource>(&self, event: watcher::Event<K>) -> Vec<K> {
        use watcher::Event;
        match event {
            Event::Apply(child) if self.is_echo(child.meta()) => Vec::new(),
            Event::Apply(child) | Event::InitApply(child) | Event::Delete(child) => vec![child],
            Event::Init | Event::InitDone => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::verified::tests::secret;

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

        // Deletions and relists always pass; other children are not affected.
        own.wrote(&secret("b", "30").metadata);
        assert_eq!(own.triggers(Event::Delete(secret("b", "30"))).len(), 1);
        own.wrote(&secret("c", "40").metadata);
        assert_eq!(own.triggers(Event::InitApply(secret("c", "40"))).len(), 1);
        assert_eq!(own.triggers(Event::Apply(secret("d", "40"))).len(), 1);
    }
}
