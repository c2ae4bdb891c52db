//! The AccessTokens as the verifier keeps them: by namespace and name, each with only what a
//! decision reads (issue 22). The watch parses each token whole, metadata cut while parsed
//! ([`Trimmed`]), so one whose status does not parse is unreadable, and denied, as before
//! (fail closed). Kept is less: its uid, creation and deletion times, the spec without its
//! Secret template, and of its status only `rotatedAt` (a rotated token's lifetime counts
//! from it). kube's reflector store kept the object whole (its metadata, and a status type
//! of 480 bytes even emptied) and a second copy of its name, namespace, version and uid in
//! its key.
//!
//! [`Trimmed`]: crate::api::Trimmed

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use crate::api::{AccessToken, AccessTokenSpec, AccessTokenStatus};

/// One kept AccessToken: what `decide` reads of it.
#[derive(Debug)]
struct Entry {
    uid: Option<String>,
    created: Option<Time>,
    deleting: Option<Time>,
    spec: AccessTokenSpec,
    rotated_at: Option<Time>,
}

/// Namespace → name → token.
type Tables = HashMap<String, HashMap<String, Arc<Entry>>>;

/// The kept AccessTokens, fed by the watch like kube's store: a relist builds a new table
/// while the old one serves, and replaces it when complete.
#[derive(Debug, Default)]
pub struct TokenTable {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: Tables,
    relisting: Option<Tables>,
}

fn insert(tables: &mut Tables, token: AccessToken) {
    let namespace = token.metadata.namespace.unwrap_or_default();
    let name = token.metadata.name.unwrap_or_default();
    let entry = Entry {
        uid: token.metadata.uid,
        created: token.metadata.creation_timestamp,
        deleting: token.metadata.deletion_timestamp,
        spec: AccessTokenSpec {
            secret_template: None,
            ..token.spec
        },
        rotated_at: token.status.and_then(|s| s.rotated_at),
    };
    (tables.entry(namespace).or_default()).insert(name, Arc::new(entry));
}

impl super::WatchFed<AccessToken> for TokenTable {
    fn apply(&self, token: AccessToken) {
        insert(&mut self.inner.write().expect("lock").live, token);
    }

    fn delete(&self, token: &impl Resource) {
        let mut inner = self.inner.write().expect("lock");
        let namespace = token.namespace().unwrap_or_default();
        if let Some(names) = inner.live.get_mut(&namespace) {
            names.remove(&token.name_any());
            if names.is_empty() {
                inner.live.remove(&namespace);
            }
        }
    }

    fn relist_start(&self) {
        self.inner.write().expect("lock").relisting = Some(Tables::new());
    }

    fn relist_apply(&self, token: AccessToken) {
        let mut inner = self.inner.write().expect("lock");
        match inner.relisting.as_mut() {
            Some(seen) => insert(seen, token),
            None => insert(&mut inner.live, token),
        }
    }

    /// The table becomes exactly the tokens seen.
    fn relist_done(&self) {
        let mut inner = self.inner.write().expect("lock");
        if let Some(seen) = inner.relisting.take() {
            inner.live = seen;
        }
    }

    fn entries(&self) -> usize {
        let inner = self.inner.read().expect("lock");
        inner.live.values().map(HashMap::len).sum()
    }
}

impl TokenTable {
    /// The AccessToken `namespace/name` as the checks read it: its name, namespace, uid,
    /// timestamps and spec, and a status holding `rotatedAt` only.
    pub fn get(&self, namespace: &str, name: &str) -> Option<AccessToken> {
        let entry = {
            let inner = self.inner.read().expect("lock");
            inner.live.get(namespace)?.get(name)?.clone()
        };
        Some(AccessToken {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                uid: entry.uid.clone(),
                creation_timestamp: entry.created.clone(),
                deletion_timestamp: entry.deleting.clone(),
                ..ObjectMeta::default()
            },
            spec: entry.spec.clone(),
            status: entry.rotated_at.clone().map(|at| AccessTokenStatus {
                rotated_at: Some(at),
                ..Default::default()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::WatchFed;

    fn token(name: &str, revoked: bool) -> AccessToken {
        let mut token = AccessToken::new(
            name,
            AccessTokenSpec {
                organization: Some("acme".into()),
                revoked,
                ..Default::default()
            },
        );
        token.metadata.namespace = Some("ns".into());
        token.metadata.uid = Some(format!("{name}-uid"));
        token
    }

    #[test]
    fn updates_replace_and_deletes_remove() {
        let table = TokenTable::default();
        table.apply(token("a", false));
        assert!(!table.get("ns", "a").unwrap().spec.revoked);
        table.apply(token("a", true));
        assert!(table.get("ns", "a").unwrap().spec.revoked);
        assert_eq!(
            table.get("ns", "a").unwrap().uid().as_deref(),
            Some("a-uid")
        );
        assert!(table.get("other", "a").is_none());
        assert_eq!(table.entries(), 1);
        table.delete(&token("a", true));
        assert!(table.get("ns", "a").is_none());
        assert_eq!(table.entries(), 0);
    }

    #[test]
    fn a_token_whose_status_does_not_parse_is_unreadable_as_a_whole_would_be() {
        let parsed = |status: serde_json::Value| {
            serde_json::from_value::<crate::api::Trimmed<AccessToken>>(serde_json::json!({
                "metadata": {"name": "ci", "namespace": "ns"},
                "spec": {"organization": "acme"},
                "status": status,
            }))
            .unwrap()
            .0
            .is_ok()
        };
        assert!(parsed(serde_json::json!({"phase": "Active"})));
        assert!(
            !parsed(serde_json::json!({"phase": "NotAPhase"})),
            "fail closed: the verifier treats an unreadable token as absent"
        );
    }

    #[test]
    fn a_relist_serves_the_old_table_until_done_then_drops_what_vanished() {
        let table = TokenTable::default();
        table.apply(token("a", false));
        table.apply(token("b", false));
        table.relist_start();
        table.relist_apply(token("b", true));
        assert!(
            table.get("ns", "a").is_some(),
            "the old view serves until the relist ends"
        );
        assert!(!table.get("ns", "b").unwrap().spec.revoked);
        table.relist_done();
        assert!(table.get("ns", "a").is_none());
        assert!(table.get("ns", "b").unwrap().spec.revoked);
    }
}
