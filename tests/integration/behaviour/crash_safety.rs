//! Killing the operator (SIGKILL) at any point and restarting it never mints a second token
//! for one AccessToken, and a restart rewrites nothing.

use std::{collections::BTreeMap, time::Duration};

use kube::{ResourceExt, api::ListParams};
use serde_json::json;

use access_token_operator::{api::Phase, token::verify_token};

use crate::support::{Operator, Tenant, eventually, secret_text};

const TOKENS: usize = 8;

/// resourceVersion of every TechnicalUser in the tenant's namespace, by name.
async fn user_versions(tenant: &Tenant) -> BTreeMap<String, Option<String>> {
    let users = tenant.list_users().await;
    users
        .into_iter()
        .map(|u| (u.name_any(), u.resource_version()))
        .collect()
}

/// Whether some token is mid-issue: its TechnicalUser holds a staged credential that its
/// Secret (missing, or holding another token) does not, i.e. the operator stopped between
/// staging the credential and writing the Secret.
async fn mid_issue(tenant: &Tenant) -> bool {
    let users = tenant.list_users().await;
    for user in users {
        let secret = tenant.secrets().get_opt(&user.name_any()).await.unwrap();
        let in_secret = secret.map(|s| secret_text(&s, "token-id"));
        if user
            .spec
            .credentials
            .iter()
            .any(|c| in_secret.as_deref() != Some(c.id.as_str()))
        {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn killing_the_operator_mid_issue_never_makes_a_second_token_or_secret() {
    let tenant = Tenant::new("crash").await;
    // The first run dies right after staging a credential, so at least one kill is known to
    // land between the TechnicalUser and the Secret write; random kills follow.
    let mut operator = Operator::builder(&tenant.namespace)
        .crash_at("credential-staged")
        .start()
        .await;
    for i in 0..TOKENS {
        tenant
            .create_token(
                &format!("t{i}"),
                json!({"organization": tenant.organization}),
            )
            .await;
    }
    assert!(operator.wait_for_crash().await, "the operator aborted");
    assert!(
        mid_issue(&tenant).await,
        "the crash left a staged credential without its Secret"
    );
    operator.start_again().await;
    // Kills spread over the issuing work: each lands somewhere between TechnicalUser,
    // Secret, Event and status writes of some token.
    let mut landed_mid_issue = 1;
    for _ in 0..8 {
        let crash_after = Duration::from_millis(rand::random_range(20..250));
        tokio::time::sleep(crash_after).await;
        operator.kill().await;
        if mid_issue(&tenant).await {
            landed_mid_issue += 1;
        }
        operator.restart().await;
    }
    eprintln!("{landed_mid_issue} of 9 kills landed between staging and the Secret write");

    for i in 0..TOKENS {
        tenant.wait_for_phase(&format!("t{i}"), Phase::Active).await;
    }
    let managed =
        ListParams::default().labels("app.kubernetes.io/managed-by=access-token-operator");
    let secrets = tenant.secrets().list(&managed).await.unwrap().items;
    assert_eq!(secrets.len(), TOKENS, "exactly one Secret per AccessToken");
    for i in 0..TOKENS {
        let name = format!("t{i}");
        let token = tenant.tokens().get(&name).await.unwrap();
        let value = tenant.token_in_secret(&name).await;
        let user = eventually("the TechnicalUser to settle on one credential", || async {
            let user = tenant.users().get(&name).await.ok()?;
            (user.spec.credentials.len() == 1).then_some(user)
        })
        .await;
        assert_eq!(
            token.status.unwrap().token_id.as_deref(),
            Some(value.id().as_str())
        );
        assert_eq!(user.spec.credentials[0].id, value.id().as_str());
        assert!(
            verify_token(&value, &user.spec.credentials[0].hash),
            "{name}: the credential is the Secret's token"
        );
        assert!(
            !tenant.has_event(&name, "TokenReissued").await,
            "{name}: a crash is never mistaken for a lost Secret"
        );
    }

    // A restart leaves every Secret and TechnicalUser exactly as it was.
    let snapshot = |secrets: Vec<k8s_openapi::api::core::v1::Secret>| {
        secrets
            .into_iter()
            .map(|s| {
                (
                    s.name_any(),
                    (s.resource_version(), secret_text(&s, "token")),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let secrets_before = snapshot(tenant.secrets().list(&managed).await.unwrap().items);
    let users_before = user_versions(&tenant).await;
    let logged_before = operator.logs().len();
    operator.restart().await;
    eventually(
        "the restarted operator to reconcile every token",
        || async {
            let logs = operator.logs();
            let since_restart = &logs[logged_before..];
            (0..TOKENS)
                .all(|i| {
                    since_restart
                        .lines()
                        .any(|l| l.contains("reconciled") && l.contains(&format!("name: \"t{i}\"")))
                })
                .then_some(())
        },
    )
    .await;
    let secrets_after = snapshot(tenant.secrets().list(&managed).await.unwrap().items);
    assert_eq!(
        secrets_after, secrets_before,
        "Secrets' data and resourceVersions are unchanged"
    );
    let users_after = user_versions(&tenant).await;
    assert_eq!(users_after, users_before, "TechnicalUsers are unchanged");
}

/// Every named point between minting a token and reporting it: the operator aborts there,
/// restarts, and the token it finally reports is the one in the Secret, with one credential.
#[tokio::test]
async fn a_crash_at_each_step_of_issuing_is_recovered_without_a_second_token() {
    for point in ["credential-staged", "secret-written", "user-applied"] {
        // A namespace per point: the crashing operator must meet no other token first.
        let tenant = Tenant::new("crashpoint").await;
        let name = "t";
        let mut operator = Operator::builder(&tenant.namespace)
            .crash_at(point)
            .start()
            .await;
        tenant
            .create_token(name, json!({"organization": tenant.organization}))
            .await;
        assert!(
            operator.wait_for_crash().await,
            "{point}: the operator aborted there"
        );
        let secret_after_crash = tenant.secrets().get_opt(name).await.unwrap();
        let token_in_secret_after_crash =
            secret_after_crash.as_ref().map(|s| secret_text(s, "token"));
        match point {
            "credential-staged" => assert!(
                secret_after_crash.is_none(),
                "crashed before the Secret was written"
            ),
            _ => assert!(
                secret_after_crash.is_some(),
                "{point}: the Secret was written before the crash"
            ),
        }

        operator.start_again().await;
        tenant.wait_for_phase(name, Phase::Active).await;
        let value = tenant.token_in_secret(name).await;
        if let Some(before) = token_in_secret_after_crash {
            assert_eq!(
                value.expose_secret(),
                before,
                "{point}: a written token is never replaced after a crash"
            );
        }
        let user = eventually("one credential", || async {
            let user = tenant.users().get(name).await.ok()?;
            (user.spec.credentials.len() == 1).then_some(user)
        })
        .await;
        assert_eq!(user.spec.credentials[0].id, value.id().as_str(), "{point}");
        assert!(
            verify_token(&value, &user.spec.credentials[0].hash),
            "{point}"
        );
        let token = tenant.tokens().get(name).await.unwrap();
        assert_eq!(
            token.status.unwrap().token_id.as_deref(),
            Some(value.id().as_str()),
            "{point}"
        );
        let managed =
            ListParams::default().labels(&format!("iam.accesstoken.io/access-token={name}"));
        assert_eq!(
            tenant.secrets().list(&managed).await.unwrap().items.len(),
            1,
            "{point}: one Secret"
        );
        assert!(
            !tenant.has_event(name, "TokenReissued").await,
            "{point}: a crash is never reported as a lost Secret"
        );
    }
}
