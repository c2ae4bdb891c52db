//! Proof that the local control plane is a real one: it answers, serves our CRDs, watches,
//! garbage-collects owned objects (so kube-controller-manager runs) and enforces RBAC.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};

use access_token_operator::api::{Organization, OrganizationSpec};

use crate::support::{
    DEADLINE, admin_client, client_with_token, cluster_env, eventually, install_crds,
    test_namespace, unique_name, within,
};

/// The pinned Kubernetes release, from the file the control-plane build reads.
fn pinned_kubernetes_version() -> &'static str {
    include_str!("../../hack/control-plane/versions.env")
        .lines()
        .find_map(|line| line.strip_prefix("KUBERNETES_VERSION="))
        .expect("versions.env pins KUBERNETES_VERSION")
}

#[tokio::test]
async fn apiserver_answers_with_the_pinned_version() {
    let client = admin_client().await;
    let version = client.apiserver_version().await.expect("/version answers");
    assert_eq!(version.git_version, pinned_kubernetes_version());
    // A real API server lists its built-in namespaces.
    let namespaces = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .expect("namespaces list");
    assert!(
        namespaces
            .items
            .iter()
            .any(|ns| ns.name_any() == "kube-system")
    );
}

#[tokio::test]
async fn crds_install_and_objects_are_created_watched_and_read_back() {
    install_crds().await;
    let client = admin_client().await;
    let orgs = Api::<Organization>::all(client);
    let name = unique_name("proof-org");

    // Start watching before creating, so the watch must deliver the object.
    let watch_name = name.clone();
    let watched = watcher(
        orgs.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .applied_objects()
    .try_filter(move |org| futures::future::ready(org.name_any() == watch_name))
    .boxed();

    let org = Organization::new(
        &name,
        OrganizationSpec {
            display_name: Some("Proof Corp".into()),
            token_namespaces: vec!["proof".into()],
            ..Default::default()
        },
    );
    orgs.create(&PostParams::default(), &org)
        .await
        .expect("Organization is created");

    let mut watched = watched;
    let seen = within(DEADLINE, watched.next())
        .await
        .expect("watch stream yields")
        .expect("watch has no error");
    assert_eq!(seen.spec.display_name.as_deref(), Some("Proof Corp"));

    let read_back = orgs.get(&name).await.expect("Organization reads back");
    assert_eq!(read_back.spec.token_namespaces, vec!["proof".to_string()]);
    assert!(read_back.uid().is_some(), "the API server assigned a uid");
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_child() {
    let client = admin_client().await;
    let namespace = test_namespace(&client, "proof-gc").await;
    let config_maps = Api::<ConfigMap>::namespaced(client, &namespace);

    let owner = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("owner".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("owner is created");
    let owner_ref = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.name_any(),
        uid: owner.uid().expect("owner has a uid"),
        ..Default::default()
    };
    config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("child".into()),
                    owner_references: Some(vec![owner_ref]),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("child is created");

    config_maps
        .delete("owner", &DeleteParams::background())
        .await
        .expect("owner is deleted");
    eventually(
        "kube-controller-manager to garbage-collect the child",
        || async {
            match config_maps.get_opt("child").await.expect("get works") {
                None => Some(()),
                Some(_) => None,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn rbac_denies_an_identity_without_grants() {
    let client = client_with_token(&cluster_env("ATO_UNPRIVILEGED_TOKEN")).await;
    let error = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .expect_err("an identity with no RoleBindings may not list namespaces");
    match error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "denied by RBAC: {status:?}");
        }
        other => panic!("expected a 403 from RBAC, got {other}"),
    }
}
