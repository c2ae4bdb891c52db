//! The operator's own writes of TechnicalUsers and Secrets (and of its finalizer), so that
//! their watch events (the echo of a write made by a reconcile that already went on with the
//! result) do not start another reconcile that can only read everything again and find
//! nothing to do. Any other change (a tenant editing the Secret, a deletion, a relist) still
//! passes: a write by anyone else has another resourceVersion. An event that arrives while a
//! write of its object is on its way is held until the response tells which it is.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use futures::channel::mpsc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Resource, ResourceExt,
    runtime::{reflector::ObjectRef, watcher},
};

use super::access_token::Watched;

/// How many of the operator's own writes of one child may await their echo at once: issuing
/// writes a TechnicalUser twice in a row (the staged credential, then the verified-Secret
/// record), so the first echo often arrives after the second write.
const PENDING_PER_CHILD: usize = 4;

/// The operator's own writes: those whose response came (by uid, until their echoes arrive)
/// and those on their way (by kind, namespace and name, with the events held meanwhile).
#[derive(Debug)]
pub struct OwnWrites {
    state: Mutex<State>,
    /// Where a token is asked to reconcile again when an event held during a write turns out
    /// to be someone else's change.
    again: mpsc::UnboundedSender<ObjectRef<Watched>>,
}

#[derive(Debug, Default)]
struct State {
    /// The resourceVersions of the latest writes of each child, by uid, oldest first (at
    /// most [`PENDING_PER_CHILD`]).
    pending: HashMap<String, VecDeque<String>>,
    /// Writes sent and not answered yet: the events of their object that arrived meanwhile.
    /// The watch can deliver a write's echo before its response; judged then, the echo would
    /// look like someone else's change and start a reconcile for nothing.
    in_flight: HashMap<ObjectKey, Vec<ObjectMeta>>,
}

/// A kind, namespace and name: what a write is known by before its response gives a uid.
type ObjectKey = (&'static str, String, String);

fn key_of<K: Resource<DynamicType = ()>>(object: &K) -> ObjectKey {
    (
        kind_of::<K>(),
        object.namespace().unwrap_or_default(),
        object.name_any(),
    )
}

/// The kind of `K` as a static name (the operator's children and its own kind only).
fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    match &*K::kind(&()) {
        "Secret" => "Secret",
        "TechnicalUser" => "TechnicalUser",
        "AccessToken" => "AccessToken",
        _ => "other",
    }
}

/// What an event of a child is.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The echo of one of the operator's writes.
    Echo,
    /// Held until the write of its object on the way is answered.
    Held,
    /// Someone else's change (or a state the operator cannot claim).
    Change,
}

/// A write on its way: see [`OwnWrites::writing`].
#[must_use = "a write is noted when its response is passed to `wrote`"]
pub struct Writing<'a> {
    own: &'a OwnWrites,
    key: ObjectKey,
    token: ObjectRef<Watched>,
}

impl Writing<'_> {
    /// The write's response: its echo is the operator's, and so are the events held since,
    /// up to it; any other held event asks the token to reconcile again.
    pub fn wrote(self, meta: &ObjectMeta) {
        self.own.wrote(meta);
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let held = self.own.lock().in_flight.remove(&self.key);
        // Every held event is judged, in order: each echo settles the writes before it.
        let changes = (held.into_iter().flatten())
            .filter(|meta| !self.own.is_echo(meta))
            .count();
        if changes > 0 {
            let _ = self.own.again.unbounded_send(self.token.clone());
        }
    }
}

impl OwnWrites {
    /// The notes, and the stream of tokens to reconcile again (see [`Writing`]).
    pub fn new() -> (Self, mpsc::UnboundedReceiver<ObjectRef<Watched>>) {
        let (again, asked) = mpsc::unbounded();
        let own = Self {
            state: Mutex::default(),
            again,
        };
        (own, asked)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("lock")
    }

