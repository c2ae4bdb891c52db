//! The behaviour of docs/concepts/lifecycle.md, each against the real control plane and the operator process.

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use std::time::Duration;

use access_token_operator::{
    api::{Group, Phase, Role},
    token::{Token, verify_token},
};

use crate::support::{
    Operator, Tenant, VerifierProcess, delete_and_wait_gone, eventually, ready_condition,
    secret_text, within,
};

#[tokio::test]
async fn create_issues_a_technical_user_and_a_secret() {
    let tenant = Tenant::new("create").await;
    let _operator = Operator::start(&tenant.namespace).await;
    tenant
        .create_token(
            "ci-deployer",
            json!({"organization": tenant.organization, "displayName": "CI", "expiresAt": "2099-06-30T00:00:00Z"}),
        )
        .await;

    let token = tenant.wait_for_phase("ci-deployer", Phase::Active).await;
    let status = token.status.clone().unwrap();
    let ready = ready_condition(&token).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "TokenActive")
    );
    assert_eq!(status.role, Some(Role::OrganizationUser));
    assert_eq!(
        status.username.as_deref(),
        Some(format!("accesstoken:{}:ci-deployer", tenant.namespace).as_str())
    );
    assert_eq!(
        status.scope,
        Some(format!("organization/{}", tenant.organization))
    );
    assert_eq!(
        status.expires_at.unwrap().0,
        "2099-06-30T00:00:00Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(status.observed_generation, token.metadata.generation);
    // No finalizer (issue 22): deleting the token never waits on the operator; its children
    // go through their owner references and the operator's sweep.
    assert!(token.finalizers().is_empty(), "{:?}", token.finalizers());

    // The Secret: shape, ownership, and the token itself.
    let secret = tenant.secrets().get("ci-deployer").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("iam.accesstoken.io/token"));
    let labels = secret.labels();
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "access-token-operator"
    );
    assert_eq!(labels["iam.accesstoken.io/access-token"], "ci-deployer");
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("AccessToken", Some(true))
    );
    assert_eq!(owner.uid, token.uid().unwrap());
    let value = tenant.token_in_secret("ci-deployer").await;
    assert_eq!(Some(value.id().to_string()), status.token_id);
    assert_eq!(secret_text(&secret, "token-id"), value.id().as_str());
    assert_eq!(
        secret_text(&secret, "username"),
        status.username.clone().unwrap()
    );
    assert_eq!(secret_text(&secret, "organization"), tenant.organization);
    assert_eq!(secret_text(&secret, "role"), "OrganizationUser");
    assert_eq!(secret_text(&secret, "expires-at"), "2099-06-30T00:00:00Z");
    assert!(
        secret.data.as_ref().unwrap().get("group").is_none(),
        "no group key for an organization token"
    );

    // The TechnicalUser: same name, controlled by the token, holding a hash of exactly this token.
    let user = tenant.users().get("ci-deployer").await.unwrap();
    assert_eq!(user.owner_references()[0].uid, token.uid().unwrap());
    assert!(!user.spec.disabled);
    assert_eq!(user.spec.role, Role::OrganizationUser);
    assert_eq!(user.spec.credentials.len(), 1);
    let credential = &user.spec.credentials[0];
    assert_eq!(credential.id, value.id().as_str());
    assert!(credential.hash.starts_with("$argon2id$"));
    assert!(
        verify_token(&value, &credential.hash),
        "the stored hash verifies the Secret's token"
    );

    tenant.wait_for_event("ci-deployer", "TokenIssued").await;
}

