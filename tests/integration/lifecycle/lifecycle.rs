//! docs/concepts/lifecycle.md from "Kill switch" to "Idle tokens" (rotation, policy, idleness),
//! against the real control plane, the operator process and the verifier process.

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use access_token_operator::{
    api::{Group, Phase},
    token::Token,
};

use crate::support::{
    LoopbackVerifier, Operator, Tenant, eventually, operator_kubeconfig, ready_condition,
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
        "metadata": {"name": crate::support::unique_name("policy")},
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
        let in_secret = crate::support::secret_text(&secret, "expires-at");
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

/// Polls `check` for up to `seconds` (for waits on durations longer than the usual deadline:
/// the shortest overlap or renewal the API allows is a minute).
async fn within_seconds<T, Fut>(seconds: u64, what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {seconds}s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Waits until the Secret `name` holds a token other than `old`, and returns it.
async fn wait_for_new_token(tenant: &Tenant, name: &str, old: &Token, seconds: u64) -> Token {
    within_seconds(seconds, "a new token in the Secret", || async {
        let secret = tenant.secrets().get(name).await.ok()?;
        let value = Token::parse(&crate::support::secret_text(&secret, "token")).ok()?;
        (value.id() != old.id()).then_some(value)
    })
    .await
}

/// The uid of the TechnicalUser `t`.
async fn user_uid(tenant: &Tenant) -> Option<String> {
    tenant.users().get("t").await.unwrap().metadata.uid
}

/// The TechnicalUser's credentials.
async fn credentials(tenant: &Tenant, name: &str) -> Vec<access_token_operator::api::Credential> {
    tenant.users().get(name).await.unwrap().spec.credentials
}

#[tokio::test]
async fn a_manual_rotation_keeps_the_previous_token_working_for_the_overlap_and_not_after() {
    use crate::{support::VerifierProcess, verifier::webhook::whoami};
    let tenant = Tenant::new("rotate").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let _verifier = VerifierProcess::start(&tenant.namespace).await;
    let spec = json!({"organization": tenant.organization, "lifetime": "1h",
        "rotation": {"trigger": "2026-11-28-1", "overlap": "1m"}});
    let old = tenant.issue("t", spec).await;
    eventually("the first token to authenticate at kube-apiserver", || {
        whoami(old.expose_secret())
    })
    .await;
    let status = tenant.tokens().get("t").await.unwrap().status.unwrap();
    assert_eq!(
        status.rotation_trigger.as_deref(),
        Some("2026-11-28-1"),
        "the first value rotates nothing"
    );
    assert_eq!(status.rotated_at, None);

    let uid_before = user_uid(&tenant).await;
    tenant
        .patch_spec("t", json!({"rotation": {"trigger": "2026-11-28-2"}}))
        .await;
    let new = wait_for_new_token(&tenant, "t", &old, 60).await;
    let token = eventually("the rotation in status", || async {
        let token = tenant.tokens().get("t").await.ok()?;
        let status = token.status.as_ref()?;
        (status.token_id.as_deref() == Some(new.id().as_str())
            && status.previous_token_id.as_deref() == Some(old.id().as_str()))
        .then_some(token)
    })
    .await;
    let status = token.status.unwrap();
    let until = status
        .previous_valid_until
        .expect("the end of the overlap")
        .0;
    let rotated = status.rotated_at.expect("rotatedAt").0;
    assert_eq!(
        until,
        rotated + k8s_openapi::jiff::SignedDuration::from_mins(1)
    );
    assert_eq!(
        status.expires_at.unwrap().0,
        rotated + k8s_openapi::jiff::SignedDuration::from_hours(1),
        "the lifetime counts from the rotation"
    );
    assert_eq!(
        user_uid(&tenant).await,
        uid_before,
        "the TechnicalUser is kept"
    );
    tenant.wait_for_event("t", "TokenRotated").await;

    // Both work at kube-apiserver during the overlap.
    let info = eventually("the new token to authenticate", || {
        whoami(new.expose_secret())
    })
    .await;
    assert_eq!(
        info["username"],
        format!("accesstoken:{}:t", tenant.namespace)
    );
    // Checked only while the overlap surely lasts: the wait above may have used it up on a
    // busy machine (audit F5), and after it the test below takes over.
    let works = whoami(old.expose_secret()).await.is_some();
    if k8s_openapi::jiff::Timestamp::now() < until {
        assert!(works, "the previous token works during the overlap");
    }

    // Not after: denied from the end of the overlap, and its credential removed.
    within_seconds(150, "the previous token to be refused", || async {
        whoami(old.expose_secret()).await.is_none().then_some(())
    })
    .await;
    assert!(
        k8s_openapi::jiff::Timestamp::now() >= until,
        "the previous token never stops working before its overlap ends"
    );
    assert!(
        whoami(new.expose_secret()).await.is_some(),
        "the new token keeps working"
    );
    eventually("the previous credential to be removed", || async {
        let creds = credentials(&tenant, "t").await;
        let status = tenant.tokens().get("t").await.ok()?.status?;
        (creds.len() == 1 && creds[0].id == new.id().as_str() && status.previous_token_id.is_none())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_automatic_rotation_happens_at_renew_before() {
    let tenant = Tenant::new("renew").await;
    let _operator = Operator::start(&tenant.namespace).await;
    // Renewal 1 minute after creation: 2 of a 3-minute life left.
    let spec = json!({"organization": tenant.organization, "lifetime": "3m",
        "rotation": {"renewBefore": "2m", "overlap": "1m"}});
    let old = tenant.issue("t", spec).await;
    let token = tenant.tokens().get("t").await.unwrap();
    let created = token.metadata.creation_timestamp.unwrap().0;
    let status = token.status.unwrap();
    assert_eq!(
        status.renewal_time.expect("renewalTime").0,
        created + k8s_openapi::jiff::SignedDuration::from_mins(1)
    );
    let new = wait_for_new_token(&tenant, "t", &old, 150).await;
    let status = eventually("the rotation in status", || async {
        let status = tenant.tokens().get("t").await.ok()?.status?;
        (status.token_id.as_deref() == Some(new.id().as_str())).then_some(status)
    })
    .await;
    let rotated = status.rotated_at.expect("rotatedAt").0;
    assert!(
        rotated >= created + k8s_openapi::jiff::SignedDuration::from_mins(1),
        "not before renewalTime"
    );
    assert_eq!(
        status.expires_at.unwrap().0,
        rotated + k8s_openapi::jiff::SignedDuration::from_mins(3)
    );
    assert_eq!(
        status.renewal_time.unwrap().0,
        rotated + k8s_openapi::jiff::SignedDuration::from_mins(1),
        "the next renewal follows the new expiry"
    );
    assert_eq!(status.previous_token_id.as_deref(), Some(old.id().as_str()));
    tenant.wait_for_event("t", "TokenRotated").await;
}

#[tokio::test]
async fn a_crash_at_each_step_of_a_rotation_leaves_one_new_token_that_works() {
    use access_token_operator::token::verify_token;
    for point in ["rotation-staged", "rotation-secret-written"] {
        let tenant = Tenant::new("rotcrash").await;
        let mut operator = Operator::start(&tenant.namespace).await;
        let verifier =
            LoopbackVerifier::start(&tenant.namespace, &operator_kubeconfig().await, &[]);
        let spec = json!({"organization": tenant.organization, "lifetime": "1h",
            "rotation": {"trigger": "a", "overlap": "5m"}});
        let old = tenant.issue("t", spec).await;
        operator.kill().await;
        let mut crashing = Operator::builder(&tenant.namespace)
            .crash_at(point)
            .start()
            .await;
        tenant
            .patch_spec("t", json!({"rotation": {"trigger": "b"}}))
            .await;
        assert!(
            crashing.wait_for_crash().await,
            "{point}: the operator aborted there"
        );
        let after_crash = tenant.token_in_secret("t").await;
        let staged: Vec<_> = credentials(&tenant, "t").await;
        match point {
            "rotation-staged" => {
                assert_eq!(
                    after_crash.id(),
                    old.id(),
                    "{point}: the Secret was not written"
                );
                assert_eq!(staged.len(), 2, "{point}: the new credential was staged");
            }
            _ => assert_ne!(
                after_crash.id(),
                old.id(),
                "{point}: the Secret holds the new token"
            ),
        }

        crashing.start_again().await;
        let status = eventually("the rotation to be recorded", || async {
            let status = tenant.tokens().get("t").await.ok()?.status?;
            (status.rotation_trigger.as_deref() == Some("b")).then_some(status)
        })
        .await;
        let value = tenant.token_in_secret("t").await;
        assert_eq!(
            status.token_id.as_deref(),
            Some(value.id().as_str()),
            "{point}"
        );
        if point != "rotation-staged" {
            assert_eq!(
                value.id(),
                after_crash.id(),
                "{point}: a written token is never rotated again"
            );
        }
        let creds = eventually("the TechnicalUser to settle", || async {
            let creds = credentials(&tenant, "t").await;
            (creds.len() == 2).then_some(creds)
        })
        .await;
        let current: Vec<_> = creds.iter().filter(|c| c.retired_at.is_none()).collect();
        assert_eq!(
            current.len(),
            1,
            "{point}: one current credential, never two new tokens"
        );
        assert_eq!(current[0].id, value.id().as_str(), "{point}");
        assert!(
            verify_token(&value, &current[0].hash),
            "{point}: the Secret's token authenticates"
        );
        let previous = creds
            .iter()
            .find(|c| c.retired_at.is_some())
            .expect("the previous one");
        assert_eq!(previous.id, old.id().as_str(), "{point}");
        let retired = previous.retired_at.as_ref().unwrap().0;
        assert!(
            previous.not_after.0 <= retired + k8s_openapi::jiff::SignedDuration::from_mins(5),
            "{point}: the previous token never outlives its overlap"
        );
        assert_eq!(
            status.previous_token_id.as_deref(),
            Some(old.id().as_str()),
            "{point}"
        );
        wait_for_verdict(&verifier, &value, true).await;
        wait_for_verdict(&verifier, &old, true).await;
    }
}

/// Creates a Deployment `name` with `replicas` (the local cluster has no node: with any
/// replicas its rollout never completes; with none it completes once the controller saw it).
async fn create_deployment(tenant: &Tenant, name: &str, replicas: i32) {
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": tenant.namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "pause"}]},
            },
        },
    }))
    .expect("a valid Deployment");
    kube::Api::namespaced(tenant.client.clone(), &tenant.namespace)
        .create(&kube::api::PostParams::default(), &deployment)
        .await
        .expect("Deployment is created");
}

