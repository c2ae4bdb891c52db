//! TechnicalUsers by token id, kept from a watch: the verifier's lookup table.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use kube::ResourceExt;

use crate::api::{TechnicalUser, TechnicalUserSpec};

/// A TechnicalUser as the verifier keeps it: its spec and the little of its metadata the
/// checks read (issue 22: the labels and owner references were most of each user's
/// memory, and only their verdicts are needed).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedUser {
    /// The user's uid (the identity's uid).
    pub uid: String,
    /// Its namespace, the AccessToken's.
    pub namespace: Option<String>,
    /// Whether it looks as only the operator writes it ([`super::decide::is_trusted`]).
    pub trusted: bool,
    /// Name and uid of its controlling AccessToken, if it names one.
    pub owner: Option<(String, String)>,
    /// Its spec, as written.
    pub spec: TechnicalUserSpec,
}

impl From<TechnicalUser> for IndexedUser {
    fn from(user: TechnicalUser) -> Self {
        let trusted = super::decide::is_trusted(&user);
        let owner = (user.owner_references().iter())
            .find(|o| o.controller == Some(true) && o.kind == "AccessToken")
            .map(|o| (o.name.clone(), o.uid.clone()));
        Self {
            uid: user.uid().unwrap_or_default(),
            namespace: user.metadata.namespace,
            trusted,
            owner,
            spec: user.spec,
        }
    }
}

/// Maps a token id to the TechnicalUsers holding a credential with it. Ids are random and
/// unique; should several users ever list the same id, the verifier checks each candidate
/// (state, then hash) rather than deny everyone (see `Verifier::decide`).
#[derive(Default)]
pub struct CredentialIndex {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Vec<Arc<IndexedUser>>>,
    /// The ids each user (by uid) is indexed under, so updates and deletes remove stale ones.
    ids_of: HashMap<String, Vec<String>>,
    /// During a (re)list: the users seen so far, swapped in at its end.
    relisting: Option<Vec<Arc<IndexedUser>>>,
}

impl Inner {
    fn remove(&mut self, uid: &str) {
        for id in self.ids_of.remove(uid).unwrap_or_default() {
            if let Some(users) = self.by_id.get_mut(&id) {
                users.retain(|u| u.uid != uid);
                if users.is_empty() {
                    self.by_id.remove(&id);
                }
            }
        }
    }

    fn insert(&mut self, user: Arc<IndexedUser>) {
        let uid = user.uid.clone();
        self.remove(&uid);
        let mut ids: Vec<String> = user.spec.credentials.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        ids.dedup(); // one entry per user and id, even if a user lists an id twice
        for id in &ids {
            self.by_id.entry(id.clone()).or_default().push(user.clone());
        }
        self.ids_of.insert(uid, ids);
    }
}

impl super::WatchFed<TechnicalUser> for CredentialIndex {
    fn apply(&self, user: TechnicalUser) {
        self.inner
            .write()
            .expect("lock")
            .insert(Arc::new(user.into()));
    }

    fn delete(&self, user: &impl kube::Resource) {
        self.inner
            .write()
            .expect("lock")
            .remove(&user.uid().unwrap_or_default());
    }

    fn relist_start(&self) {
        self.inner.write().expect("lock").relisting = Some(Vec::new());
    }

    fn relist_apply(&self, user: TechnicalUser) {
        let mut inner = self.inner.write().expect("lock");
        match inner.relisting.as_mut() {
            Some(seen) => seen.push(Arc::new(user.into())),
            None => inner.insert(Arc::new(user.into())),
        }
    }

    /// The index becomes exactly the users seen.
    fn relist_done(&self) {
        let mut inner = self.inner.write().expect("lock");
        let seen = inner.relisting.take().unwrap_or_default();
        inner.by_id.clear();
        inner.ids_of.clear();
        for user in seen {
            inner.insert(user);
        }
    }

    fn entries(&self) -> usize {
        self.len()
    }
}

impl CredentialIndex {
    /// Every user holding a credential with this id (normally one; none if unknown).
    pub fn lookup(&self, id: &str) -> Vec<Arc<IndexedUser>> {
        let inner = self.inner.read().expect("lock");
        inner.by_id.get(id).cloned().unwrap_or_default()
    }

    /// How many token ids are indexed.
    pub fn len(&self) -> usize {
        self.inner.read().expect("lock").by_id.len()
    }

    /// Whether no token id is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{Credential, Role, Scope, ScopeKind, TechnicalUserSpec};
    use crate::verifier::WatchFed;

    fn user(uid: &str, ids: &[&str]) -> TechnicalUser {
        let mut user = TechnicalUser::new(
            uid,
            TechnicalUserSpec {
                scope: Scope {
                    kind: ScopeKind::Organization,
                    name: "acme".into(),
                    organization: "acme".into(),
                    uid: None,
                },
                role: Role::OrganizationUser,
                disabled: false,
                expires_at: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                credentials: ids
                    .iter()
                    .map(|id| Credential {
                        id: id.to_string(),
                        hash: String::new(),
                        not_after: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                        retired_at: None,
                    })
                    .collect(),
            },
        );
        user.metadata.uid = Some(uid.into());
        user
    }

    #[test]
    fn updates_replace_old_ids_and_deletes_remove_them() {
        let index = CredentialIndex::default();
        index.apply(user("u1", &["aaa", "bbb"]));
        assert_eq!(index.lookup("aaa").len(), 1);
        index.apply(user("u1", &["ccc"]));
        assert!(index.lookup("aaa").is_empty(), "a rotated-out id is gone");
        assert_eq!(index.lookup("ccc").len(), 1);
        index.delete(&user("u1", &[]));
        assert!(index.is_empty());
    }

    #[test]
    fn a_relist_drops_users_that_vanished_while_disconnected() {
        let index = CredentialIndex::default();
        index.apply(user("u1", &["aaa"]));
        index.apply(user("u2", &["bbb"]));
        index.relist_start();
        index.relist_apply(user("u2", &["bbb"]));
        assert_eq!(
            index.lookup("aaa").len(),
            1,
            "the old view serves until the relist ends"
        );
        index.relist_done();
        assert!(index.lookup("aaa").is_empty());
        assert_eq!(index.lookup("bbb").len(), 1);
    }

    #[test]
    fn an_id_claimed_twice_yields_both_candidates() {
        let index = CredentialIndex::default();
        index.apply(user("u1", &["aaa"]));
        index.apply(user("u2", &["aaa"]));
        let uids: Vec<_> = index.lookup("aaa").iter().map(|u| u.uid.clone()).collect();
        assert_eq!(uids, ["u1", "u2"]);
        index.delete(&user("u2", &[]));
        assert_eq!(index.lookup("aaa").len(), 1);
    }
}