#[tokio::test]
async fn group_token_carries_the_group_and_admin_role() {
    let tenant = Tenant::new("grouptok").await;
    let _operator = Operator::start(&tenant.namespace).await;
    tenant
        .create_token("bot", json!({"group": tenant.group, "admin": true, "lifetime": "4w", "secretName": "bot-token"}))
        .await;
    let token = tenant.wait_for_phase("bot", Phase::Active).await;
    let status = token.status.unwrap();
    assert_eq!(status.role, Some(Role::GroupAdmin));
    assert_eq!(status.secret_name.as_deref(), Some("bot-token"));
    // lifetime counts from creation.
    let created = token.metadata.creation_timestamp.unwrap().0;
    assert_eq!(
        status.expires_at.unwrap().0,
        created + SignedDuration::from_hours(28 * 24)
    );
    let secret = tenant.secrets().get("bot-token").await.unwrap();
    assert_eq!(secret_text(&secret, "group"), tenant.group);
    assert_eq!(secret_text(&secret, "organization"), tenant.organization);
    assert_eq!(secret_text(&secret, "role"), "GroupAdmin");
    assert!(
        tenant.secrets().get_opt("bot").await.unwrap().is_none(),
        "only spec.secretName is written"
    );
}

#[tokio::test]
async fn revoke_disables_and_unrevoke_reenables_the_same_token() {
    let tenant = Tenant::new("revoke").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let issued = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;

    tenant.patch_spec("t", json!({"revoked": true})).await;
    let token = tenant.wait_for_phase("t", Phase::Revoked).await;
    assert_eq!(ready_condition(&token).unwrap().status, "False");
    let user = tenant.users().get("t").await.unwrap();
    assert!(
        user.spec.disabled,
        "a revoked token's TechnicalUser is disabled"
    );
    assert_eq!(
        tenant.token_in_secret("t").await.expose_secret(),
        issued.expose_secret(),
        "revoking keeps the Secret and its token"
    );
    tenant.wait_for_event("t", "TokenRevoked").await;

    tenant.patch_spec("t", json!({"revoked": false})).await;
    tenant.wait_for_phase("t", Phase::Active).await;
    let user = tenant.users().get("t").await.unwrap();
    assert!(!user.spec.disabled);
    assert_eq!(
        user.spec.credentials[0].id,
        issued.id().as_str(),
        "the same token is re-enabled"
    );
    assert_eq!(
        tenant.token_in_secret("t").await.expose_secret(),
        issued.expose_secret()
    );
    tenant.wait_for_event("t", "TokenReenabled").await;
}

