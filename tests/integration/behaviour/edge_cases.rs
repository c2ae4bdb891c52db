//! Behaviours of docs/concepts/lifecycle.md that no other test reaches: `secretTemplate` edits, the finalizer of
//! earlier builds when the Secret is already gone, a Group that disappears and is created again, `InvalidSpec` and
//! `TechnicalUserConflict`.

use kube::{Api, ResourceExt, api::PostParams};
use serde_json::json;

use access_token_operator::api::{Group, Phase, TechnicalUser};

use crate::support::{Operator, Tenant, client_as, delete_and_wait_gone, eventually};

#[tokio::test]
async fn secret_template_keys_are_added_changed_and_removed() {
    let tenant = Tenant::new("template").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let issued = tenant
        .issue(
            "t",
            json!({"organization": tenant.organization, "secretTemplate": {
                "labels": {"team": "a", "gone": "soon"},
                "annotations": {"example.com/note": "first"},
            }}),
        )
        .await;
    let secret = tenant.secrets().get("t").await.unwrap();
    assert_eq!(secret.labels()["team"], "a");
    assert_eq!(secret.labels()["gone"], "soon");
    assert_eq!(secret.annotations()["example.com/note"], "first");

    // A merge patch: `null` removes a key from the template.
    tenant
        .patch_spec(
            "t",
            json!({"secretTemplate": {
                "labels": {"team": "b", "gone": null},
                "annotations": {"example.com/note": null},
            }}),
        )
        .await;
    let secret = eventually("the Secret to follow the template", || async {
        let secret = tenant.secrets().get("t").await.ok()?;
        let labels = secret.labels();
        (labels.get("team").map(String::as_str) == Some("b")
            && !labels.contains_key("gone")
            && !secret.annotations().contains_key("example.com/note"))
        .then_some(secret)
    })
    .await;
    assert_eq!(
        secret.labels()["app.kubernetes.io/managed-by"],
        "access-token-operator",
        "the operator's own labels stay"
    );
    assert_eq!(
        tenant.token_in_secret("t").await.expose_secret(),
        issued.expose_secret(),
        "template edits keep the token"
    );
}

#[tokio::test]
async fn the_old_finalizer_completes_when_the_secret_is_already_gone() {
    let tenant = Tenant::new("nosecret").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    // As an earlier build left it: the operator's finalizer on the token (new tokens get none).
    tenant.add_old_finalizer("t").await;

    // While the operator is down the Secret goes, then the AccessToken is deleted: the
    // finalizer meets a token whose Secret no longer exists.
    operator.kill().await;
    delete_and_wait_gone(&tenant.secrets(), "t").await;
    tenant.delete_token("t").await;
    assert!(
        tenant
            .tokens()
            .get("t")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some(),
        "the finalizer holds the AccessToken"
    );
    operator.restart().await;
    eventually(
        "the AccessToken and its TechnicalUser to be gone",
        || async {
            let token = tenant.tokens().get_opt("t").await.ok()?;
            let user = tenant.users().get_opt("t").await.ok()?;
            (token.is_none() && user.is_none()).then_some(())
        },
    )
    .await;
    assert!(
        tenant.secrets().get_opt("t").await.unwrap().is_none(),
        "no Secret is written for a token being deleted"
    );
    tenant.wait_for_event("t", "TokenDeleted").await;
}

