//! End to end, the way users run it: the operator image (`make image`) runs as pods on two
//! real kubelets (`hack/local-cluster.sh --with-node`), installed with Helm and, separately,
//! with kustomize into a Pod Security `restricted` namespace. kube-apiserver's token webhook
//! points at the in-cluster verifier. Each install is checked the same way: rollout and
//! readiness on both nodes, tokens issued and authenticated through kube-apiserver, the
//! leader's node drained (cordon, then the leader pod evicted) and the standby taking over
//! with no token issued twice, and an uninstall that leaves nothing behind.
//!
//! `make test-e2e` (part of `make test`) builds the image and Helm and runs the three installs
//! (Helm, kustomize, Helm with the proxy) one after the other in one cluster with nodes, each
//! uninstalled before the next: so a reinstall in the same cluster is proven to work, with
//! the admission policies checked live after each (`admission_policies_are_live`). A plain
//! `cargo test` skips this binary (`test = false` in Cargo.toml): it needs the nodes.
//!
//! The pods use host networking because kube-apiserver listens on loopback only. Pod
//! Security `restricted` forbids that, so the test cluster's admission configuration exempts
//! the runtime class the pods run with here; `pod_security_restricted_admits_the_shipped_pod`
//! checks that the pod as shipped (without host networking) is admitted.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod install;
mod proxy;

use std::collections::BTreeSet;

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, EvictParams, ListParams, PostParams},
};
use serde_json::json;

use access_token_operator::api::{AccessToken, Phase};

use cluster::{
    NAMESPACE, authenticated_as, eventually_within, load_image_once, pod_security_verdict,
};
use install::Installer;
use support::Tenant;
use support::{Watchdog, admin_client};

/// One install at a time: both use the same namespace, cluster-scoped names and node ports.
pub(crate) static ONE_INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn helm_install_serves_fails_over_and_uninstalls_cleanly() {
    install_serve_fail_over_uninstall(Installer::Helm).await;
}

#[tokio::test]
async fn kustomize_install_serves_fails_over_and_uninstalls_cleanly() {
    install_serve_fail_over_uninstall(Installer::Kustomize).await;
}

async fn install_serve_fail_over_uninstall(installer: Installer) {
    let _one = ONE_INSTALL.lock().await;
    let watchdog = Watchdog::arm();
    let _diagnostics = cluster::Diagnostics;
    load_image_once().await;
    let client = admin_client().await;

    let installed = installer.install().await;
    let pods = cluster::wait_for_rollout(&client).await;
    pod_security_restricted_admits_the_shipped_pod(&client).await;

    let tenant = Tenant::in_installed_cluster(&format!("e2e-{}", installer.name()), watchdog).await;
    let org = tenant.organization.clone();
    admission_policies_are_live(&tenant).await;
    tenant
        .create_token("first", json!({"organization": org, "admin": true}))
        .await;
    let first = tenant.wait_for_phase("first", Phase::Active).await;
    let first_secret_name = first.status.and_then(|s| s.secret_name).unwrap();
    let first_token = tenant.token_in_secret(&first_secret_name).await;
    let first_user = format!("accesstoken:{}:first", tenant.namespace);
    eventually_within("kube-apiserver to authenticate the first token", || async {
        (authenticated_as(first_token.expose_secret()).await? == first_user).then_some(())
    })
    .await;
    let first_secret_before = tenant.secrets().get(&first_secret_name).await.unwrap();

    // Drain the leader's node, as a node upgrade does: cordon it, then evict the leader's
    // pod (the Eviction API deletes it gracefully, within the PodDisruptionBudget), and ask
    // for a token while the leadership moves. The cordon keeps the replacement pod off both
    // nodes (the other one has the standby on the same host ports), so the Lease can only go
    // to the standby.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let holder = || async {
        leases
            .get_opt("access-token-operator")
            .await
            .ok()??
            .spec?
            .holder_identity
    };
    let leader = eventually_within("a replica to hold the Lease", holder).await;
    let leader_pod = pods
        .iter()
        .find(|p| p.name_any() == leader)
        .unwrap_or_else(|| {
            panic!(
                "the Lease holder {leader} is one of the operator pods {:?}",
                cluster::names(&pods)
            )
        });
    let standby = pods
        .iter()
        .map(|p| p.name_any())
        .find(|name| *name != leader)
        .unwrap();
    let leader_node = leader_pod.spec.as_ref().unwrap().node_name.clone().unwrap();
    cluster::set_unschedulable(&client, &leader_node, true).await;
    // Bounded: the client retries a refused eviction (429) on its own.
    support::within(
        std::time::Duration::from_secs(60),
        Api::<Pod>::namespaced(client.clone(), NAMESPACE).evict(&leader, &EvictParams::default()),
    )
    .await
    .expect("the PodDisruptionBudget allows evicting the leader");
    tenant
        .create_token("second", json!({"organization": org}))
        .await;
    eventually_within("the standby to take the Lease", || async {
        (holder().await? == standby).then_some(())
    })
    .await;
    let second = tenant.wait_for_phase("second", Phase::Active).await;
    let second_token = tenant
        .token_in_secret(&second.status.and_then(|s| s.secret_name).unwrap())
        .await;
    // A token asked for after the takeover is the new leader's work.
    tenant
        .create_token("third", json!({"organization": org}))
        .await;
    tenant.wait_for_phase("third", Phase::Active).await;
    tenant.wait_for_event("third", "TokenIssued").await;
    assert_eq!(
        tenant.issuers("third").await,
        std::slice::from_ref(&standby)
    );
    // Nothing issued twice: one TechnicalUser, one Secret and one TokenIssued Event per
    // token (the second was asked for while the leadership moved), and the first token's
    // Secret untouched by the new leader.
    let users: BTreeSet<String> = tenant
        .list_users()
        .await
        .iter()
        .map(|u| u.name_any())
        .collect();
    assert_eq!(
        users,
        BTreeSet::from(["first".into(), "second".into(), "third".into()])
    );
    let token_secrets = tenant
        .secrets()
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=access-token-operator"))
        .await
        .unwrap()
        .items;
    assert_eq!(token_secrets.len(), 3, "one Secret per token");
    let first_secret_after = tenant.secrets().get(&first_secret_name).await.unwrap();
    assert_eq!(
        (first_secret_after.uid(), first_secret_after.data),
        (first_secret_before.uid(), first_secret_before.data),
        "the first token's Secret is the same object with the same contents"
    );
    for token in ["first", "second", "third"] {
        let issuers = tenant.issuers(token).await;
        assert_eq!(issuers.len(), 1, "{token} was issued once: {issuers:?}");
    }
    // The node comes back; the replacement pod starts there and the install is whole again.
    // (kube-apiserver's webhook goes to the verifier on the first node: the second token
    // authenticates once a replica serves there again.)
    cluster::set_unschedulable(&client, &leader_node, false).await;
    cluster::wait_for_rollout(&client).await;
    let second_user = format!("accesstoken:{}:second", tenant.namespace);
    eventually_within(
        "kube-apiserver to authenticate the second token",
        || async {
            (authenticated_as(second_token.expose_secret()).await? == second_user).then_some(())
        },
    )
    .await;

    // Uninstall: tokens first, while the operator runs (it sweeps their children), then
    // the install itself.
    delete_tenant(&tenant).await;
    installer.uninstall(&installed).await;
    install::assert_nothing_left(&installed).await;
}