#[tokio::test]
async fn delete_removes_the_technical_user_and_the_secret() {
    let tenant = Tenant::new("delete").await;
    let _operator = Operator::start(&tenant.namespace).await;
    tenant
        .create_token("t", json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase("t", Phase::Active).await;

    tenant.delete_token("t").await;
    eventually(
        "the AccessToken, its TechnicalUser and Secret to be gone",
        || async {
            let token = tenant.tokens().get_opt("t").await.unwrap();
            let user = tenant.users().get_opt("t").await.unwrap();
            let secret = tenant.secrets().get_opt("t").await.unwrap();
            (token.is_none() && user.is_none() && secret.is_none()).then_some(())
        },
    )
    .await;
}

/// Whether a verifier answers `authenticated: true` for `token`.
async fn verifier_accepts(verifier: &VerifierProcess, token: &str) -> bool {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let answer: serde_json::Value = verifier
        .http()
        .post(format!("{}/tokenreviews", verifier.url))
        .json(&review)
        .send()
        .await
        .expect("the verifier answers")
        .json()
        .await
        .expect("a TokenReview");
    answer["status"]["authenticated"] == true
}

#[tokio::test]
async fn delete_with_orphan_propagation_still_removes_both_children() {
    let tenant = Tenant::new("orphan").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    let verifier = VerifierProcess::start_private("orphan-verifier").await;
    let issued = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    eventually("the verifier to accept the token", || async {
        verifier_accepts(&verifier, issued.expose_secret())
            .await
            .then_some(())
    })
    .await;

    // With the operator down, the garbage collector's orphan handling strips the children's
    // owner references and the AccessToken goes: the operator's sweep must still recognise
    // them as the children of that token once it runs again.
    operator.kill().await;
    tenant
        .tokens()
        .delete("t", &DeleteParams::orphan())
        .await
        .unwrap();
    // Wait for the garbage collector to finish orphaning: the AccessToken gone, and the Secret
    // holding the token without an owner reference. (The TechnicalUser is stripped too once
    // the collector monitors the CRD, which a fresh control plane may not yet do.) Polled for
    // longer than `eventually`'s deadline: the collector backs off.
    within(Duration::from_secs(180), async {
        loop {
            let token = tenant.tokens().get_opt("t").await.unwrap();
            let secret = tenant.secrets().get("t").await.unwrap();
            if token.is_none()
                && secret
                    .metadata
                    .owner_references
                    .unwrap_or_default()
                    .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // The verifier denies once the AccessToken is gone, without waiting for the operator.
    eventually("the verifier to deny the token", || async {
        (!verifier_accepts(&verifier, issued.expose_secret()).await).then_some(())
    })
    .await;

    operator.restart().await;
    eventually("the TechnicalUser and Secret to be gone", || async {
        let user = tenant.users().get_opt("t").await.unwrap();
        let secret = tenant.secrets().get_opt("t").await.unwrap();
        (user.is_none() && secret.is_none()).then_some(())
    })
    .await;
    tenant.wait_for_event("t", "TokenDeleted").await;
    assert!(!verifier_accepts(&verifier, issued.expose_secret()).await);
}

/// With the operator running, a deleted token's children go at once, and a token carrying
/// the finalizer of earlier builds is still deleted (its finalizer removed) with them.
#[tokio::test]
async fn a_deleted_token_takes_its_children_with_or_without_the_old_finalizer() {
    let tenant = Tenant::new("delete").await;
    let _operator = Operator::start(&tenant.namespace).await;
    for name in ["new", "old"] {
        tenant
            .issue(name, json!({"organization": tenant.organization}))
            .await;
    }
    // As an earlier build left it: the operator's finalizer on the token.
    tenant.add_old_finalizer("old").await;
    for name in ["new", "old"] {
        tenant.delete_token(name).await;
    }
    for name in ["new", "old"] {
        eventually(
            "the AccessToken, its TechnicalUser and Secret to be gone",
            || async {
                let token = tenant.tokens().get_opt(name).await.unwrap();
                let user = tenant.users().get_opt(name).await.unwrap();
                let secret = tenant.secrets().get_opt(name).await.unwrap();
                (token.is_none() && user.is_none() && secret.is_none()).then_some(())
            },
        )
        .await;
        tenant.wait_for_event(name, "TokenDeleted").await;
    }
}

#[tokio::test]
async fn expiry_moves_the_token_to_expired() {
    let tenant = Tenant::new("expiry").await;
    let _operator = Operator::start(&tenant.namespace).await;
    // Wide enough that issuing finishes before expiry on a busy 2-core machine.
    let expires = Timestamp::now() + SignedDuration::from_secs(15);
    tenant
        .create_token("t", json!({"organization": tenant.organization, "expiresAt": expires.round(k8s_openapi::jiff::Unit::Second).unwrap().to_string()}))
        .await;
    tenant.wait_for_phase("t", Phase::Active).await;
    // No edit and no other event: the operator's own requeue at expiry flips the phase.
    let token = tenant.wait_for_phase("t", Phase::Expired).await;
    assert_eq!(ready_condition(&token).unwrap().reason, "TokenExpired");
    tenant.wait_for_event("t", "TokenExpired").await;
}

#[tokio::test]
async fn namespace_not_in_token_namespaces_gets_no_secret_until_it_is_listed() {
    let tenant = Tenant::new("nsallow").await;
    let _operator = Operator::start(&tenant.namespace).await;
    // An organization that admits some other namespace only.
    let orgs = tenant.organizations();
    let other = crate::support::unique_name("other-org");
    tenant
        .create_organization(&other, &["somewhere-else"])
        .await;
    tenant
        .create_token("t", json!({"organization": other}))
        .await;

    let token = tenant.wait_for_reason("t", "NamespaceNotAllowed").await;
    assert_eq!(token.status.as_ref().unwrap().phase, Some(Phase::Pending));
    assert!(
        ready_condition(&token)
            .unwrap()
            .message
            .contains(&tenant.namespace)
    );
    assert!(
        token
            .status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );
    assert!(
        tenant.secrets().get_opt("t").await.unwrap().is_none(),
        "no Secret for an unauthorised namespace"
    );
    assert!(
        tenant.users().get_opt("t").await.unwrap().is_none(),
        "no TechnicalUser either"
    );
    tenant.wait_for_event("t", "NamespaceNotAllowed").await;

    // Listing the namespace issues the token with no edit to the AccessToken.
    orgs.patch(
        &other,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tokenNamespaces": [tenant.namespace]}})),
    )
    .await
    .unwrap();
    let token = tenant.wait_for_phase("t", Phase::Active).await;
    assert!(
        token
            .status
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "Stalled"),
        "Stalled goes once resolved"
    );
    tenant.token_in_secret("t").await;
}

#[tokio::test]
/// docs/concepts/lifecycle.md, "Invalid or unauthorised scope" and "A group token older than
/// its Group": an organization token waits for its Organization; a group token written before
/// its Group existed was checked by no admission policy, so it is never issued, and one
/// created anew is.
async fn unknown_scopes_wait_and_only_a_group_token_newer_than_its_group_is_issued() {
    let tenant = Tenant::new("unknown").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let missing_org = crate::support::unique_name("late-org");
    let missing_group = crate::support::unique_name("late-grp");
    tenant
        .create_token("org-t", json!({"organization": missing_org}))
        .await;
    tenant
        .create_token("grp-t", json!({"group": missing_group}))
        .await;
    tenant
        .wait_for_reason("org-t", "OrganizationNotFound")
        .await;
    tenant.wait_for_reason("grp-t", "GroupNotFound").await;

    // The group appears, naming an organization that does not exist yet.
    let late_group = tenant.create_group_of(&missing_group, &missing_org).await;
    tenant
        .wait_for_reason("grp-t", "GroupOrganizationNotFound")
        .await;
    assert!(tenant.secrets().get_opt("grp-t").await.unwrap().is_none());

    tenant
        .create_organization(&missing_org, &[&tenant.namespace])
        .await;
    tenant.wait_for_phase("org-t", Phase::Active).await;
    let refused = tenant.wait_for_reason("grp-t", "GroupNewerThanToken").await;
    let message = &crate::support::ready_condition(&refused).unwrap().message;
    assert!(
        message.contains("Delete this AccessToken and create it again"),
        "{message}"
    );
    tenant
        .wait_for_warning("grp-t", "GroupNewerThanToken")
        .await;
    assert!(tenant.secrets().get_opt("grp-t").await.unwrap().is_none());
    assert!(tenant.users().get_opt("grp-t").await.unwrap().is_none());

    // Created again (by whoever the policy now checks against the Group): issued.
    crate::support::delete_and_wait_gone(&tenant.tokens(), "grp-t").await;
    crate::support::newer_than_group(&late_group).await;
    tenant
        .create_token("grp-t", json!({"group": missing_group}))
        .await;
    tenant.wait_for_phase("grp-t", Phase::Active).await;
}

#[tokio::test]
async fn a_scope_that_stops_admitting_the_token_disables_it_until_it_admits_it_again() {
    let tenant = Tenant::new("scopegone").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let issued = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;

    // Taking the namespace off the list is the scope no longer admitting the token.
    let orgs = tenant.organizations();
    let listed =
        |namespaces: Vec<String>| Patch::Merge(json!({"spec": {"tokenNamespaces": namespaces}}));
    orgs.patch(
        &tenant.organization,
        &PatchParams::default(),
        &listed(vec![]),
    )
    .await
    .unwrap();
    let token = tenant.wait_for_reason("t", "NamespaceNotAllowed").await;
    assert_eq!(token.status.unwrap().phase, Some(Phase::Failed));
    tenant.wait_for_user_disabled("t").await;

    // Listed again: the same token works again, without an edit.
    orgs.patch(
        &tenant.organization,
        &PatchParams::default(),
        &listed(vec![tenant.namespace.clone()]),
    )
    .await
    .unwrap();
    tenant.wait_for_phase("t", Phase::Active).await;
    let user = tenant.users().get("t").await.unwrap();
    assert!(!user.spec.disabled);
    assert_eq!(
        tenant.token_in_secret("t").await.expose_secret(),
        issued.expose_secret()
    );

    // Deleting the organization outright closes it (created again, it is another scope:
    // `a_scope_created_again_under_the_same_name_inherits_no_token_even_without_the_operator`).
    orgs.delete(&tenant.organization, &DeleteParams::default())
        .await
        .unwrap();
    tenant.wait_for_reason("t", "OrganizationNotFound").await;
    tenant.wait_for_user_disabled("t").await;
}

#[tokio::test]
async fn a_foreign_secret_is_never_overwritten() {
    let tenant = Tenant::new("conflict").await;
    let foreign = tenant
        .secrets()
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("taken".into()),
                    ..Default::default()
                },
                data: Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let _operator = Operator::start(&tenant.namespace).await;
    tenant
        .create_token("taken", json!({"organization": tenant.organization}))
        .await;

    let token = tenant.wait_for_reason("taken", "SecretConflict").await;
    assert_eq!(token.status.unwrap().phase, Some(Phase::Failed));
    tenant.wait_for_event("taken", "SecretConflict").await;
    let after = tenant.secrets().get("taken").await.unwrap();
    assert_eq!(
        after.resource_version(),
        foreign.resource_version(),
        "the foreign Secret was not written"
    );
    assert_eq!(after.data, foreign.data);
    assert!(after.owner_references().is_empty());
    assert!(
        tenant.users().get_opt("taken").await.unwrap().is_none(),
        "no token issued"
    );

    // Deleting the AccessToken leaves the foreign Secret alone too.
    delete_and_wait_gone(&tenant.tokens(), "taken").await;
    assert_eq!(
        tenant.secrets().get("taken").await.unwrap().data,
        foreign.data
    );
}

#[tokio::test]
async fn a_deleted_secret_gets_a_fresh_token_and_the_old_one_stops_working() {
    let tenant = Tenant::new("lost").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let old = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;

    tenant
        .secrets()
        .delete("t", &DeleteParams::default())
        .await
        .unwrap();
    let new = eventually("a new Secret", || async {
        let secret = tenant.secrets().get_opt("t").await.ok()??;
        let token =
            access_token_operator::token::Token::parse(&secret_text(&secret, "token")).ok()?;
        (token.id() != old.id()).then_some(token)
    })
    .await;
    let user = eventually(
        "the TechnicalUser to hold only the new credential",
        || async {
            let user = tenant.users().get("t").await.ok()?;
            (user.spec.credentials.len() == 1 && user.spec.credentials[0].id == new.id().as_str())
                .then_some(user)
        },
    )
    .await;
    assert!(verify_token(&new, &user.spec.credentials[0].hash));
    assert!(!verify_token(&old, &user.spec.credentials[0].hash));
    tenant.wait_for_warning("t", "TokenReissued").await;
    eventually("status to show the new token id", || async {
        let token = tenant.tokens().get("t").await.ok()?;
        (token.status?.token_id? == new.id().as_str()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_tampered_secret_gets_a_fresh_token() {
    let tenant = Tenant::new("tamper").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let issued = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;

    // Someone plants a well-formed token of their own, with a matching token-id key.
    let planted = access_token_operator::token::Token::generate();
    let patch = json!({"stringData": {"token": planted.expose_secret(), "token-id": planted.id().as_str()}});
    tenant
        .secrets()
        .patch("t", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();

    let replaced = eventually("the planted token to be replaced", || async {
        let token = tenant.token_in_secret("t").await;
        (token.id() != planted.id() && token.id() != issued.id()).then_some(token)
    })
    .await;
    let user = eventually("the TechnicalUser to hold only the replacement", || async {
        let user = tenant.users().get("t").await.ok()?;
        (user.spec.credentials.len() == 1 && user.spec.credentials[0].id == replaced.id().as_str())
            .then_some(user)
    })
    .await;
    assert!(
        !verify_token(&planted, &user.spec.credentials[0].hash),
        "a planted token is never accepted"
    );
    tenant.wait_for_warning("t", "TokenReissued").await;

    // Garbage in the token key is also repaired.
    let patch = json!({"stringData": {"token": "not a token"}});
    tenant
        .secrets()
        .patch("t", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    eventually("the garbage to be replaced", || async {
        let secret = tenant.secrets().get("t").await.ok()?;
        access_token_operator::token::Token::parse(&secret_text(&secret, "token"))
            .ok()
            .filter(|t| t.id() != replaced.id())
    })
    .await;
}

#[tokio::test]
async fn the_operator_never_writes_the_access_token_spec() {
    const TEST_MANAGER: &str = "integration-tests";
    let tenant = Tenant::new("nospec").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let token: access_token_operator::api::AccessToken = serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
        "metadata": {"name": "t", "namespace": tenant.namespace},
        "spec": {"organization": tenant.organization, "lifetime": "1d"},
    }))
    .unwrap();
    let created = tenant
        .tokens()
        .create(
            &PostParams {
                field_manager: Some(TEST_MANAGER.into()),
                ..Default::default()
            },
            &token,
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // Every field manager that owns part of spec is the test itself, at every stage: a spec
    // write by anyone else (the operator, the verifier, under any manager name) shows up here.
    let spec_managers = |token: &access_token_operator::api::AccessToken| {
        token
            .metadata
            .managed_fields
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|entry| {
                serde_json::to_string(&entry.fields_v1)
                    .unwrap()
                    .contains("\"f:spec\"")
            })
            .map(|entry| entry.manager.unwrap_or_default())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let only_ours = std::collections::BTreeSet::from([TEST_MANAGER.to_string()]);
    assert_eq!(spec_managers(&created), only_ours);

    let active = tenant.wait_for_phase("t", Phase::Active).await;
    assert_eq!(
        active.metadata.generation,
        Some(1),
        "issuing did not touch the spec"
    );
    assert_eq!(spec_managers(&active), only_ours);
    assert_eq!(active.status.as_ref().unwrap().observed_generation, Some(1));

    tenant
        .tokens()
        .patch(
            "t",
            &PatchParams {
                field_manager: Some(TEST_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"revoked": true}})),
        )
        .await
        .unwrap();
    tenant.wait_for_phase("t", Phase::Revoked).await;
    let revoked = eventually("status to observe the edit", || async {
        let token = tenant.tokens().get("t").await.ok()?;
        (token.status.as_ref()?.observed_generation >= Some(2)).then_some(token)
    })
    .await;
    assert_eq!(
        revoked.metadata.generation,
        Some(2),
        "only the test's own edit bumped the generation"
    );
    assert_eq!(spec_managers(&revoked), only_ours);
    // The operator's own entries touch status (and metadata such as its finalizer) only.
    for entry in revoked.metadata.managed_fields.unwrap_or_default() {
        if entry.manager.as_deref() != Some(TEST_MANAGER) {
            let fields = serde_json::to_string(&entry.fields_v1).unwrap();
            assert!(
                !fields.contains("\"f:spec\""),
                "{:?} owns a spec field: {fields}",
                entry.manager
            );
        }
    }
    let _ = ListParams::default();
}

#[tokio::test]
async fn a_lost_secret_whose_name_is_taken_removes_the_issued_credential() {
    let tenant = Tenant::new("lostname").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    tenant
        .create_token("t", json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase("t", Phase::Active).await;
    assert_eq!(
        tenant
            .users()
            .get("t")
            .await
            .unwrap()
            .spec
            .credentials
            .len(),
        1
    );

    // While the operator is down, the Secret is deleted and someone else takes its name.
    operator.kill().await;
    delete_and_wait_gone(&tenant.secrets(), "t").await;
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("t".into()),
            ..Default::default()
        },
        data: Some([("other".to_string(), ByteString(b"data".to_vec()))].into()),
        ..Default::default()
    };
    let foreign = tenant
        .secrets()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    operator.restart().await;

    tenant.wait_for_reason("t", "SecretConflict").await;
    eventually("the lost token's credential to be removed", || async {
        tenant
            .users()
            .get("t")
            .await
            .ok()?
            .spec
            .credentials
            .is_empty()
            .then_some(())
    })
    .await;
    let after = tenant.secrets().get("t").await.unwrap();
    assert_eq!(
        after.resource_version(),
        foreign.resource_version(),
        "the foreign Secret is untouched"
    );
}

/// `token` with its random secret replaced by `secret_part` and a matching checksum: a
/// well-formed token with the same public id, which only the argon2 check can tell apart.
fn same_id_other_secret(token: &Token, secret_part: &str) -> Token {
    let body = format!("atk_{}_{secret_part}", token.id().as_str());
    Token::parse(&crate::support::with_checksum(&body)).expect("a well-formed token")
}

/// Writes into Secret `secret` a token with `issued`'s id and another secret (see
/// [`same_id_other_secret`]), as a tenant could; returns it.
pub(crate) async fn plant_same_id_token(tenant: &Tenant, secret: &str, issued: &Token) -> Token {
    let planted = same_id_other_secret(issued, Token::generate().expose_secret_part());
    let patch = json!({"stringData": {"token": planted.expose_secret()}});
    tenant
        .secrets()
        .patch(secret, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    planted
}

#[tokio::test]
async fn a_tampered_secret_with_the_same_id_gets_a_fresh_token() {
    let tenant = Tenant::new("tamperid").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let issued = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;

    // Same id, another secret, valid checksum: the id lookup finds the issued credential, so
    // only the hash comparison shows that this is not the token the operator wrote.
    let planted = plant_same_id_token(&tenant, "t", &issued).await;
    assert_eq!(planted.id(), issued.id());
    assert_ne!(planted.expose_secret(), issued.expose_secret());

    let replaced = eventually("the planted token to be replaced", || async {
        let token = tenant.token_in_secret("t").await;
        (token.expose_secret() != planted.expose_secret()).then_some(token)
    })
    .await;
    assert_ne!(
        replaced.id(),
        issued.id(),
        "a fresh token, not the issued one written back"
    );
    let user = eventually("the TechnicalUser to hold only the replacement", || async {
        let user = tenant.users().get("t").await.ok()?;
        (user.spec.credentials.len() == 1 && user.spec.credentials[0].id == replaced.id().as_str())
            .then_some(user)
    })
    .await;
    assert!(verify_token(&replaced, &user.spec.credentials[0].hash));
    assert!(
        !verify_token(&planted, &user.spec.credentials[0].hash),
        "a planted token is never accepted"
    );
    tenant.wait_for_warning("t", "TokenReissued").await;
}

/// docs/concepts/lifecycle.md, "Scope deleted and created again" (security review N10): the
/// verifier compares the uid the TechnicalUser was issued for with the scope it reads, so a
/// Group deleted and created again under the same name does not inherit the tokens even while
/// no operator runs; the operator then reports ScopeChanged, for Organizations too.
#[tokio::test]
async fn a_scope_created_again_under_the_same_name_inherits_no_token_even_without_the_operator() {
    let tenant = Tenant::new("rebirth").await;
    let operator = Operator::start(&tenant.namespace).await;
    let by_group = tenant.issue("g", json!({"group": tenant.group})).await;
    let by_org = tenant
        .issue("o", json!({"organization": tenant.organization}))
        .await;
    drop(operator);

    let groups: Api<Group> = Api::all(tenant.client.clone());
    let old = groups.get(&tenant.group).await.unwrap();
    delete_and_wait_gone(&groups, &tenant.group).await;
    groups
        .create(
            &PostParams::default(),
            &Group::new(&tenant.group, old.spec.clone()),
        )
        .await
        .unwrap();
    let user = tenant.users().get("g").await.unwrap();
    assert!(!user.spec.disabled, "no operator ran to disable it");
    assert_eq!(user.spec.scope.uid, old.metadata.uid);

    // A verifier started now reads the new Group in its first list (it is ready once its
    // caches are): the scope resolves by name, and only the uid tells it apart.
    let verifier = VerifierProcess::start_private("rebirth-verifier").await;
    assert!(
        verifier_accepts(&verifier, by_org.expose_secret()).await,
        "the organization token, whose scope is untouched, still works"
    );
    assert!(
        !verifier_accepts(&verifier, by_group.expose_secret()).await,
        "the group token is denied by uid"
    );

    // The operator then disables it and says why; an Organization works the same way.
    let _operator = Operator::start(&tenant.namespace).await;
    tenant.wait_for_reason("g", "ScopeChanged").await;
    tenant.wait_for_user_disabled("g").await;
    let organizations: Api<access_token_operator::api::Organization> =
        Api::all(tenant.client.clone());
    let org = organizations.get(&tenant.organization).await.unwrap();
    delete_and_wait_gone(&organizations, &tenant.organization).await;
    tenant
        .create_organization(&tenant.organization, &[&tenant.namespace])
        .await;
    let token = tenant.wait_for_reason("o", "ScopeChanged").await;
    assert_eq!(token.status.unwrap().scope_uid, org.metadata.uid);
    tenant.wait_for_user_disabled("o").await;
    eventually("the verifier to deny the organization token", || async {
        (!verifier_accepts(&verifier, by_org.expose_secret()).await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_group_recreated_under_another_organization_keeps_its_token_disabled() {
    let tenant = Tenant::new("rescope").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let verifier = VerifierProcess::start_private("rescope-verifier").await;
    let issued = tenant.issue("t", json!({"group": tenant.group})).await;
    eventually("the verifier to accept the token", || async {
        verifier_accepts(&verifier, issued.expose_secret())
            .await
            .then_some(())
    })
    .await;

    // Another organization that admits the namespace takes over the group's name.
    let other = format!("{}-other", tenant.organization);
    tenant
        .create_organization(&other, &[&tenant.namespace])
        .await;
    let groups: Api<Group> = Api::all(tenant.client.clone());
    delete_and_wait_gone(&groups, &tenant.group).await;
    tenant.create_group_of(&tenant.group, &other).await;

    let token = tenant.wait_for_reason("t", "ScopeChanged").await;
    assert_eq!(token.status.unwrap().phase, Some(Phase::Failed));
    tenant.wait_for_event("t", "ScopeChanged").await;
    let user = tenant.users().get("t").await.unwrap();
    assert!(user.spec.disabled, "fail closed");
    assert_eq!(
        user.spec.scope.organization, tenant.organization,
        "the token is never moved to the other organization"
    );
    eventually("the verifier to deny the token", || async {
        (!verifier_accepts(&verifier, issued.expose_secret()).await).then_some(())
    })
    .await;
}
