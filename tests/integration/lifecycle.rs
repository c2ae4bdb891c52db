//! DESIGN.md "Lifecycle beyond create/revoke/delete" and "Scope policy and the kill switch",
//! against the real control plane, the operator process and the verifier process.

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use access_token_operator::{
    api::{Group, Phase},
    token::Token,
};

use crate::{
    fixtures::{Tenant, ready_condition},
    harness::{LoopbackVerifier, Operator, eventually, operator_kubeconfig},
};

/// Merge-patches an Organization's or Group's spec, as a platform admin would.
async fn patch_scope_spec<K>(api: &kube::Api<K>, name: &str, spec: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
    .unwrap_or_else(|e| panic!("{name} is patched: {e}"));
}

/// Waits until the verifier answers `authenticated` for `token`.
async fn wait_for_verdict(verifier: &LoopbackVerifier, token: &Token, authenticated: bool) {
    let what = format!("the verifier to answer authenticated={authenticated}");
    eventually(&what, || async {
        let status = verifier.review(token.expose_secret()).await?;
        (status["authenticated"] == authenticated && status.get("error").is_none()).then_some(())
    })
    .await;
}

/// Waits until the token is Suspended for `reason` and its TechnicalUser disabled.
async fn wait_for_suspended(tenant: &Tenant, name: &str, reason: &str) {
    let token = tenant.wait_for_phase(name, Phase::Suspended).await;
    let ready = ready_condition(&token).expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", reason)
    );
    tenant.wait_for_user_disabled(name).await;
}

/// Issues `org` (organization-scoped) and `grp` (group-scoped) and returns their tokens.
async fn issue_org_and_group_tokens(tenant: &Tenant) -> (Token, Token) {
    let org_token = tenant
        .issue("org", json!({"organization": tenant.organization}))
        .await;
    let group_token = tenant.issue("grp", json!({"group": tenant.group})).await;
    (org_token, group_token)
}

#[tokio::test]
async fn the_organization_kill_switch_stops_its_tokens_and_its_groups_at_once_and_reverses() {
    let tenant = Tenant::new("killorg").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    let verifier = LoopbackVerifier::start(&tenant.namespace, &operator_kubeconfig().await, &[]);
    let (org_token, group_token) = issue_org_and_group_tokens(&tenant).await;
    wait_for_verdict(&verifier, &org_token, true).await;
    wait_for_verdict(&verifier, &group_token, true).await;

    // The operator is down: the verifier alone must stop the tokens, from the Organization.
    operator.kill().await;
    let orgs = tenant.organizations();
    patch_scope_spec(&orgs, &tenant.organization, json!({"suspended": true})).await;
    wait_for_verdict(&verifier, &org_token, false).await;
    wait_for_verdict(&verifier, &group_token, false).await;
    assert!(
        !tenant.users().get("org").await.unwrap().spec.disabled,
        "denied before the controller disabled anything"
    );
    assert!(
        verifier.logs().contains("scope_suspended"),
        "denied for the kill switch"
    );

    operator.start_again().await;
    wait_for_suspended(&tenant, "org", "ScopeSuspended").await;
    wait_for_suspended(&tenant, "grp", "ScopeSuspended").await;
    tenant.wait_for_event("org", "ScopeSuspended").await;

    // Reversal: the same tokens work again.
    patch_scope_spec(&orgs, &tenant.organization, json!({"suspended": false})).await;
    for name in ["org", "grp"] {
        tenant.wait_for_phase(name, Phase::Active).await;
    }
    wait_for_verdict(&verifier, &org_token, true).await;
    wait_for_verdict(&verifier, &group_token, true).await;
    assert_eq!(
        tenant.token_in_secret("org").await.id(),
        org_token.id(),
        "not reissued"
    );
    tenant.wait_for_event("org", "TokenReenabled").await;
}

#[tokio::test]
async fn the_group_kill_switch_stops_only_that_groups_tokens_and_reverses() {
    let tenant = Tenant::new("killgrp").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let verifier = LoopbackVerifier::start(&tenant.namespace, &operator_kubeconfig().await, &[]);
    let (org_token, group_token) = issue_org_and_group_tokens(&tenant).await;
    wait_for_verdict(&verifier, &group_token, true).await;

    let groups: kube::Api<Group> = kube::Api::all(tenant.client.clone());
    patch_scope_spec(&groups, &tenant.group, json!({"suspended": true})).await;
    wait_for_verdict(&verifier, &group_token, false).await;
    wait_for_suspended(&tenant, "grp", "ScopeSuspended").await;
    wait_for_verdict(&verifier, &org_token, true).await;
    assert_eq!(
        tenant
            .tokens()
            .get("org")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        Some(Phase::Active),
        "the organization's own tokens keep working"
    );

    patch_scope_spec(&groups, &tenant.group, json!({"suspended": false})).await;
    tenant.wait_for_phase("grp", Phase::Active).await;
    wait_for_verdict(&verifier, &group_token, true).await;
}