/// The TargetsRolledOut condition: (status, reason).
async fn targets_rolled_out(tenant: &Tenant, name: &str) -> Option<(String, String)> {
    let status = tenant.tokens().get(name).await.ok()?.status?;
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "TargetsRolledOut")?;
    Some((condition.status.clone(), condition.reason.clone()))
}

/// The `kubectl.kubernetes.io/restartedAt` stamp of Deployment `name`'s pod template.
async fn restart_stamp(tenant: &Tenant, name: &str) -> Option<String> {
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(tenant.client.clone(), &tenant.namespace);
    let template = deployments.get(name).await.ok()?.spec?.template.metadata?;
    template
        .annotations?
        .get("kubectl.kubernetes.io/restartedAt")
        .cloned()
}

/// Issues `name` rotating onto `targets` with `overlap`, rotates it, and returns (old, new).
/// Before the rotation, the first issue has restarted nothing (audit S6).
async fn rotate_with_targets(
    tenant: &Tenant,
    name: &str,
    overlap: &str,
    targets: Value,
) -> (Token, Token) {
    let spec = json!({"organization": tenant.organization, "lifetime": "1h",
        "rotation": {"trigger": "a", "overlap": overlap, "restartTargets": targets}});
    let old = tenant.issue(name, spec).await;
    let status = tenant.tokens().get(name).await.unwrap().status.unwrap();
    assert_eq!(
        status.restarted_for, None,
        "nothing restarted for a first issue"
    );
    assert_eq!(targets_rolled_out(tenant, name).await, None);
    for target in targets.as_array().expect("a list") {
        let target = target["name"].as_str().expect("named");
        assert_eq!(
            restart_stamp(tenant, target).await,
            None,
            "{target} untouched at first issue"
        );
    }
    tenant
        .patch_spec(name, json!({"rotation": {"trigger": "b"}}))
        .await;
    let new = wait_for_new_token(tenant, name, &old, 60).await;
    (old, new)
}