/// The pod as shipped (no host networking, no runtime class) is admitted by the namespace's
/// `restricted` Pod Security level, and the namespace does enforce it: the host-network pod
/// of this test cluster is refused without its exempt runtime class.
async fn pod_security_restricted_admits_the_shipped_pod(client: &kube::Client) {
    let deployment = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get("access-token-operator")
        .await
        .unwrap();
    let template = deployment.spec.unwrap().template;
    let mut shipped = template.spec.clone().unwrap();
    shipped.host_network = None;
    shipped.dns_policy = None;
    shipped.runtime_class_name = None;
    assert_eq!(
        pod_security_verdict(client, shipped).await,
        Ok(()),
        "restricted admits the operator pod as shipped"
    );
    let mut host_network = template.spec.unwrap();
    host_network.runtime_class_name = None;
    let refusal = pod_security_verdict(client, host_network)
        .await
        .expect_err("restricted refuses a host-network pod");
    assert!(
        refusal.contains("violates PodSecurity \"restricted"),
        "refused by Pod Security: {refusal}"
    );
}

/// Waits until kube-apiserver enforces the installed admission policies, the group policy
/// with its parameters (the Groups): a namespace editor who manages no scope is refused a
/// token of the tenant's Group, naming the right she lacks, and an organization admin's token
/// is admitted. Checked with server-side dry runs (nothing is written). This runs after every
/// install, and `make test-e2e` installs three times in one cluster, so it is also the proof
/// that a reinstall works without restarting kube-apiserver (security review N4; with the
/// earlier ConfigMap parameter it refused every AccessToken: kubernetes/kubernetes#133827).
pub(crate) async fn admission_policies_are_live(tenant: &Tenant) {
    let (_, editor) = support::editor(tenant, "e2e-editor").await;
    let as_editor: Api<AccessToken> = Api::namespaced(editor, &tenant.namespace);
    support::wait_until_the_group_policy_reads(&as_editor, &tenant.group, cluster::DEADLINE).await;
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let org_probe = support::access_token(
        &tenant.namespace,
        "admission-probe",
        json!({"organization": tenant.organization}),
    );
    tenant
        .tokens()
        .create(&dry_run, &org_probe)
        .await
        .expect("an organization token is admitted");
}

/// Deletes the tenant's tokens and waits until the operator has removed them with their
/// TechnicalUsers and Secrets; then deletes the tenant's namespace, Group and Organization.
async fn delete_tenant(tenant: &Tenant) {
    tenant
        .tokens()
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    eventually_within("the tokens, their users and Secrets to be gone", || async {
        let tokens = tenant.tokens().list(&ListParams::default()).await.ok()?;
        let users = tenant.users().list(&ListParams::default()).await.ok()?;
        let secrets: Vec<Secret> = tenant
            .secrets()
            .list(
                &ListParams::default().labels("app.kubernetes.io/managed-by=access-token-operator"),
            )
            .await
            .ok()?
            .items;
        (tokens.items.is_empty() && users.items.is_empty() && secrets.is_empty()).then_some(())
    })
    .await;
    let delete = DeleteParams::default();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(tenant.client.clone())
        .delete(&tenant.namespace, &delete)
        .await
        .unwrap();
    Api::<access_token_operator::api::Group>::all(tenant.client.clone())
        .delete(&tenant.group, &delete)
        .await
        .unwrap();
    tenant
        .organizations()
        .delete(&tenant.organization, &delete)
        .await
        .unwrap();
}