/// Creates an Organization as `kubectl apply` would and returns the API server's refusal.
async fn organization_refusal(tenant: &Tenant, policy: Value) -> String {
    let organization: access_token_operator::api::Organization = serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "Organization",
        "metadata": {"name": crate::harness::unique_name("policy")},
        "spec": {"tokenPolicy": policy},
    }))
    .expect("a well-typed Organization");
    match tenant
        .organizations()
        .create(&kube::api::PostParams::default(), &organization)
        .await
    {
        Ok(_) => panic!("an invalid tokenPolicy {policy} was accepted"),
        Err(kube::Error::Api(status)) => status.message,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn the_api_server_refuses_a_malformed_or_inconsistent_token_policy() {
    let tenant = Tenant::new("polcel").await;
    let message = organization_refusal(&tenant, json!({"maxLifetime": "90x"})).await;
    assert!(
        message.contains("tokenPolicy.maxLifetime must be a whole number followed by m, h, d or w"),
        "{message}"
    );
    let message = organization_refusal(
        &tenant,
        json!({"maxLifetime": "4w", "defaultLifetime": "29d"}),
    )
    .await;
    assert!(
        message.contains(
            "tokenPolicy.defaultLifetime must not be longer than tokenPolicy.maxLifetime"
        ),
        "{message}"
    );
    // Equal units compare by length, not text: 4w is 28 days, so 672h fits.
    let groups: kube::Api<Group> = kube::Api::all(tenant.client.clone());
    patch_scope_spec(
        &groups,
        &tenant.group,
        json!({"tokenPolicy": {"maxLifetime": "4w", "defaultLifetime": "672h"}}),
    )
    .await;
}

/// The effective expiry the AccessToken reports.
async fn reported_expiry(tenant: &Tenant, name: &str) -> k8s_openapi::jiff::Timestamp {
    let token = tenant.tokens().get(name).await.unwrap();
    token.status.unwrap().expires_at.expect("an expiry").0
}

/// Waits until the AccessToken reports `created + lifetime` as its expiry, and its
/// TechnicalUser and Secret carry the same.
async fn wait_for_expiry(tenant: &Tenant, name: &str, lifetime: k8s_openapi::jiff::SignedDuration) {
    let token = tenant.tokens().get(name).await.unwrap();
    let expected = token.metadata.creation_timestamp.unwrap().0 + lifetime;
    eventually(&format!("{name} to expire at {expected}"), || async {
        let reported = reported_expiry(tenant, name).await;
        let user = tenant.users().get(name).await.ok()?;
        let secret = tenant.secrets().get(name).await.ok()?;
        let in_secret = crate::fixtures::secret_text(&secret, "expires-at");
        (reported == expected
            && user.spec.expires_at.0 == expected
            && in_secret == expected.to_string())
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn max_lifetime_refuses_longer_tokens_and_tightening_moves_issued_tokens_expiry_earlier() {
    use k8s_openapi::jiff::SignedDuration;
    let tenant = Tenant::new("policy").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let orgs = tenant.organizations();
    patch_scope_spec(
        &orgs,
        &tenant.organization,
        json!({"tokenPolicy": {"maxLifetime": "30d"}}),
    )
    .await;
    let org = json!(tenant.organization);
    tenant
        .create_token("long", json!({"organization": org, "lifetime": "31d"}))
        .await;
    let refused = tenant.wait_for_reason("long", "PolicyViolation").await;
    assert_eq!(refused.status.as_ref().unwrap().phase, Some(Phase::Pending));
    let message = &ready_condition(&refused).unwrap().message;
    assert!(message.contains("tokenPolicy.maxLifetime"), "{message}");
    assert!(
        tenant.secrets().get_opt("long").await.unwrap().is_none(),
        "not issued"
    );

    tenant
        .issue("ok", json!({"organization": org, "lifetime": "2h"}))
        .await;
    tenant.issue("dflt", json!({"organization": org})).await;
    wait_for_expiry(&tenant, "dflt", SignedDuration::from_hours(30 * 24)).await;
    tenant
        .issue("grp", json!({"group": tenant.group, "lifetime": "2h"}))
        .await;

    // A Group tightens for its own tokens only.
    let groups: kube::Api<Group> = kube::Api::all(tenant.client.clone());
    patch_scope_spec(
        &groups,
        &tenant.group,
        json!({"tokenPolicy": {"maxLifetime": "1h"}}),
    )
    .await;
    wait_for_expiry(&tenant, "grp", SignedDuration::from_hours(1)).await;
    tenant.wait_for_event("grp", "TokenExpiryShortened").await;
    wait_for_expiry(&tenant, "ok", SignedDuration::from_hours(2)).await;

    // The organization tightens for everyone; an issued token is capped, never refused.
    patch_scope_spec(
        &orgs,
        &tenant.organization,
        json!({"tokenPolicy": {"maxLifetime": "30m"}}),
    )
    .await;
    for name in ["ok", "grp", "dflt"] {
        wait_for_expiry(&tenant, name, SignedDuration::from_mins(30)).await;
        tenant.wait_for_event(name, "TokenExpiryShortened").await;
        assert_eq!(
            tenant
                .tokens()
                .get(name)
                .await
                .unwrap()
                .status
                .unwrap()
                .phase,
            Some(Phase::Active)
        );
    }
}

/// The ExpiringSoon condition of an AccessToken: (status, reason).
async fn expiring_soon(tenant: &Tenant, name: &str) -> Option<(String, String)> {
    let token = tenant.tokens().get(name).await.ok()?;
    let status = token.status?;
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ExpiringSoon")?;
    Some((condition.status.clone(), condition.reason.clone()))
}

/// Waits until the ExpiringSoon condition of `name` has `status` and `reason`.
async fn wait_for_expiring_soon(tenant: &Tenant, name: &str, status: &str, reason: &str) {
    let expected = Some((status.to_string(), reason.to_string()));
    eventually(&format!("{name} to be ExpiringSoon={status}"), || async {
        (expiring_soon(tenant, name).await == expected).then_some(())
    })
    .await;
}

/// The TokenExpiringSoon Events of `name`: how many objects, and whether any was repeated.
async fn expiring_soon_events(tenant: &Tenant, name: &str) -> (usize, bool) {
    let events = kube::Api::<k8s_openapi::api::core::v1::Event>::namespaced(
        tenant.client.clone(),
        &tenant.namespace,
    )
    .list(&Default::default())
    .await
    .unwrap()
    .items;
    let ours: Vec<_> = events
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some("TokenExpiringSoon"))
        .collect();
    let repeated = ours
        .iter()
        .any(|e| e.series.is_some() || e.count.unwrap_or(1) > 1);
    (ours.len(), repeated)
}

#[tokio::test]
async fn expiring_soon_turns_true_within_the_warning_with_one_event_per_token() {
    let tenant = Tenant::new("soon").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    let orgs = tenant.organizations();
    patch_scope_spec(
        &orgs,
        &tenant.organization,
        json!({"tokenPolicy": {"expiryWarning": "2h"}}),
    )
    .await;
    let org = json!(tenant.organization);
    let soon = tenant
        .issue("soon", json!({"organization": org, "lifetime": "1h"}))
        .await;
    tenant
        .issue("later", json!({"organization": org, "lifetime": "3h"}))
        .await;
    wait_for_expiring_soon(&tenant, "soon", "True", "TokenExpiringSoon").await;
    wait_for_expiring_soon(&tenant, "later", "False", "ExpiryNotNear").await;
    tenant.wait_for_event("soon", "TokenExpiringSoon").await;
    let status = tenant.tokens().get("soon").await.unwrap().status.unwrap();
    assert_eq!(
        status.expiry_warned_token_id.as_deref(),
        Some(soon.id().as_str())
    );

    // More reconciles (a spec change, a restart) publish no second Event for the same token.
    tenant
        .patch_spec("soon", json!({"displayName": "touched"}))
        .await;
    eventually("the spec change to be reconciled", || async {
        let token = tenant.tokens().get("soon").await.ok()?;
        (token.status?.observed_generation == token.metadata.generation).then_some(())
    })
    .await;
    operator.restart().await;
    tenant
        .patch_spec("soon", json!({"displayName": "touched again"}))
        .await;
    eventually("the second spec change to be reconciled", || async {
        let token = tenant.tokens().get("soon").await.ok()?;
        (token.status?.observed_generation == token.metadata.generation).then_some(())
    })
    .await;
    assert_eq!(
        expiring_soon_events(&tenant, "soon").await,
        (1, false),
        "one Event"
    );
    assert_eq!(expiring_soon_events(&tenant, "later").await.0, 0);
}

#[tokio::test]
async fn expiring_soon_turns_true_on_time_without_any_change() {
    let tenant = Tenant::new("soonlater").await;
    let _operator = Operator::start(&tenant.namespace).await;
    // The group's warning applies (the organization sets none): 2 minutes of a 3-minute life.
    let groups: kube::Api<Group> = kube::Api::all(tenant.client.clone());
    patch_scope_spec(
        &groups,
        &tenant.group,
        json!({"tokenPolicy": {"expiryWarning": "2m"}}),
    )
    .await;
    tenant
        .issue("t", json!({"group": tenant.group, "lifetime": "3m"}))
        .await;
    wait_for_expiring_soon(&tenant, "t", "False", "ExpiryNotNear").await;
    // About a minute after creation; waited for past the usual deadline, still bounded.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(150);
    let expected = Some(("True".to_string(), "TokenExpiringSoon".to_string()));
    while expiring_soon(&tenant, "t").await != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ExpiringSoon never turned True"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    tenant.wait_for_event("t", "TokenExpiringSoon").await;
}
