//! The verified-Secret record in the TechnicalUser (`iam.accesstoken.io/verified-secret`): a
//! restarted operator runs no argon2 for Secrets unchanged since they were verified, and
//! still catches one tampered with while it was down.

use kube::ResourceExt;
use serde_json::json;

use access_token_operator::token::Token;

use crate::{
    behaviour::access_tokens::plant_same_id_token,
    support::{Operator, Tenant, eventually},
};

const RECORD: &str = "iam.accesstoken.io/verified-secret";
/// The operator's debug line for each argon2 check of a Secret's token.
const ARGON2_CHECK: &str = "Secret's token checked with argon2id";

/// Waits until the TechnicalUser `name` records its Secret, at its current resourceVersion,
/// as holding the token of `token`; returns the record.
async fn wait_for_record(tenant: &Tenant, name: &str, token: &Token) -> String {
    eventually(
        "the TechnicalUser to record its verified Secret",
        || async {
            let secret = tenant.secrets().get(name).await.ok()?;
            let user = tenant.users().get(name).await.ok()?;
            let expected = format!(
                "{}/{}/{}",
                secret.uid()?,
                secret.resource_version()?,
                token.id().as_str()
            );
            (user.annotations().get(RECORD) == Some(&expected)).then_some(expected)
        },
    )
    .await
}

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

#[tokio::test]
async fn a_restarted_operator_runs_no_argon2_for_unchanged_secrets() {
    let tenant = Tenant::new("norehash").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    let names = ["t0", "t1", "t2"];
    let mut records = Vec::new();
    for name in names {
        let token = tenant
            .issue(name, json!({"organization": tenant.organization}))
            .await;
        records.push(wait_for_record(&tenant, name, &token).await);
    }
    // A mint records the Secret it wrote: no reconcile since had to hash it.
    assert!(
        !operator.logs().contains(ARGON2_CHECK),
        "{}",
        operator.logs()
    );

    let offset = operator.logs().len();
    operator.restart().await;
    wait_for_reconciles(&operator, offset, &names).await;
    let since = operator.logs()[offset..].to_string();
    assert!(
        !since.contains(ARGON2_CHECK),
        "no argon2 after a restart for Secrets nobody changed:\n{since}"
    );
    for (name, record) in names.iter().zip(&records) {
        let user = tenant.users().get(name).await.unwrap();
        assert_eq!(user.annotations().get(RECORD), Some(record), "{name}");
    }
}

#[tokio::test]
async fn a_secret_tampered_with_while_the_operator_was_down_gets_a_fresh_token() {
    let tenant = Tenant::new("downtamper").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    let issued = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    let record = wait_for_record(&tenant, "t", &issued).await;

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
    let new_record = wait_for_record(&tenant, "t", &replaced).await;
    assert_ne!(new_record, record);
}
