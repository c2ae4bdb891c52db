//! The operator's memory of verified Secrets: no argon2 for a Secret it wrote or verified
//! unchanged since, no write to remember it (issue 22: one write per token fewer), one argon2
//! per Secret after a restart, and a Secret tampered with while it was down still caught.

use kube::ResourceExt;
use serde_json::json;

use access_token_operator::api::Phase;

use crate::{
    behaviour::access_tokens::plant_same_id_token,
    support::{Operator, Tenant, eventually},
};

/// The operator's debug line for each argon2 check of a Secret's token.
const ARGON2_CHECK: &str = "Secret's token checked with argon2id";

/// Waits until the operator has finished a reconcile of each of `names` in the log text
/// that follows `offset`.
async fn wait_for_reconciles(operator: &Operator, offset: usize, names: &[&str]) {
    eventually("a reconcile of every token after the restart", || async {
        let logs = operator.logs();
        let since = logs.get(offset..)?;
        names
            .iter()
            .all(|name| {
                since
                    .lines()
                    .any(|l| l.contains("reconciled") && l.contains(&format!("\"{name}\"")))
            })
            .then_some(())
    })
    .await;
}

/// Each TechnicalUser of the tenant by name, with its resourceVersion.
async fn user_versions(tenant: &Tenant) -> Vec<(String, Option<String>)> {
    let users = tenant.users().list(&Default::default()).await.unwrap();
    users
        .items
        .iter()
        .map(|u| (u.name_any(), u.resource_version()))
        .collect()
}

#[tokio::test]
async fn secrets_are_verified_once_per_operator_life_and_never_written_for_it() {
    let tenant = Tenant::new("norehash").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    let names = ["t0", "t1", "t2"];
    for name in names {
        tenant
            .issue(name, json!({"organization": tenant.organization}))
            .await;
    }
    // A mint remembers the Secret it wrote: no reconcile since had to hash it.
    assert!(
        !operator.logs().contains(ARGON2_CHECK),
        "{}",
        operator.logs()
    );
    let before = user_versions(&tenant).await;

    let offset = operator.logs().len();
    operator.restart().await;
    wait_for_reconciles(&operator, offset, &names).await;
    // A restarted operator remembers nothing: each Secret is checked once, and matches.
    let checks = |operator: &crate::support::Operator| {
        let since = operator.logs()[offset..].to_string();
        let checks: Vec<String> = since
            .lines()
            .filter(|l| l.contains(ARGON2_CHECK))
            .map(str::to_string)
            .collect();
        (since, checks)
    };
    let (since, restarted) = checks(&operator);
    assert_eq!(
        restarted.len(),
        names.len(),
        "one check per Secret:\n{since}"
    );
    assert!(
        restarted.iter().all(|l| l.contains("matches=true")),
        "{since}"
    );
    // Remembering wrote nothing: the TechnicalUsers are the versions the mints left.
    let after = user_versions(&tenant).await;
    assert_eq!(before, after);

    // Reconciling each token again (a revocation) checks nothing again.
    let again = operator.logs().len();
    for name in names {
        tenant.patch_spec(name, json!({"revoked": true})).await;
    }
    for name in names {
        tenant.wait_for_phase(name, Phase::Revoked).await;
    }
    wait_for_reconciles(&operator, again, &names).await;
    let (since, all) = checks(&operator);
    assert_eq!(all.len(), names.len(), "no second check:\n{since}");
}

#[tokio::test]
async fn a_secret_tampered_with_while_the_operator_was_down_gets_a_fresh_token() {
    let tenant = Tenant::new("downtamper").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    let issued = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    operator.kill().await;
    // Same id, another secret, valid checksum: only argon2 can tell. The write moves the
    // Secret's resourceVersion past the record.
    let planted = plant_same_id_token(&tenant, "t", &issued).await;
    let offset = operator.logs().len();
    operator.start_again().await;

    let replaced = eventually("the planted token to be replaced", || async {
        let token = tenant.token_in_secret("t").await;
        (token.expose_secret() != planted.expose_secret()).then_some(token)
    })
    .await;
    assert_ne!(replaced.id(), issued.id(), "a fresh token");
    tenant.wait_for_event("t", "TokenReissued").await;
    let since = operator.logs()[offset..].to_string();
    assert!(
        since.contains(ARGON2_CHECK) && since.contains("matches=false"),
        "the planted token was checked with argon2 and refused:\n{since}"
    );
}