#[tokio::test]
async fn a_rotation_restarts_its_targets_and_removes_the_previous_token_once_they_rolled_out() {
    let tenant = Tenant::new("restart").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let verifier = LoopbackVerifier::start(&tenant.namespace, &operator_kubeconfig().await, &[]);
    create_deployment(&tenant, "web", 0).await;
    let targets = json!([{"kind": "Deployment", "name": "web"}]);
    let (old, new) = rotate_with_targets(&tenant, "t", "30m", targets).await;

    // Restarted as `kubectl rollout restart` does it, stamped with the rotation time.
    let stamp = eventually("the Deployment to be restarted", || async {
        restart_stamp(&tenant, "web").await
    })
    .await;
    let complete = Some(("True".to_string(), "RolloutComplete".to_string()));
    eventually("the rollout to complete", || async {
        (targets_rolled_out(&tenant, "t").await == complete).then_some(())
    })
    .await;
    let status = tenant.tokens().get("t").await.unwrap().status.unwrap();
    assert_eq!(stamp, status.rotated_at.expect("rotatedAt").0.to_string());
    assert_eq!(status.restarted_for.as_deref(), Some(new.id().as_str()));

    // The previous token went with the rollout, long before its 30-minute overlap ended.
    eventually("the previous credential to be removed", || async {
        let creds = credentials(&tenant, "t").await;
        let status = tenant.tokens().get("t").await.ok()?.status?;
        (creds.len() == 1 && status.previous_token_id.is_none()).then_some(())
    })
    .await;
    wait_for_verdict(&verifier, &old, false).await;
    wait_for_verdict(&verifier, &new, true).await;
    tenant.wait_for_event("t", "RolloutComplete").await;
}

