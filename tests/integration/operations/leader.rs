//! Two replicas with `--leader-elect`: only the Lease holder reconciles; when it dies the
//! other takes over. Who leads is read from the Lease, who acted from the Events'
//! `reportingInstance`: API state, not the operator's log text.

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::json;

use access_token_operator::api::Phase;

use crate::support::{Operator, Tenant, eventually, unique_name};

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let tenant = Tenant::new("leader").await;
    let ns = tenant.namespace.clone();
    // The Lease lives in the operator's namespace (where its Role allows Leases), under a
    // name of this test's own. 10 s: long enough that a busy 2-core machine does not make
    // the leader miss a renewal, short enough for a quick takeover.
    let lease = unique_name("leader");
    let timing = ["--lease-duration-seconds", "10"];
    let leases: Api<Lease> =
        Api::namespaced(tenant.client.clone(), crate::support::OPERATOR_ACCOUNT.0);
    let holder = || async { leases.get_opt(&lease).await.ok()??.spec?.holder_identity };
    let mut first = Operator::builder(&ns)
        .log_name(&format!("{ns}-first"))
        .leader_election(&lease, Some("first"))
        .args(&timing)
        .start()
        .await;
    eventually("the first replica to hold the Lease", || async {
        (holder().await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let _second = Operator::builder(&ns)
        .log_name(&format!("{ns}-second"))
        .leader_election(&lease, Some("second"))
        .args(&timing)
        .start()
        .await;

    tenant
        .create_token("a", json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase("a", Phase::Active).await;
    tenant.wait_for_event("a", "TokenIssued").await;
    assert_eq!(
        tenant.issuers("a").await,
        ["first"],
        "the leader issued the token, the standby did not"
    );
    assert_eq!(
        holder().await.as_deref(),
        Some("first"),
        "the leader kept the Lease"
    );

    // The leader dies without releasing the Lease; the standby takes over once it lapses.
    first.kill().await;
    tenant
        .create_token("b", json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase("b", Phase::Active).await;
    tenant.wait_for_event("b", "TokenIssued").await;
    assert_eq!(holder().await.as_deref(), Some("second"));
    assert_eq!(tenant.issuers("b").await, ["second"]);
}
