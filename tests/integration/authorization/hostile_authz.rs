//! Hostile tenants against the authorization rules (docs/concepts/authorization.md), enforced
//! by the admission policies in deploy/ exactly as shipped: a namespace editor is not a scope
//! admin; an organization admin manages its organization's and its groups' tokens; a group
//! admin only its group's; a token written before its Group existed is never issued; nobody
//! but the operator writes TechnicalUsers or status.

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use access_token_operator::api::{
    AccessToken, Credential, Phase, TechnicalUser, TechnicalUserSpec,
};

use crate::support::{
    DEADLINE, Operator, Tenant, access_token, admin_client, editor, eventually, grant_scope_admin,
    unique_name, wait_until_the_group_policy_reads,
};

/// Asserts a write was refused by the API server (403) with a message containing `needle`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, needle: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "refused as forbidden: {status:?}");
            assert!(
                status.message.contains(needle),
                "the message names the missing right ({needle}): {}",
                status.message
            );
        }
        other => panic!("expected a refusal naming {needle}, got {other:?}"),
    }
}

fn organization_right(organization: &str) -> String {
    format!(r#"needs verb "admin" on organizations.iam.accesstoken.io "{organization}""#)
}

fn group_right(group: &str) -> String {
    format!(r#"needs verb "admin" on groups.iam.accesstoken.io "{group}""#)
}

/// Every write a tenant can make to an existing token: revoke, the admin flip, delete.
async fn assert_every_change_refused(tokens: &Api<AccessToken>, name: &str, needle: &str) {
    for spec in [json!({"revoked": true}), json!({"admin": true})] {
        let patch = Patch::Merge(json!({ "spec": spec }));
        assert_refused(
            tokens.patch(name, &PatchParams::default(), &patch).await,
            needle,
        );
    }
    assert_refused(tokens.delete(name, &DeleteParams::default()).await, needle);
}

#[tokio::test]
async fn a_namespace_editor_without_the_scope_admin_right_is_refused_every_token_write() {
    let tenant = Tenant::new("authz-editor").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let org_spec = json!({"organization": tenant.organization});
    let group_spec = json!({"group": tenant.group});
    tenant.issue("org-token", org_spec.clone()).await;
    tenant.issue("group-token", group_spec.clone()).await;

    let (_, mallory) = editor(&tenant, "mallory").await;
    let tokens: Api<AccessToken> = Api::namespaced(mallory, &tenant.namespace);
    wait_until_the_group_policy_reads(&tokens, &tenant.group, DEADLINE).await;
    let (org_right, group_right) = (
        organization_right(&tenant.organization),
        group_right(&tenant.group),
    );

    let post = PostParams::default();
    let new_org_token = access_token(&tenant.namespace, "mine", org_spec);
    assert_refused(tokens.create(&post, &new_org_token).await, &org_right);
    let new_group_token = access_token(&tenant.namespace, "mine", group_spec);
    assert_refused(tokens.create(&post, &new_group_token).await, &group_right);
    assert_every_change_refused(&tokens, "org-token", &org_right).await;
    assert_every_change_refused(&tokens, "group-token", &group_right).await;

    // Nothing the editor tried took effect.
    for name in ["org-token", "group-token"] {
        let token = tenant.tokens().get(name).await.expect("still there");
        assert!(!token.spec.revoked && !token.spec.admin, "{name} unchanged");
        assert!(
            token.metadata.deletion_timestamp.is_none(),
            "{name} not deleting"
        );
        assert_eq!(token.status.and_then(|s| s.phase), Some(Phase::Active));
    }
    assert!(tenant.tokens().get_opt("mine").await.unwrap().is_none());
}

#[tokio::test]
async fn an_organization_admin_manages_the_organizations_tokens_and_its_groups_tokens() {
    let tenant = Tenant::new("authz-org").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let (olivia, client) = editor(&tenant, "olivia").await;
    grant_scope_admin(&olivia, "organizations", &tenant.organization).await;
    let tokens: Api<AccessToken> = Api::namespaced(client, &tenant.namespace);

    for (name, spec) in [
        ("org-token", json!({"organization": tenant.organization})),
        ("group-token", json!({"group": tenant.group})),
    ] {
        // RBAC grants reach the authorizer's cache within moments: retry until accepted.
        let token = access_token(&tenant.namespace, name, spec);
        eventually(&format!("{olivia} to create {name}"), || async {
            tokens.create(&PostParams::default(), &token).await.ok()
        })
        .await;
        tenant.wait_for_phase(name, Phase::Active).await;
        let admin = Patch::Merge(json!({"spec": {"admin": true}}));
        tokens
            .patch(name, &PatchParams::default(), &admin)
            .await
            .expect("the scope's admin assigns the admin role");
        let revoke = Patch::Merge(json!({"spec": {"revoked": true}}));
        tokens
            .patch(name, &PatchParams::default(), &revoke)
            .await
            .expect("the scope's admin revokes");
        tenant.wait_for_phase(name, Phase::Revoked).await;
        crate::support::delete_and_wait_gone(&tokens, name).await;
    }
}

#[tokio::test]
async fn a_group_admin_manages_that_groups_tokens_and_no_others() {
    let tenant = Tenant::new("authz-group").await;
    let _operator = Operator::start(&tenant.namespace).await;
    // A second group of the same organization, admitting the same namespace.
    let other_group = unique_name("authz-other");
    tenant.create_group(&other_group).await;
    tenant
        .issue("org-token", json!({"organization": tenant.organization}))
        .await;

    let (gina, client) = editor(&tenant, "gina").await;
    grant_scope_admin(&gina, "groups", &tenant.group).await;
    let tokens: Api<AccessToken> = Api::namespaced(client, &tenant.namespace);
    wait_until_the_group_policy_reads(&tokens, &other_group, DEADLINE).await;

    let mine = access_token(&tenant.namespace, "mine", json!({"group": tenant.group}));
    eventually(
        &format!("{gina} to create a token of her group"),
        || async { tokens.create(&PostParams::default(), &mine).await.ok() },
    )
    .await;
    tenant.wait_for_phase("mine", Phase::Active).await;
    let revoke = Patch::Merge(json!({"spec": {"revoked": true, "admin": true}}));
    tokens
        .patch("mine", &PatchParams::default(), &revoke)
        .await
        .expect("the group's admin changes its tokens");
    tenant.wait_for_phase("mine", Phase::Revoked).await;

    let post = PostParams::default();
    let sibling = access_token(&tenant.namespace, "sibling", json!({"group": other_group}));
    assert_refused(
        tokens.create(&post, &sibling).await,
        &group_right(&other_group),
    );
    let org_token = access_token(
        &tenant.namespace,
        "org",
        json!({"organization": tenant.organization}),
    );
    let org_right = organization_right(&tenant.organization);
    assert_refused(tokens.create(&post, &org_token).await, &org_right);
    assert_every_change_refused(&tokens, "org-token", &org_right).await;

    crate::support::delete_and_wait_gone(&tokens, "mine").await;
}

/// Security review N4/N10: the group-token policy reads a group's organization from the
/// Group itself, so a token naming a Group that does not exist yet is checked against nothing
/// and admitted. The operator never issues it: it is not newer than its Group. Once the Group
/// exists, its writer may not even delete it, and writing it anew is checked.
#[tokio::test]
async fn a_token_written_before_its_group_exists_is_never_issued() {
    let tenant = Tenant::new("authz-early").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let (_, mallory) = editor(&tenant, "mallory").await;
    let tokens: Api<AccessToken> = Api::namespaced(mallory, &tenant.namespace);
    let future = unique_name("authz-future");
    let early = access_token(
        &tenant.namespace,
        "early",
        json!({"group": future, "admin": true}),
    );
    eventually(
        "the editor's RBAC to let her create AccessTokens",
        || async { tokens.create(&PostParams::default(), &early).await.ok() },
    )
    .await;
    tenant.wait_for_reason("early", "GroupNotFound").await;

    // A platform admin creates the Group, admitting the namespace.
    tenant.create_group(&future).await;
    let refused = tenant.wait_for_reason("early", "GroupNewerThanToken").await;
    assert_eq!(refused.status.unwrap().phase, Some(Phase::Pending));
    assert!(tenant.secrets().get_opt("early").await.unwrap().is_none());
    assert!(tenant.users().get_opt("early").await.unwrap().is_none());

    // Now the policy reads the Group: the writer may neither change nor delete nor rewrite it.
    wait_until_the_group_policy_reads(&tokens, &future, DEADLINE).await;
    assert_every_change_refused(&tokens, "early", &group_right(&future)).await;
    crate::support::delete_and_wait_gone(&tenant.tokens(), "early").await;
    assert_refused(
        tokens.create(&PostParams::default(), &early).await,
        &group_right(&future),
    );
}

#[tokio::test]
async fn nobody_but_the_operator_writes_technical_users() {
    let tenant = Tenant::new("authz-tu").await;
    let _operator = Operator::start(&tenant.namespace).await;
    tenant
        .issue(
            "t",
            json!({"organization": tenant.organization, "admin": true}),
        )
        .await;
    let issued = tenant
        .users()
        .get("t")
        .await
        .expect("the TechnicalUser exists");
    let (_, editor_client) = editor(&tenant, "eve").await;
    let needle = "TechnicalUsers are written by the access-token-operator only";

    // A namespace editor is refused by RBAC already (it may only read TechnicalUsers); even a
    // cluster admin (system:masters), whom RBAC allows everything, is refused by the policy.
    for (client, needle) in [(editor_client, "cannot"), (admin_client().await, needle)] {
        let users: Api<TechnicalUser> = Api::namespaced(client, &tenant.namespace);
        let mut forged = TechnicalUser::new(
            "forged",
            TechnicalUserSpec {
                credentials: vec![Credential {
                    id: "aaaaaaaaaaaa".into(),
                    hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
                    not_after: issued.spec.expires_at.clone(),
                    retired_at: None,
                }],
                ..issued.spec.clone()
            },
        );
        forged.metadata.owner_references = issued.metadata.owner_references.clone();
        forged.metadata.labels = issued.metadata.labels.clone();
        assert_refused(users.create(&PostParams::default(), &forged).await, needle);

        let mut credentials = serde_json::to_value(&issued.spec.credentials).unwrap();
        credentials
            .as_array_mut()
            .unwrap()
            .push(serde_json::to_value(&forged.spec.credentials[0]).unwrap());
        let add_credential = Patch::Merge(json!({"spec": {"credentials": credentials}}));
        assert_refused(
            users
                .patch("t", &PatchParams::default(), &add_credential)
                .await,
            needle,
        );
        assert_refused(users.delete("t", &DeleteParams::default()).await, needle);
    }

    let after = tenant.users().get("t").await.expect("still there");
    assert_eq!(after.spec, issued.spec, "the TechnicalUser is unchanged");
    assert!(tenant.users().get_opt("forged").await.unwrap().is_none());
}

#[tokio::test]
async fn a_tenant_namespace_with_tokens_can_still_be_deleted() {
    // The policies let the cluster's own deleters through: the namespace controller deletes
    // the AccessTokens and their children (the operator's sweep too), and the namespace goes.
    let tenant = Tenant::new("authz-nsdel").await;
    let _operator = Operator::start(&tenant.namespace).await;
    tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    let namespaces: Api<Namespace> = Api::all(admin_client().await);
    crate::support::delete_and_wait_gone(&namespaces, &tenant.namespace).await;
}

#[tokio::test]
async fn nobody_but_the_operator_writes_status_whatever_rbac_says() {
    let tenant = Tenant::new("authz-status").await;
    let _operator = Operator::start(&tenant.namespace).await;
    // The operator's own status writes pass: the token is issued and Active.
    tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    let before = tenant.tokens().get("t").await.unwrap().status.unwrap();
    // A namespace owner as many platforms define one: every verb on every resource of the
    // API group, which matches the status subresource too.
    let (user, editor_client) = editor(&tenant, "owner").await;
    crate::support::grant_everything_in_namespace(&user, &tenant.namespace).await;
    let needle = "is written by the access-token-operator only";

    let tokens: Api<AccessToken> = Api::namespaced(editor_client, &tenant.namespace);
    let far = "2125-01-01T00:00:00Z";
    for (what, status) in [
        ("extend the expiry", json!({"rotatedAt": far})),
        ("defeat the idle timeout", json!({"lastUsedAt": far})),
        (
            "revive a rotated-out credential",
            json!({"tokenId": "aaaaaaaaaaaa"}),
        ),
    ] {
        let patch = Patch::Merge(json!({ "status": status }));
        let result = tokens
            .patch_status("t", &PatchParams::default(), &patch)
            .await;
        assert!(result.is_err(), "{what}: a status write by {user} passed");
        assert_refused(result, needle);
    }
    // Nor a cluster admin, whom RBAC allows everything, on an AccessToken or a scope.
    let admin = admin_client().await;
    let patch = Patch::Merge(json!({"status": {"rotatedAt": far}}));
    assert_refused(
        Api::<AccessToken>::namespaced(admin.clone(), &tenant.namespace)
            .patch_status("t", &PatchParams::default(), &patch)
            .await,
        needle,
    );
    let patch = Patch::Merge(json!({"status": {"observedGeneration": 0}}));
    assert_refused(
        Api::<access_token_operator::api::Organization>::all(admin)
            .patch_status(&tenant.organization, &PatchParams::default(), &patch)
            .await,
        needle,
    );

    let after = tenant.tokens().get("t").await.unwrap().status.unwrap();
    assert_eq!(after.rotated_at, before.rotated_at);
    assert_eq!(after.last_used_at, before.last_used_at);
    assert_eq!(after.token_id, before.token_id);
}

#[tokio::test]
async fn the_garbage_collector_may_update_metadata_but_not_a_spec() {
    // kube-controller-manager's garbage collector passes the policies for updates that leave
    // the spec alone (orphaning strips owner references); a spec change in its name is refused.
    let tenant = Tenant::new("authz-gc").await;
    let _operator = Operator::start(&tenant.namespace).await;
    tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    let gc =
        crate::support::client_as("system:serviceaccount:kube-system:generic-garbage-collector")
            .await;
    let tokens: Api<AccessToken> = Api::namespaced(gc.clone(), &tenant.namespace);
    let users: Api<TechnicalUser> = Api::namespaced(gc, &tenant.namespace);
    let revoke = Patch::Merge(json!({"spec": {"revoked": true}}));
    assert_refused(
        tokens.patch("t", &PatchParams::default(), &revoke).await,
        &organization_right(&tenant.organization),
    );
    let enable =
        Patch::Merge(json!({"spec": {"disabled": true, "expiresAt": "2125-01-01T00:00:00Z"}}));
    assert_refused(
        users.patch("t", &PatchParams::default(), &enable).await,
        "TechnicalUsers are written by the access-token-operator only",
    );
    let label = Patch::Merge(json!({"metadata": {"labels": {"gc-was-here": "yes"}}}));
    tokens
        .patch("t", &PatchParams::default(), &label)
        .await
        .expect("a metadata-only update by the garbage collector passes");
    users
        .patch("t", &PatchParams::default(), &label)
        .await
        .expect("a metadata-only update by the garbage collector passes");
    assert!(!tenant.tokens().get("t").await.unwrap().spec.revoked);
}
