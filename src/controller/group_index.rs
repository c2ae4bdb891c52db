//! The group index: a ConfigMap mapping each Group to its Organization, kept current from a
//! Group watch.
//!
//! Why it exists: the admission policy that lets an organization's admins manage the tokens
//! of its groups (deploy/admission-policies.yaml) runs CEL inside kube-apiserver, and CEL
//! cannot read a Group. It can read one parameter object, so the operator publishes the
//! mapping there. A missing entry fails closed: only the group's own admins pass.

use std::collections::BTreeMap;

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::api::{
    Group,
    wellknown::{MANAGED_BY_LABEL, OPERATOR_MANAGER},
};

/// Name of the ConfigMap the admission policy takes as its parameter.
pub const CONFIG_MAP: &str = "access-token-operator-groups";

/// The index's content: group name → organization name.
pub fn index_of<'a>(groups: impl IntoIterator<Item = &'a Group>) -> BTreeMap<String, String> {
    groups
        .into_iter()
        .filter(|g| g.metadata.deletion_timestamp.is_none())
        .map(|g| (g.name_any(), g.spec.organization.clone()))
        .collect()
}

/// Keeps `CONFIG_MAP` in `namespace` equal to the Groups the API server holds, until the
/// watch ends. Writes only after the first full list (a partial view would lock out
/// organization admins of the groups not seen yet) and only when the content changes.
pub async fn run(client: Client, namespace: String) {
    let groups: Api<Group> = Api::all(client.clone());
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client, &namespace);
    let (reader, writer) = reflector::store();
    let events = reflector::reflector(
        writer,
        watcher(groups, watcher::Config::default()).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    // A failed write is retried on the next Group event, or after this at the latest.
    let mut retry = tokio::time::interval(std::time::Duration::from_secs(30));
    let mut synced = false;
    let mut written: Option<BTreeMap<String, String>> = None;
    loop {
        // The tick re-applies even an unchanged index: a ConfigMap someone deleted comes back
        // (without it the group-token policy refuses every AccessToken write).
        let tick = tokio::select! {
            event = events.next() => {
                match event {
                    None => return,
                    Some(Ok(watcher::Event::InitDone)) => synced = true,
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        warn!(%error, "Group watch error (group index); retrying with backoff");
                    }
                }
                false
            }
            _ = retry.tick() => true,
        };
        if !synced {
            continue;
        }
        let index = index_of(reader.state().iter().map(|g| g.as_ref()));
        if !tick && written.as_ref() == Some(&index) {
            continue;
        }
        let patch = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": CONFIG_MAP,
                "labels": {MANAGED_BY_LABEL: OPERATOR_MANAGER},
            },
            "data": index,
        });
        let params = PatchParams::apply(OPERATOR_MANAGER).force();
        match config_maps
            .patch(CONFIG_MAP, &params, &Patch::Apply(patch))
            .await
        {
            Ok(_) => {
                if written.is_none() {
                    info!(groups = index.len(), %namespace, "group index written");
                } else {
                    debug!(groups = index.len(), "group index updated");
                }
                written = Some(index);
            }
            Err(error) => warn!(%error, %namespace, "could not write the group index"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GroupSpec;

    fn group(name: &str, organization: &str) -> Group {
        Group::new(
            name,
            GroupSpec {
                organization: organization.into(),
                display_name: None,
                token_namespaces: vec![],
                ..Default::default()
            },
        )
    }

    #[test]
    fn maps_each_group_to_its_organization_and_leaves_out_deleting_ones() {
        let mut leaving = group("old", "acme");
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let groups = [group("platform", "acme"), group("web", "globex"), leaving];
        let index = index_of(&groups);
        assert_eq!(
            index,
            BTreeMap::from([
                ("platform".to_string(), "acme".to_string()),
                ("web".to_string(), "globex".to_string()),
            ])
        );
    }
}
