//! The AccessTokens as the verifier keeps them: by namespace and name, each with only what a
//! decision reads (issue 22). As watched, a token's metadata is cut while parsed
//! ([`Trimmed`]) and of its status only `rotatedAt` is kept (a rotated token's lifetime
//! counts from it); as kept, not even the metadata's fixed-size type stays: its uid and two
//! timestamps do, the spec without its Secret template, and `rotatedAt`. kube's reflector
//! store kept the object whole (its metadata, and a status type of 480 bytes even emptied)
//! and a second copy of its name, namespace, version and uid in its key.
//!
//! [`Trimmed`]: crate::api::Trimmed

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{Arc, RwLock},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};
use serde_json::Value;

use crate::api::{AccessToken, AccessTokenSpec, AccessTokenStatus, Trim};

/// An AccessToken as the verifier's watch parses it: see the module documentation.
#[derive(Debug, Clone)]
pub struct KeptToken {
    /// Trimmed metadata (the watch resumes from its resourceVersion).
    pub metadata: ObjectMeta,
    /// The spec, without `secretTemplate`.
    pub spec: AccessTokenSpec,
    /// `status.rotatedAt`.
    pub rotated_at: Option<Time>,
}

impl From<AccessToken> for KeptToken {
    fn from(token: AccessToken) -> Self {
        Self {
            metadata: token.metadata,
            spec: token.spec,
            rotated_at: token.status.and_then(|s| s.rotated_at),
        }
    }
}

impl Trim for KeptToken {
    fn assemble(
        metadata: ObjectMeta,
        spec: Option<Value>,
        status: Option<Value>,
    ) -> serde_json::Result<Self> {
        let spec = serde_json::from_value(spec.unwrap_or(Value::Null))?;
        // The whole status is parsed, then all but `rotatedAt` dropped: a status that does not
        // parse (an operator of another version, say) makes the token unreadable, and so
        // denied, as a whole AccessToken would be (fail closed).
        let status: Option<AccessTokenStatus> = status.map(serde_json::from_value).transpose()?;
        Ok(Self {
            metadata,
            spec,
            rotated_at: status.and_then(|s| s.rotated_at),
        })
    }
}

impl Resource for KeptToken {
    type DynamicType = ();
    type Scope = <AccessToken as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        AccessToken::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        AccessToken::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        AccessToken::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        AccessToken::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

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

fn insert(tables: &mut Tables, token: KeptToken) {
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
        rotated_at: token.rotated_at,
    };
    (tables.entry(namespace).or_default()).insert(name, Arc::new(entry));
}

impl super::WatchFed<KeptToken> for TokenTable {
    fn apply(&self, token: KeptToken) {
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

    fn relist_apply(&self, token: KeptToken) {
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

    fn token(name: &str, revoked: bool) -> KeptToken {
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
        token.into()
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
            serde_json::from_value::<crate::api::Trimmed<KeptToken>>(serde_json::json!({
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