#[tokio::test]
async fn missing_or_stuck_restart_targets_are_reported_and_not_waited_on_past_the_overlap() {
    let tenant = Tenant::new("stuck").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let verifier = LoopbackVerifier::start(&tenant.namespace, &operator_kubeconfig().await, &[]);
    create_deployment(&tenant, "pending", 1).await;
    let stuck = json!([{"kind": "Deployment", "name": "pending"}]);
    let (old, _) = rotate_with_targets(&tenant, "stuck", "1m", stuck).await;
    let missing = json!([{"kind": "StatefulSet", "name": "nope"}]);
    rotate_with_targets(&tenant, "missing", "1m", missing).await;

    let reported = Some(("False".to_string(), "RestartTargetMissing".to_string()));
    eventually("the missing target to be reported", || async {
        (targets_rolled_out(&tenant, "missing").await == reported).then_some(())
    })
    .await;
    tenant
        .wait_for_event("missing", "RestartTargetMissing")
        .await;
    let running = Some(("False".to_string(), "RolloutInProgress".to_string()));
    eventually("the pending rollout to be waited on", || async {
        (targets_rolled_out(&tenant, "stuck").await == running).then_some(())
    })
    .await;
    wait_for_verdict(&verifier, &old, true).await;

    // At the end of the overlap the previous token goes anyway, and the stuck rollout is said.
    let stuck = Some(("False".to_string(), "RolloutStuck".to_string()));
    within_seconds(150, "the stuck rollout to be reported", || async {
        (targets_rolled_out(&tenant, "stuck").await == stuck).then_some(())
    })
    .await;
    tenant.wait_for_event("stuck", "RolloutStuck").await;
    wait_for_verdict(&verifier, &old, false).await;
    eventually("the previous credential to be removed", || async {
        (credentials(&tenant, "stuck").await.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_unused_token_is_suspended_after_the_idle_timeout_and_reactivated_by_a_spec_change() {
    let tenant = Tenant::new("idle").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let verifier = LoopbackVerifier::start(&tenant.namespace, &operator_kubeconfig().await, &[]);
    // lastUsedAt has minute precision: a 2-minute timeout leaves a used token a full minute.
    let orgs = tenant.organizations();
    let policy = json!({"tokenPolicy": {"idleTimeout": "2m"}});
    patch_scope_spec(&orgs, &tenant.organization, policy).await;
    let org = json!(tenant.organization);
    let idle = tenant
        .issue("idle", json!({"organization": org, "reactivate": "day-1"}))
        .await;
    let used = tenant.issue("used", json!({"organization": org})).await;

    // Use one token every few seconds until the other is suspended for being idle.
    within_seconds(200, "the unused token to be suspended", || async {
        let status = verifier.review(used.expose_secret()).await?;
        assert_eq!(status["authenticated"], true, "a used token is never idle");
        let token = tenant.tokens().get("idle").await.ok()?;
        (token.status?.phase == Some(Phase::Suspended)).then_some(())
    })
    .await;
    wait_for_suspended(&tenant, "idle", "TokenIdle").await;
    tenant.wait_for_event("idle", "TokenIdle").await;
    wait_for_verdict(&verifier, &idle, false).await;
    let used_token = tenant.tokens().get("used").await.unwrap();
    assert_eq!(
        used_token.status.as_ref().unwrap().phase,
        Some(Phase::Active)
    );
    assert!(
        used_token.status.unwrap().last_used_at.is_some(),
        "the verifier recorded its use"
    );

    // The owner's one spec change: a new spec.reactivate value. The same token works again.
    tenant
        .patch_spec("idle", json!({"reactivate": "day-2"}))
        .await;
    tenant.wait_for_phase("idle", Phase::Active).await;
    wait_for_verdict(&verifier, &idle, true).await;
    assert_eq!(
        tenant.token_in_secret("idle").await.id(),
        idle.id(),
        "not reissued"
    );
    let status = tenant.tokens().get("idle").await.unwrap().status.unwrap();
    assert_eq!(status.reactivated_for.as_deref(), Some("day-2"));
}

#[tokio::test]
async fn the_operator_may_only_set_the_restart_annotation_of_a_workload() {
    use kube::api::{Patch, PatchParams};
    let tenant = Tenant::new("restartonly").await;
    create_deployment(&tenant, "web", 0).await;
    let kubeconfig = kube::config::Kubeconfig::read_from(operator_kubeconfig().await).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let as_operator = kube::Client::try_from(config).unwrap();
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(as_operator, &tenant.namespace);
    let patch = |value: Value| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch("web", &PatchParams::default(), &Patch::Merge(value))
                .await
        }
    };
    patch(json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-11-28T00:00:00Z"}}}}}))
    .await
    .expect("the restart annotation is allowed");
    for forbidden in [
        json!({"spec": {"replicas": 3}}),
        json!({"spec": {"template": {"metadata": {"annotations": {"other": "x"}}}}}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "other"}]}}}}),
        json!({"metadata": {"labels": {"x": "y"}}}),
        // An owner that does not exist: the garbage collector would delete the workload.
        json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
            "name": "gone", "uid": "00000000-0000-0000-0000-000000000000"}]}}),
        json!({"metadata": {"finalizers": ["example.com/hold"]}}),
        json!({"spec": {"paused": true}}),
        json!({"spec": {"minReadySeconds": 30}}),
        json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}}}),
    ] {
        match patch(forbidden.clone()).await {
            Err(kube::Error::Api(status)) => assert!(
                status.code == 403 && status.message.contains("kubectl.kubernetes.io/restartedAt"),
                "{forbidden}: {}",
                status.message
            ),
            other => panic!("{forbidden} was not refused: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_verifier_applies_a_tightened_max_lifetime_at_once_without_the_controller() {
    let tenant = Tenant::new("capnow").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    let verifier = LoopbackVerifier::start(&tenant.namespace, &operator_kubeconfig().await, &[]);
    let value = tenant
        .issue(
            "t",
            json!({"organization": tenant.organization, "lifetime": "1h"}),
        )
        .await;
    wait_for_verdict(&verifier, &value, true).await;
    let created = tenant
        .tokens()
        .get("t")
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap()
        .0;
    // Older than the policy about to be set (a minute, the shortest the API takes).
    let old_enough = created + k8s_openapi::jiff::SignedDuration::from_secs(61);
    within_seconds(90, "the token to be older than a minute", || async {
        (k8s_openapi::jiff::Timestamp::now() >= old_enough).then_some(())
    })
    .await;
    wait_for_verdict(&verifier, &value, true).await;

    operator.kill().await;
    let orgs = tenant.organizations();
    let policy = json!({"tokenPolicy": {"maxLifetime": "1m"}});
    patch_scope_spec(&orgs, &tenant.organization, policy).await;
    wait_for_verdict(&verifier, &value, false).await;
    assert!(
        verifier.logs().contains("expired"),
        "denied as expired by the cap"
    );

    operator.start_again().await;
    tenant.wait_for_phase("t", Phase::Expired).await;
    tenant.wait_for_event("t", "TokenExpiryShortened").await;
}

#[tokio::test]
async fn the_api_server_refuses_renew_before_without_a_longer_lifetime() {
    let tenant = Tenant::new("rotcel").await;
    for (spec, expected) in [
        (
            json!({"organization": tenant.organization, "expiresAt": "2099-01-01T00:00:00Z",
                "rotation": {"renewBefore": "7d"}}),
            "spec.rotation.renewBefore needs spec.lifetime, and must be shorter than it",
        ),
        (
            json!({"organization": tenant.organization, "lifetime": "2w",
                "rotation": {"renewBefore": "15d"}}),
            "spec.rotation.renewBefore needs spec.lifetime, and must be shorter than it",
        ),
        (
            json!({"organization": tenant.organization, "lifetime": "2w",
                "rotation": {"overlap": "1s"}}),
            "spec.rotation.overlap must be a whole number followed by m, h, d or w",
        ),
    ] {
        let token: access_token_operator::api::AccessToken = serde_json::from_value(json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": "t", "namespace": tenant.namespace}, "spec": spec,
        }))
        .expect("a well-typed AccessToken");
        match tenant.tokens().create(&Default::default(), &token).await {
            Err(kube::Error::Api(status)) => {
                assert!(
                    status.message.contains(expected),
                    "{spec}: {}",
                    status.message
                )
            }
            other => panic!("{spec} was accepted: {other:?}"),
        }
    }
    tenant
        .create_token(
            "ok",
            json!({"organization": tenant.organization, "lifetime": "2w",
            "rotation": {"renewBefore": "13d", "overlap": "1h", "trigger": "x"}}),
        )
        .await;
}
