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
