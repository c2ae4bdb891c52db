//! Deletion without a finalizer (DESIGN.md, Delete; issue 22: one write per token fewer).
//! An AccessToken is deleted at once; its TechnicalUser and Secret carry its controller owner
//! reference, so kube-controller-manager's garbage collector deletes them, and the sweep here
//! deletes them too, without waiting for the collector (which may not yet monitor the CRDs
//! of a fresh cluster, and which orphans them on `--cascade=orphan`).
//!
//! What the sweep hears of:
//! - every AccessToken deletion the token watch delivers: the token's two children;
//! - every child (TechnicalUser or Secret, by the operator's label) that has no controller
//!   left, as `--cascade=orphan` leaves them, also from the first list after a restart (so a
//!   deletion while no operator ran is caught then).
//!
//! A child is deleted only if [`build::is_child_of`] the deleted token's uid (its controller
//! reference, or, orphaned, the operator's labels naming that uid), with that uid as a
//! precondition, and only once no AccessToken of that uid exists: never what the operator does
//! not own. From the moment the AccessToken is gone, the verifier denies its token (no owner).

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, channel::mpsc};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Preconditions},
    runtime::{events::EventType, watcher},
};
use tracing::{debug, info, warn};

use super::{
    Context,
    access_token::{self, build},
};
use crate::{
    Result,
    api::{
        AccessToken, Reason, TechnicalUser,
        wellknown::{
            ACCESS_TOKEN_LABEL, ACCESS_TOKEN_UID_LABEL, MANAGED_BY_LABEL, OPERATOR_MANAGER,
        },
    },
    error::{AtStep, Step},
};

/// Children a deleted (or possibly deleted) AccessToken may have left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftovers {
    namespace: String,
    /// The AccessToken's name and uid.
    token: String,
    uid: String,
    /// The TechnicalUser's and the Secret's names, where known.
    user: Option<String>,
    secret: Option<String>,
    /// Whether the AccessToken's deletion was seen (then announced with `TokenDeleted`).
    deleted: bool,
}

/// Where the watches send what they hear of; the sweep task reads it.
#[derive(Clone)]
pub struct Sweeper(mpsc::UnboundedSender<Leftovers>);

/// The sweeper and the receiving end for [`run`].
pub fn channel() -> (Sweeper, mpsc::UnboundedReceiver<Leftovers>) {
    let (sender, receiver) = mpsc::unbounded();
    (Sweeper(sender), receiver)
}

impl Sweeper {
    fn send(&self, leftovers: Leftovers) {
        // The sweep task ends only when the controller (holding every sender) has.
        let _ = self.0.unbounded_send(leftovers);
    }

    /// One event of the AccessToken watch: a deletion sends the token's children.
    pub fn on_token(&self, event: &watcher::Event<access_token::Watched>) {
        if let watcher::Event::Delete(watched) = event
            && let (Some(namespace), Some(uid)) = (watched.namespace(), watched.uid())
        {
            let token = watched.name_any();
            let secret = match &watched.0 {
                Ok(decoded) => access_token::build::secret_name(decoded),
                Err(_) => token.clone(),
            };
            self.send(Leftovers {
                namespace,
                user: Some(token.clone()),
                secret: Some(secret),
                token,
                uid,
                deleted: true,
            });
        }
    }

    /// One event of a child watch (TechnicalUsers, or Secrets as metadata): a child with no
    /// controller left is sent.
    pub fn on_child<K: Resource<DynamicType = ()>>(&self, event: &watcher::Event<K>) {
        let child = match event {
            watcher::Event::Apply(child) | watcher::Event::InitApply(child) => child,
            _ => return,
        };
        if let Some(leftovers) = orphaned(child) {
            self.send(leftovers);
        }
    }
}

/// The leftovers `child` stands for, if it has no controller and carries the operator's
/// labels naming its token.
fn orphaned<K: Resource<DynamicType = ()>>(child: &K) -> Option<Leftovers> {
    let meta = child.meta();
    let controlled = meta.owner_references.iter().flatten();
    if controlled.into_iter().any(|o| o.controller == Some(true)) {
        return None;
    }
    let labels = meta.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(OPERATOR_MANAGER) {
        return None;
    }
    let token = labels.get(ACCESS_TOKEN_LABEL)?.clone();
    let is_user = K::kind(&()) == TechnicalUser::kind(&());
    Some(Leftovers {
        namespace: child.namespace()?,
        uid: labels.get(ACCESS_TOKEN_UID_LABEL)?.clone(),
        // The TechnicalUser has the token's name; the Secret its own.
        user: Some(token.clone()),
        secret: (!is_user).then(|| child.name_any()),
        token,
        deleted: false,
    })
}

