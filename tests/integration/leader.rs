//! Two replicas with `--leader-elect`: only the Lease holder reconciles; when it dies the
//! other takes over.

use serde_json::json;

use access_token_operator::api::Phase;

use crate::{
    fixtures::Tenant,
    harness::{Operator, eventually, unique_name},
};

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let tenant = Tenant::new("leader").await;
    let ns = tenant.namespace.clone();
    // The Lease lives in the operator's namespace (where its Role allows Leases), under a
    // name of this test's own; a short duration keeps the takeover quick.
    let lease = unique_name("leader");
    let args = |id| {
        [
            "--leader-elect",
            "--leader-election-namespace",
            crate::harness::OPERATOR_ACCOUNT.0,
            "--leader-election-lease-name",
            &lease,
            "--lease-duration-seconds",
            "3",
            "--instance",
            id,
        ]
    };
    let mut first = Operator::start_with_args(&ns, &format!("{ns}-first"), &args("first")).await;
    eventually("the first replica to lead", || async {
        first.logs().contains("acquired leadership").then_some(())
    })
    .await;
    let second = Operator::start_with_args(&ns, &format!("{ns}-second"), &args("second")).await;
    eventually("the second replica to wait", || async {
        second
            .logs()
            .contains("waiting for leadership")
            .then_some(())
    })
    .await;

    tenant
        .create_token("a", json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase("a", Phase::Active).await;
    assert!(
        first.logs().contains("token issued"),
        "the leader issued the token"
    );
    assert!(
        !second.logs().contains("token issued"),
        "the standby did not reconcile"
    );
    assert!(!second.logs().contains("acquired leadership"));

    // The leader dies without releasing the Lease; the standby takes over once it lapses.
    first.kill().await;
    tenant
        .create_token("b", json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase("b", Phase::Active).await;
    assert!(second.logs().contains("acquired leadership"));
    assert!(second.logs().contains("token issued"));
}
