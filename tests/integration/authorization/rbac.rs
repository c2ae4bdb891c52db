//! The operator does its whole job under the ClusterRole in deploy/rbac.yaml and nothing more.

use kube::Api;
use serde_json::json;

use access_token_operator::api::Phase;

use crate::support::{
    LoopbackVerifier, OPERATOR_ACCOUNT, Operator, Tenant, eventually, operator_kubeconfig,
    service_account_token, unique_name,
};

#[tokio::test]
async fn the_operator_works_with_exactly_the_shipped_cluster_role() {
    // Every test runs the operator as its ServiceAccount (see support::operator_kubeconfig);
    // this one also proves the identity is really limited, and covers leader election and
    // the verifier's writes under the same rules.
    let tenant = Tenant::new("rbac").await;
    let sa_token = service_account_token(OPERATOR_ACCOUNT.0, OPERATOR_ACCOUNT.1).await;

    // The identity really is limited: it may not even list namespaces.
    let as_operator = crate::support::client_with_token(&sa_token).await;
    let denied = Api::<k8s_openapi::api::core::v1::Namespace>::all(as_operator)
        .list(&Default::default())
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{denied:?}"
    );

    // With leader election, as deploy/operator.yaml runs it (the Lease in the operator's
    // namespace; a Lease name of its own so that other tests' operators do not compete).
    let lease = unique_name("rbac-lease");
    let operator = Operator::builder(&tenant.namespace)
        .leader_election(&lease, None)
        .start()
        .await;
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
    let kubeconfig = operator_kubeconfig().await;
    let verifier = LoopbackVerifier::start(&tenant.namespace, &kubeconfig, &[]);
    let value = tenant.token_in_secret("t").await;
    eventually(
        "the verifier, as the operator's ServiceAccount, to accept the token",
        || async {
            let status = verifier.review(value.expose_secret()).await?;
            (status["authenticated"] == true).then_some(())
        },
    )
    .await;
    eventually("lastUsedAt written under the shipped RBAC", || async {
        tenant.tokens().get("t").await.ok()?.status?.last_used_at
    })
    .await;

    tenant.patch_spec("t", json!({"revoked": true})).await;
    tenant.wait_for_phase("t", Phase::Revoked).await;
    tenant.delete_token("t").await;
    eventually("cleanup under the shipped RBAC", || async {
        let gone = tenant.tokens().get_opt("t").await.unwrap().is_none()
            && tenant.secrets().get_opt("t").await.unwrap().is_none()
            && tenant.users().get_opt("t").await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
}