/// The sweep task: each batch of leftovers, in turn, until every sender is gone.
pub async fn run(ctx: Arc<Context>, mut leftovers: mpsc::UnboundedReceiver<Leftovers>) {
    while let Some(left) = leftovers.next().await {
        // A failed request is tried again a few times; after that the garbage collector is
        // left to it (a child orphaned meanwhile waits for the next restart's first list).
        for wait in RETRIES {
            match sweep(&ctx, &left).await {
                Ok(()) => break,
                Err(error) => {
                    warn!(namespace = left.namespace, name = left.token, %error, "sweep of a deleted token's children failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The waits after each failed sweep of one token's children.
const RETRIES: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(16),
    Duration::ZERO,
];

/// Deletes what `left` names, if its token is gone and the objects are still its children.
async fn sweep(ctx: &Context, left: &Leftovers) -> Result<()> {
    // A deletion the watch delivered is final (uids are never reused); an orphaned child may
    // belong to a token that is still being deleted (`--cascade=orphan` strips the owner
    // references first), whose own deletion comes later.
    if !left.deleted {
        let tokens: Api<AccessToken> = Api::namespaced(ctx.client.clone(), &left.namespace);
        let live = tokens.get_metadata_opt(&left.token).await.at(Step::Other)?;
        if live.is_some_and(|t| t.uid().as_deref() == Some(left.uid.as_str())) {
            debug!(
                name = left.token,
                "token still there (being deleted?): its children stay"
            );
            return Ok(());
        }
    }
    let users: Api<TechnicalUser> = Api::namespaced(ctx.client.clone(), &left.namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &left.namespace);
    let user_deleted = delete_child(
        &users,
        left.user.as_deref(),
        &left.uid,
        Step::ReadTechnicalUser,
    )
    .await?;
    delete_child(
        &secrets,
        left.secret.as_deref(),
        &left.uid,
        Step::ReadSecret,
    )
    .await?;
    ctx.forget(&left.uid);
    // Announced once the token's deletion is seen, or its credentials went here (a deletion
    // while no operator ran, found orphaned by the first list).
    if left.deleted || user_deleted {
        info!(
            namespace = left.namespace,
            name = left.token,
            "token deleted with its TechnicalUser and Secret"
        );
        announce(ctx, left).await;
    }
    Ok(())
}

/// Deletes the object `name`, if there is one, only if it is a child of `uid` (see
/// [`build::is_child_of`]), and only that very object (uid precondition); already gone counts
/// as done. Whether it was a child to delete.
async fn delete_child<K>(api: &Api<K>, name: Option<&str>, uid: &str, read: Step) -> Result<bool>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(name) = name else { return Ok(false) };
    let Some(child) = api.get_metadata_opt(name).await.at(read)? else {
        return Ok(false);
    };
    if !build::is_child_of(&child.metadata, uid) {
        return Ok(false);
    }
    let params = only_this(child.metadata.uid.clone());
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(true),
        Err(error) => Err(error).at(Step::DeleteChild),
    }
}

/// A delete of only the object with this `uid` (a uid precondition): never one created
/// again under the same name since it was read or written.
pub(super) fn only_this(uid: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// The `TokenDeleted` Event, about the AccessToken that is gone.
async fn announce(ctx: &Context, left: &Leftovers) {
    let regarding = ObjectReference {
        api_version: Some(AccessToken::api_version(&()).into_owned()),
        kind: Some(AccessToken::kind(&()).into_owned()),
        name: Some(left.token.clone()),
        namespace: Some(left.namespace.clone()),
        uid: Some(left.uid.clone()),
        ..ObjectReference::default()
    };
    let note = "Deleted the TechnicalUser and Secret this AccessToken controlled; the token no longer works".to_string();
    ctx.publish_to(
        regarding,
        EventType::Normal,
        Reason::TokenDeleted.as_str(),
        "Delete",
        note,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::PartialObjectMeta;

    /// A child's metadata: the operator's labels for token `t` (uid-1), and its controller
    /// reference if `owned`.
    fn child(owned: bool) -> serde_json::Value {
        let mut meta = serde_json::json!({
            "name": "ci", "namespace": "acme",
            "labels": {
                MANAGED_BY_LABEL: OPERATOR_MANAGER,
                ACCESS_TOKEN_LABEL: "t",
                ACCESS_TOKEN_UID_LABEL: "uid-1",
            },
        });
        if owned {
            meta["ownerReferences"] = serde_json::json!([{
                "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
                "name": "t", "uid": "uid-1", "controller": true,
            }]);
        }
        meta
    }

    fn as_meta<K: Resource<DynamicType = ()>>(meta: serde_json::Value) -> PartialObjectMeta<K> {
        serde_json::from_value(serde_json::json!({"metadata": meta})).unwrap()
    }

    #[test]
    fn only_a_child_without_a_controller_and_with_the_operator_labels_is_a_leftover() {
        let secret = as_meta::<Secret>;
        assert_eq!(orphaned(&secret(child(true))), None, "controlled");
        let left = orphaned(&secret(child(false))).expect("orphaned");
        assert_eq!(
            (left.token.as_str(), left.uid.as_str(), left.deleted),
            ("t", "uid-1", false)
        );
        // A Secret's leftovers: the Secret, and the TechnicalUser (the token's name).
        let names = (left.user.as_deref(), left.secret.as_deref());
        assert_eq!(names, (Some("t"), Some("ci")));
        let user = orphaned(&as_meta::<TechnicalUser>(child(false))).expect("orphaned");
        assert_eq!((user.user.as_deref(), user.secret), (Some("t"), None));

        let mut foreign = child(false);
        foreign["labels"][MANAGED_BY_LABEL] = "someone-else".into();
        assert_eq!(orphaned(&secret(foreign)), None, "not the operator's");
        let mut unnamed = child(false);
        let labels = unnamed["labels"].as_object_mut().unwrap();
        labels.remove(ACCESS_TOKEN_UID_LABEL);
        assert_eq!(orphaned(&secret(unnamed)), None, "no token uid");
    }
}