    /// Notes that the operator is about to write `K` `name` in the namespace of `token`
    /// (its AccessToken, or a child of it): until the returned write is dropped, events of
    /// that object are held, then judged against the response.
    pub fn writing<K: Resource<DynamicType = ()>>(
        &self,
        token: &impl Resource<DynamicType = ()>,
        name: &str,
    ) -> Writing<'_> {
        let namespace = token.namespace().unwrap_or_default();
        let key = (kind_of::<K>(), namespace.clone(), name.to_string());
        self.lock().in_flight.entry(key.clone()).or_default();
        Writing {
            own: self,
            key,
            token: ObjectRef::new(&token.name_any()).within(&namespace),
        }
    }

    /// Notes a write the operator made, as the API server returned it.
    pub fn wrote(&self, meta: &ObjectMeta) {
        if let (Some(uid), Some(version)) = (&meta.uid, &meta.resource_version) {
            let mut state = self.lock();
            let pending = state.pending.entry(uid.clone()).or_default();
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
        let mut state = self.lock();
        let Some(pending) = state.pending.get_mut(uid) else {
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
                    state.pending.remove(uid);
                }
                true
            }
            None => {
                state.pending.remove(uid);
                false
            }
        }
    }

    /// What a watched change of `object` is: held while a write of it is on its way, else
    /// the echo of one of ours or a change.
    fn judge<K: Resource<DynamicType = ()>>(&self, object: &K) -> Verdict {
        if let Some(held) = self.lock().in_flight.get_mut(&key_of(object)) {
            held.push(object.meta().clone());
            return Verdict::Held;
        }
        match self.is_echo(object.meta()) {
            true => Verdict::Echo,
            false => Verdict::Change,
        }
    }

    /// Whether a watched change of `object` starts a reconcile: not the echo of one of the
    /// operator's writes, nor while a write of it is on its way (see [`Writing`]).
    pub fn is_change<K: Resource<DynamicType = ()>>(&self, object: &K) -> bool {
        self.judge(object) == Verdict::Change
    }

    /// The children of a watch event that must trigger a reconcile: all but echoes of our
    /// own writes (deletions and relisted objects always pass).
    pub fn triggers<K: Resource<DynamicType = ()>>(&self, event: watcher::Event<K>) -> Vec<K> {
        use watcher::Event;
        match event {
            Event::Apply(child) if !self.is_change(&child) => Vec::new(),
            Event::Delete(child) => {
                // Gone: nothing of it can echo any more (keeps the map to live children).
                if let Some(uid) = &child.meta().uid {
                    self.lock().pending.remove(uid);
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
        let (own, _) = OwnWrites::new();
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

    fn child(version: &str) -> k8s_openapi::api::core::v1::Secret {
        serde_json::from_value(serde_json::json!({"metadata": {
            "name": "ci", "namespace": "acme", "uid": "s", "resourceVersion": version
        }}))
        .expect("valid")
    }

    #[test]
    fn events_that_arrive_before_a_write_is_answered_are_judged_against_its_response() {
        use crate::api::TechnicalUser;
        use k8s_openapi::api::core::v1::Secret;
        use watcher::Event;
        let (own, mut again) = OwnWrites::new();
        let token = child("1");
        // The echo arrives before the response: held, then claimed by it.
        let writing = own.writing::<Secret>(&token, "ci");
        assert!(own.triggers(Event::Apply(child("10"))).is_empty());
        writing.wrote(&child("10").metadata);
        assert!(again.try_recv().is_err(), "nothing to do again");
        assert_eq!(
            own.triggers(Event::Apply(child("11"))).len(),
            1,
            "not held any more"
        );

        // Someone else's change held during our write asks the token to reconcile again.
        let writing = own.writing::<Secret>(&token, "ci");
        assert!(own.triggers(Event::Apply(child("20"))).is_empty());
        assert!(own.triggers(Event::Apply(child("21"))).is_empty());
        writing.wrote(&child("21").metadata);
        let asked = again.try_recv().expect("asked again");
        assert_eq!(
            (asked.name.as_str(), asked.namespace.as_deref()),
            ("ci", Some("acme"))
        );

        // A write that failed: whatever was held is someone else's.
        let writing = own.writing::<Secret>(&token, "ci");
        assert!(own.triggers(Event::Apply(child("30"))).is_empty());
        drop(writing);
        assert!(again.try_recv().is_ok(), "asked again");

        // A write of another kind of the same name holds nothing of this one.
        let writing = own.writing::<TechnicalUser>(&token, "ci");
        assert_eq!(own.triggers(Event::Apply(child("40"))).len(), 1);
        drop(writing);
        assert!(again.try_recv().is_err());
    }
}
