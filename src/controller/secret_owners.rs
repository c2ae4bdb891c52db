//! Which AccessToken controls each of the operator's Secrets, as the Secret watch last saw
//! them: a name and an owner uid per Secret (about 150 bytes), not the Secret's metadata. A
//! reconcile reads a Secret this says its token controls whole, in one request; any other,
//! metadata first (so that a foreign Secret's data is not read). Being behind the watch costs
//! a request, never a wrong outcome: the reconcile checks the owner of what it read.

use std::{collections::HashMap, sync::Mutex};

use kube::{Resource, ResourceExt, runtime::watcher};

/// The index; see the module documentation.
#[derive(Debug, Default)]
pub struct SecretOwners(Mutex<Owners>);

#[derive(Debug, Default)]
struct Owners {
    /// The controlling owner's uid, by `namespace/name`; Secrets without one are left out.
    by_secret: HashMap<String, String>,
    /// During a (re)list: what it listed so far (the entries also go live at once, so that a
    /// restarted operator uses them before the whole list is in).
    relisting: Option<HashMap<String, String>>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl SecretOwners {
    /// Whether the Secret `namespace/name` was last seen controlled by the object `uid`.
    pub fn controls(&self, namespace: &str, name: &str, uid: &str) -> bool {
        let owners = self.0.lock().expect("lock");
        owners
            .by_secret
            .get(&key(namespace, name))
            .map(String::as_str)
            == Some(uid)
    }

    /// Records one event of the Secret watch.
    pub fn on<K: Resource>(&self, event: &watcher::Event<K>) {
        use watcher::Event;
        let key_of = |secret: &K| key(&secret.namespace().unwrap_or_default(), &secret.name_any());
        match event {
            Event::Apply(secret) | Event::InitApply(secret) => {
                let key = key_of(secret);
                let owners_of = secret.meta().owner_references.iter().flatten();
                let controller = owners_of.into_iter().find(|o| o.controller == Some(true));
                let mut owners = self.0.lock().expect("lock");
                match controller {
                    Some(owner) => {
                        if let Some(relisting) = &mut owners.relisting {
                            relisting.insert(key.clone(), owner.uid.clone());
                        }
                        owners.by_secret.insert(key, owner.uid.clone());
                    }
                    None => {
                        owners.by_secret.remove(&key);
                    }
                }
            }
            Event::Delete(secret) => {
                let key = key_of(secret);
                self.0.lock().expect("lock").by_secret.remove(&key);
            }
            Event::Init => self.0.lock().expect("lock").relisting = Some(HashMap::new()),
            Event::InitDone => {
                // Secrets deleted while the watch was down are gone from the new list.
                let mut owners = self.0.lock().expect("lock");
                if let Some(listed) = owners.relisting.take() {
                    owners.by_secret = listed;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use watcher::Event;

    fn secret(name: &str, owner: Option<&str>) -> Secret {
        let owners = owner.map(|uid| {
            serde_json::json!([{"apiVersion": "iam.accesstoken.io/v1alpha1",
                "kind": "AccessToken", "name": "ci", "uid": uid, "controller": true}])
        });
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "acme", "ownerReferences": owners},
        }))
        .expect("valid")
    }

    #[test]
    fn a_secret_is_known_by_its_controlling_owner_until_it_changes_hands_or_goes() {
        let owners = SecretOwners::default();
        assert!(!owners.controls("acme", "ci-token", "t-1"), "never seen");
        owners.on(&Event::Apply(secret("ci-token", Some("t-1"))));
        assert!(owners.controls("acme", "ci-token", "t-1"));
        assert!(!owners.controls("acme", "ci-token", "t-2"), "another token");
        assert!(
            !owners.controls("other", "ci-token", "t-1"),
            "another namespace"
        );
        owners.on(&Event::Apply(secret("ci-token", None)));
        assert!(!owners.controls("acme", "ci-token", "t-1"), "released");
        owners.on(&Event::Apply(secret("ci-token", Some("t-1"))));
        owners.on(&Event::Delete(secret("ci-token", Some("t-1"))));
        assert!(!owners.controls("acme", "ci-token", "t-1"), "deleted");
    }

    #[test]
    fn a_relist_forgets_what_it_no_longer_lists_and_serves_what_it_lists_at_once() {
        let owners = SecretOwners::default();
        owners.on(&Event::Apply(secret("gone", Some("t-1"))));
        owners.on(&Event::<Secret>::Init);
        owners.on(&Event::InitApply(secret("kept", Some("t-2"))));
        assert!(
            owners.controls("acme", "kept", "t-2"),
            "before the list ends"
        );
        owners.on(&Event::<Secret>::InitDone);
        assert!(owners.controls("acme", "kept", "t-2"));
        assert!(
            !owners.controls("acme", "gone", "t-1"),
            "deleted while not watched"
        );
    }
}