/// docs/concepts/lifecycle.md, "Invalid or unauthorised scope" and "Scope deleted and created
/// again": a Group that disappears disables its tokens, and a Group created again under the
/// same name is another object whose admins approved none of them: they stay disabled.
#[tokio::test]
async fn a_group_that_disappears_disables_its_tokens_and_one_created_again_does_not_revive_them() {
    let tenant = Tenant::new("groupgone").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let issued = tenant.issue("t", json!({"group": tenant.group})).await;

    let groups: Api<Group> = Api::all(tenant.client.clone());
    let group = groups.get(&tenant.group).await.unwrap();
    let issued_for = tenant.users().get("t").await.unwrap().spec.scope.uid;
    assert_eq!(
        issued_for, group.metadata.uid,
        "the TechnicalUser names the Group's uid"
    );
    delete_and_wait_gone(&groups, &tenant.group).await;
    let token = tenant.wait_for_reason("t", "GroupNotFound").await;
    assert_eq!(token.status.unwrap().phase, Some(Phase::Failed));
    tenant.wait_for_user_disabled("t").await;

    // The same name and spec again: another Group.
    let returned = Group::new(&tenant.group, group.spec.clone());
    groups
        .create(&PostParams::default(), &returned)
        .await
        .unwrap();
    let token = tenant.wait_for_reason("t", "ScopeChanged").await;
    let message = &crate::support::ready_condition(&token).unwrap().message;
    assert!(message.contains("deleted and created again"), "{message}");
    assert_eq!(
        token.status.unwrap().scope_uid,
        issued_for,
        "status names the Group the token was issued for"
    );
    let user = tenant.users().get("t").await.unwrap();
    assert!(user.spec.disabled, "still disabled");
    assert_eq!(
        user.spec.scope.uid, issued_for,
        "never bound to the new Group"
    );
    assert_eq!(
        user.spec.credentials[0].id,
        issued.id().as_str(),
        "nothing reissued"
    );
}

#[tokio::test]
async fn an_expiry_past_the_last_representable_date_is_an_invalid_spec() {
    let tenant = Tenant::new("invalid").await;
    let _operator = Operator::start(&tenant.namespace).await;
    // The schema admits up to six digits; 999999 weeks from now is past the year 9999.
    tenant
        .create_token(
            "t",
            json!({"organization": tenant.organization, "lifetime": "999999w"}),
        )
        .await;
    let token = tenant.wait_for_reason("t", "InvalidSpec").await;
    let status = token.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Pending));
    assert!(status.token_id.is_none());
    tenant.wait_for_event("t", "InvalidSpec").await;
    assert!(tenant.secrets().get_opt("t").await.unwrap().is_none());
    assert!(tenant.users().get_opt("t").await.unwrap().is_none());
}

#[tokio::test]
async fn a_technical_user_no_access_token_controls_is_a_conflict() {
    let tenant = Tenant::new("userconflict").await;
    // Only the operator's ServiceAccount may create TechnicalUsers (admission policy): act as
    // it to plant one that no AccessToken controls.
    let operator_identity = format!(
        "system:serviceaccount:{}:{}",
        crate::support::OPERATOR_ACCOUNT.0,
        crate::support::OPERATOR_ACCOUNT.1
    );
    let planted: TechnicalUser = serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "TechnicalUser",
        "metadata": {"name": "t", "namespace": tenant.namespace},
        "spec": {
            "scope": {"kind": "Organization", "name": tenant.organization, "organization": tenant.organization},
            "role": "OrganizationAdmin", "disabled": false, "expiresAt": "2099-01-01T00:00:00Z",
            "credentials": [],
        },
    }))
    .unwrap();
    let planted =
        Api::<TechnicalUser>::namespaced(client_as(&operator_identity).await, &tenant.namespace)
            .create(&PostParams::default(), &planted)
            .await
            .expect("the operator's identity may create a TechnicalUser");

    let _operator = Operator::start(&tenant.namespace).await;
    tenant
        .create_token("t", json!({"organization": tenant.organization}))
        .await;
    let token = tenant.wait_for_reason("t", "TechnicalUserConflict").await;
    assert_eq!(token.status.as_ref().unwrap().phase, Some(Phase::Failed));
    tenant.wait_for_event("t", "TechnicalUserConflict").await;
    let after = tenant.users().get("t").await.unwrap();
    assert_eq!(
        after.resource_version(),
        planted.resource_version(),
        "the planted TechnicalUser is left untouched"
    );
    assert!(after.owner_references().is_empty());
    assert!(
        tenant.secrets().get_opt("t").await.unwrap().is_none(),
        "no token is issued into a Secret"
    );
}
