//! A tenant who makes the token's Secret unwritable (an admission policy here; a quota or a
//! webhook would do the same) gets a Stalled token with a reason and a real backoff: never a
//! hot loop, never a TechnicalUser that grows with each attempt. Once the Secret can be
//! written, the token becomes Active with exactly one credential.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::{
    Api,
    api::{ListParams, ObjectMeta},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

use access_token_operator::{
    api::{Phase, TechnicalUser},
    token::verify_token,
};

use crate::support::{
    DEADLINE, Operator, Tenant, delete_denial, deny_writes_in, eventually, lift_denial,
    ready_condition, within,
};

/// Text of the test policy's denial. The operator must not copy the API server's message
/// into status or Events (a webhook's message could quote the request, i.e. the token).
const DENIAL: &str = "secrets-frozen-by-hostile-controller-test";

/// Failed attempts to observe before the Secret is let through.
const ATTEMPTS: usize = 4;

/// The operator's first wait after a failed Secret write; each failure doubles it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Denies every create and update of a Secret in `namespace`, for everyone (the operator's
/// ServiceAccount included). Returns the name of the policy and its binding.
async fn deny_secrets_in(namespace: &str) -> String {
    let probe = Secret {
        metadata: ObjectMeta {
            name: Some("probe".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    deny_writes_in(namespace, DENIAL, &probe).await
}

#[tokio::test]
async fn a_secret_write_that_keeps_failing_stalls_with_backoff_and_never_grows_the_user() {
    let tenant = Tenant::new("hostile-secret").await;
    let policy = deny_secrets_in(&tenant.namespace).await;
    let name = "t";

    // Every write of the TechnicalUser, as it happens: each failed attempt stages one
    // credential, so each attempt is one new generation.
    let (sender, mut writes) = tokio::sync::mpsc::unbounded_channel::<(Instant, TechnicalUser)>();
    let watch = {
        let users = tenant.users();
        tokio::spawn(async move {
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let mut stream = watcher(users, config).applied_objects().boxed();
            while let Some(event) = stream.next().await {
                if let Ok(user) = event
                    && sender.send((Instant::now(), user)).is_err()
                {
                    return;
                }
            }
        })
    };

    let operator = Operator::start(&tenant.namespace).await;
    tenant
        .create_token(name, json!({"organization": tenant.organization}))
        .await;

    // Record the first time each generation is seen, until ATTEMPTS attempts have failed.
    let mut attempts: Vec<(Instant, i64)> = Vec::new();
    let mut most_credentials = 0;
    while attempts.len() < ATTEMPTS {
        let (seen, user) = within(DEADLINE, writes.recv())
            .await
            .expect("the TechnicalUser watch keeps running");
        most_credentials = most_credentials.max(user.spec.credentials.len());
        let generation = user.metadata.generation.expect("a generation");
        if attempts.last().is_none_or(|(_, last)| generation > *last) {
            attempts.push((seen, generation));
        }
    }
    assert!(
        tenant.secrets().get_opt(name).await.unwrap().is_none(),
        "no Secret was written"
    );

    // Spaced by the backoff (1 s, 2 s, 4 s between attempts), not a hot loop. The bound is
    // half the backoff so that watch delivery jitter cannot fail it; a hot loop retries
    // within the time of one argon2 hash and a few API calls, far below it.
    for (i, pair) in attempts.windows(2).enumerate() {
        let spacing = pair[1].0 - pair[0].0;
        let backoff = FIRST_BACKOFF * 2u32.pow(i as u32);
        assert!(
            spacing >= backoff / 2,
            "attempt {} came {spacing:?} after the previous one; the backoff is {backoff:?}",
            i + 2
        );
    }
    let (first, last) = (attempts[0].0, attempts[ATTEMPTS - 1].0);
    let total_backoff: Duration = (0..ATTEMPTS - 1)
        .map(|i| FIRST_BACKOFF * 2u32.pow(i as u32))
        .sum();
    assert!(
        last - first >= total_backoff / 2,
        "{ATTEMPTS} attempts within {:?}; the backoff alone is {total_backoff:?}",
        last - first
    );
    assert!(
        most_credentials <= 2,
        "the TechnicalUser held {most_credentials} credentials; staging never accumulates"
    );

    // Stalled, with the reason, a Warning Event, and no copy of the API server's message.
    let token = tenant.wait_for_reason(name, "SecretWriteFailed").await;
    let status = token.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    let ready = ready_condition(&token).unwrap();
    assert_eq!(ready.status, "False");
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .expect("a Stalled condition");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "SecretWriteFailed")
    );
    assert!(
        ready.message.contains("attempt(s) failed") && ready.message.contains("next at"),
        "the message says how many attempts failed and when the next is: {}",
        ready.message
    );
    tenant.wait_for_event(name, "SecretWriteFailed").await;
    let events = Api::<Event>::namespaced(tenant.client.clone(), &tenant.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let warning = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("SecretWriteFailed"))
        .unwrap();
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    for text in std::iter::once(ready.message.as_str())
        .chain(events.iter().filter_map(|e| e.message.as_deref()))
    {
        assert!(
            !text.contains(DENIAL),
            "the API server's message is not copied: {text}"
        );
    }

    // Let Secrets through: the next attempt issues the token, with exactly one credential.
    lift_denial(&policy).await;
    let token = tenant.wait_for_phase(name, Phase::Active).await;
    assert!(
        !token
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled"),
        "no longer Stalled"
    );
    let value = tenant.token_in_secret(name).await;
    let user = eventually("the TechnicalUser to hold one credential", || async {
        let user = tenant.users().get(name).await.ok()?;
        (user.spec.credentials.len() == 1).then_some(user)
    })
    .await;
    assert_eq!(user.spec.credentials[0].id, value.id().as_str());
    assert!(
        verify_token(&value, &user.spec.credentials[0].hash),
        "the credential is the Secret's token"
    );
    assert_eq!(
        token.status.unwrap().token_id.as_deref(),
        Some(value.id().as_str())
    );
    // Over the whole run the TechnicalUser never held more than two credentials.
    while let Ok((_, user)) = writes.try_recv() {
        assert!(
            user.spec.credentials.len() <= 2,
            "{:?}",
            user.spec.credentials.len()
        );
    }

    watch.abort();
    drop(operator);
    delete_denial(&policy).await;
}

/// A Secret that cannot be updated delays only the Secret's own keys: a revocation still
/// disables the token at once, the token reports the failed write, and the Secret catches
/// up once it can be written.
#[tokio::test]
async fn a_secret_that_cannot_be_updated_never_holds_up_a_revocation() {
    let tenant = Tenant::new("hostile-update").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let name = "t";
    let value = tenant
        .issue(name, json!({"organization": tenant.organization}))
        .await;
    let policy = deny_secrets_in(&tenant.namespace).await;

    // Revoke, and ask for a label on the Secret that the policy will not let through.
    tenant
        .patch_spec(
            name,
            json!({"revoked": true, "secretTemplate": {"labels": {"team": "platform"}}}),
        )
        .await;
    let token = tenant.wait_for_reason(name, "SecretWriteFailed").await;
    assert_eq!(
        token.status.as_ref().unwrap().phase,
        Some(Phase::Revoked),
        "the phase is the token's, whatever happens to its Secret"
    );
    let user = tenant.users().get(name).await.unwrap();
    assert!(
        user.spec.disabled,
        "the revocation reached the TechnicalUser"
    );
    assert_eq!(user.spec.credentials.len(), 1);
    assert_eq!(user.spec.credentials[0].id, value.id().as_str());
    tenant.wait_for_event(name, "TokenRevoked").await;

    lift_denial(&policy).await;
    tenant.wait_for_reason(name, "TokenRevoked").await;
    let secret = tenant.secrets().get(name).await.unwrap();
    assert_eq!(
        secret.metadata.labels.unwrap_or_default().get("team"),
        Some(&"platform".to_string()),
        "the Secret caught up"
    );
    assert_eq!(
        tenant.token_in_secret(name).await.expose_secret(),
        value.expose_secret(),
        "the same token throughout"
    );
    delete_denial(&policy).await;
}
