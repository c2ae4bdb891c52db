//! The operator does its whole job under the ClusterRole in deploy/rbac.yaml and nothing more.

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    discovery::Discovery,
};
use serde_json::json;

use access_token_operator::api::Phase;

use crate::{
    fixtures::Tenant,
    harness::{Operator, admin_client, eventually},
};

/// Applies every document of deploy/rbac.yaml with server-side apply.
async fn apply_deploy_rbac(client: &kube::Client) {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml"))
        .expect("deploy/rbac.yaml is readable");
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery works");
    for document in serde_yaml::Deserializer::from_str(&yaml) {
        let object: DynamicObject = serde::Deserialize::deserialize(document).expect("a manifest");
        let gvk =
            kube::api::GroupVersionKind::try_from(object.types.as_ref().expect("typed")).unwrap();
        let (resource, capabilities) = discovery.resolve_gvk(&gvk).expect("a known kind");
        let api: Api<DynamicObject> = match capabilities.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object.namespace().as_deref().unwrap_or("default"),
                &resource,
            ),
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &object.name_any(),
            &PatchParams::apply("integration-tests").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("{} applies: {e}", object.name_any()));
    }
}

#[tokio::test]
async fn the_operator_works_with_exactly_the_shipped_cluster_role() {
    let tenant = Tenant::new("rbac").await;
    let admin = admin_client().await;
    apply_deploy_rbac(&admin).await;

    // A short-lived token for the operator's ServiceAccount, as the kubelet would mount.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "access-token-operator");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued = accounts
        .create_token_request("access-token-operator", &PostParams::default(), &request)
        .await
        .expect("a ServiceAccount token is issued");
    let sa_token = issued
        .status
        .and_then(|s| s.token)
        .expect("the TokenRequest carries a token");

    // The identity really is limited: it may not even list namespaces.
    let as_operator = crate::harness::client_with_token(&sa_token).await;
    let denied = Api::<k8s_openapi::api::core::v1::Namespace>::all(as_operator)
        .list(&Default::default())
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{denied:?}"
    );

    // With leader election, as deploy/operator.yaml runs it (the Lease in the operator's namespace).
    let leader_election = [
        "--leader-elect",
        "--leader-election-namespace",
        "access-token-operator",
    ];
    let operator = Operator::start_as(&tenant.namespace, &sa_token, &leader_election).await;
    tenant
        .create_token("t", json!({"group": tenant.group}))
        .await;
    tenant.wait_for_phase("t", Phase::Active).await;
    tenant.wait_for_event("t", "TokenIssued").await;
    assert!(
        operator.logs().contains("acquired leadership"),
        "the Lease was taken under the shipped Role"
    );

    // The verifier under the same identity: its watches, and its lastUsedAt status writes.
    let kubeconfig = crate::harness::kubeconfig_with_token("rbac-verifier", &sa_token);
    let port = crate::harness::free_port();
    let _verifier = tokio::process::Command::new(env!("CARGO_BIN_EXE_access-token-operator"))
        .args([
            "verifier",
            "--verifier-bind",
            &format!("127.0.0.1:{port}"),
            "--insecure-http",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let value = tenant.token_in_secret("t").await;
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": value.expose_secret()}});
    let url = format!("http://127.0.0.1:{port}/tokenreviews");
    eventually(
        "the verifier, as the operator's ServiceAccount, to accept the token",
        || async {
            let answer: serde_json::Value = reqwest::Client::new()
                .post(&url)
                .json(&review)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (answer["status"]["authenticated"] == true).then_some(())
        },
    )
    .await;
    eventually("lastUsedAt written under the shipped RBAC", || async {
        tenant.tokens().get("t").await.ok()?.status?.last_used_at
    })
    .await;

    tenant.patch_spec("t", json!({"revoked": true})).await;
    tenant.wait_for_phase("t", Phase::Revoked).await;
    tenant
        .tokens()
        .delete("t", &DeleteParams::default())
        .await
        .unwrap();
    eventually("cleanup under the shipped RBAC", || async {
        let gone = tenant.tokens().get_opt("t").await.unwrap().is_none()
            && tenant.secrets().get_opt("t").await.unwrap().is_none()
            && tenant.users().get_opt("t").await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
}
