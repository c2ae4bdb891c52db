//! Partitions from the API server (issue 7, findings 6 and 8): a leader that cannot renew its
//! Lease stops before a standby takes over, and a verifier whose watches fail stops answering
//! from stale caches. Each partitioned process reaches the API server through a loopback
//! proxy that the test cuts; everything else keeps talking to the API server directly.

use std::path::PathBuf;

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::Api;
use serde_json::{Value, json};

use access_token_operator::api::Phase;

use crate::support::{
    LoopbackVerifier, OPERATOR_ACCOUNT, Operator, Proxy, Tenant, admin_client, assert_no_token_in,
    eventually, operator_kubeconfig, unique_name,
};

/// Starts the replica `{ns}-leader` (through `leader_through`, a kubeconfig, when given) on
/// the Lease `lease` with the `timing` flags, waits until it leads, then starts
/// `{ns}-standby` and waits until it waits for leadership.
async fn leader_and_standby(
    ns: &str,
    lease: &str,
    timing: &[&str],
    leader_through: Option<PathBuf>,
) -> (Operator, Operator) {
    let mut leader = Operator::builder(ns)
        .log_name(&format!("{ns}-leader"))
        .leader_election(lease, Some("leader"))
        .args(timing);
    if let Some(kubeconfig) = leader_through {
        leader = leader.through(kubeconfig);
    }
    let leader = leader.start().await;
    eventually("the first replica to lead", || async {
        leader.logs().contains("acquired leadership").then_some(())
    })
    .await;
    let standby = Operator::builder(ns)
        .log_name(&format!("{ns}-standby"))
        .leader_election(lease, Some("standby"))
        .args(timing)
        .start()
        .await;
    eventually("the standby to wait", || async {
        standby
            .logs()
            .contains("waiting for leadership")
            .then_some(())
    })
    .await;
    (leader, standby)
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_exits_before_a_standby_takes_over() {
    let tenant = Tenant::new("partition-leader").await;
    let ns = tenant.namespace.clone();
    let lease = unique_name("partition-leader");
    // 20 s lease, 14 s renew deadline: the leader must be gone 6 s before the Lease lapses.
    // (Long enough that a busy machine stalling the leader for seconds before the cut does
    // not make it miss its deadline early: audit F1.)
    let timing = [
        "--lease-duration-seconds",
        "20",
        "--renew-deadline-seconds",
        "14",
    ];
    let proxy = Proxy::to_api_server().await;
    let through_proxy = proxy.kubeconfig(&operator_kubeconfig().await, &format!("{ns}-leader"));
    let (mut leader, standby) = leader_and_standby(&ns, &lease, &timing, Some(through_proxy)).await;
    tenant
        .create_token("before", json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase("before", Phase::Active).await;
    assert!(leader.logs().contains("token issued"));
    assert!(!standby.logs().contains("token issued"));

    // Partition the leader: it can no longer renew, and must stop on its own.
    proxy.cut();
    let status = leader.wait_for_exit().await;
    let exited_at = Timestamp::now();
    assert!(
        !status.success(),
        "a leader that lost its Lease exits with an error: {status}"
    );
    assert!(
        leader.logs().contains("renew deadline"),
        "the leader says why it stopped"
    );
    let leases: Api<Lease> = Api::namespaced(admin_client().await, OPERATOR_ACCOUNT.0);
    let holder = |lease: &Lease| {
        lease
            .spec
            .as_ref()
            .and_then(|spec| spec.holder_identity.clone())
    };
    assert_eq!(
        holder(&leases.get(&lease).await.unwrap()).as_deref(),
        Some("leader"),
        "nobody took the Lease over while the old leader was still running"
    );

    // The standby takes over once the Lease lapses, strictly after the old leader exited.
    let taken = eventually("the standby to take the Lease over", || async {
        let current = leases.get(&lease).await.ok()?;
        (holder(&current).as_deref() == Some("standby")).then_some(current)
    })
    .await;
    let acquired_at = taken
        .spec
        .and_then(|spec| spec.acquire_time)
        .expect("the new holder set acquireTime")
        .0;
    assert!(
        acquired_at > exited_at,
        "the standby acquired the Lease at {acquired_at}, after the old leader exited at {exited_at}"
    );
    eventually("the standby to report leadership", || async {
        standby.logs().contains("acquired leadership").then_some(())
    })
    .await;

    // And the new leader reconciles.
    tenant
        .create_token("after", json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase("after", Phase::Active).await;
    assert!(standby.logs().contains("token issued"));
}

#[tokio::test]
async fn a_verifier_cut_off_from_the_api_server_stops_answering_from_stale_state() {
    let tenant = Tenant::new("partition-verifier").await;
    let ns = tenant.namespace.clone();
    let _operator = Operator::start(&ns).await;
    let token = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;

    let proxy = Proxy::to_api_server().await;
    let through_proxy = proxy.kubeconfig(&operator_kubeconfig().await, &format!("{ns}-verifier"));
    let verifier = LoopbackVerifier::start(&ns, &through_proxy, &["--max-staleness-seconds", "2"]);
    let ready = || verifier.ready_status();
    let review = || verifier.review(token.expose_secret());
    let authenticated = |status: &Value| status["authenticated"] == true;
    eventually("the verifier to authenticate the token", || async {
        let status = review().await?;
        authenticated(&status).then_some(())
    })
    .await;
    assert_eq!(ready().await, Some(200));

    // Cut: the watches fail; past the staleness bound the verifier is not ready and answers
    // "could not check" instead of deciding from what it last saw.
    proxy.cut();
    eventually("/readyz to fail", || async {
        (ready().await == Some(503)).then_some(())
    })
    .await;
    let status = review().await.expect("the verifier answers");
    assert!(
        !authenticated(&status),
        "no answer from stale state: {status}"
    );
    assert!(
        status["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the answer is an error (could not check), not a denial: {status}"
    );

    // Restore: the watches list again, and the verifier is ready and authenticates again.
    proxy.restore();
    eventually("/readyz to succeed again", || async {
        (ready().await == Some(200)).then_some(())
    })
    .await;
    let status = review().await.expect("the verifier answers");
    assert!(authenticated(&status), "authenticates again: {status}");
    let logs = verifier.logs();
    assert!(logs.contains("watch healthy again"), "{logs}");
    assert_no_token_in(&logs, &[&token], "verifier's log");
}

#[tokio::test]
async fn a_leader_that_stops_cleanly_hands_the_lease_over_at_once() {
    let tenant = Tenant::new("handover").await;
    let ns = tenant.namespace.clone();
    let lease = unique_name("handover");
    // A Lease far longer than any wait in this test: a standby that takes over within the
    // test's deadline can only have done so because the leader released the Lease.
    let timing = ["--lease-duration-seconds", "600"];
    let (mut leader, standby) = leader_and_standby(&ns, &lease, &timing, None).await;

    let status = leader.terminate().await;
    assert!(status.success(), "a clean shutdown exits 0: {status}");
    assert!(leader.logs().contains("released the lease"));
    eventually(
        "the standby to take over without waiting for the Lease to lapse",
        || async { standby.logs().contains("acquired leadership").then_some(()) },
    )
    .await;
    tenant
        .create_token("t", json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase("t", Phase::Active).await;
    assert!(standby.logs().contains("token issued"));
}
