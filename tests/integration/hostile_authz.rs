//! Hostile tenants against the authorization rules (docs/concepts/authorization.md), enforced
//! by the admission policies in deploy/ exactly as shipped: a namespace editor is not a scope
//! admin; an organization admin manages its organization's and its groups' tokens; a group
//! admin only its group's; nobody but the operator writes TechnicalUsers or the group index.

use k8s_openapi::api::{
    core::v1::{ConfigMap, Namespace},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use access_token_operator::api::{
    AccessToken, Credential, Group, GroupSpec, Phase, TechnicalUser, TechnicalUserSpec,
};

use crate::support::{
    OPERATOR_ACCOUNT, Operator, Tenant, admin_client, client_as, eventually, unique_name,
};

const GROUP_INDEX: &str = "access-token-operator-groups";

/// A person (an impersonated user) with the built-in `edit` role in the tenant's namespace:
/// AccessTokens are writable for them only through deploy/tenant-roles.yaml's aggregation.
async fn editor(tenant: &Tenant, prefix: &str) -> (String, Client) {
    let user = unique_name(prefix);
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{user}-edit")),
            namespace: Some(tenant.namespace.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "edit".into(),
        },
        subjects: Some(vec![user_subject(&user)]),
    };
    Api::<RoleBinding>::namespaced(tenant.client.clone(), &tenant.namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding is created");
    let client = client_as(&user).await;
    // The aggregation controller fills `edit` from deploy/tenant-roles.yaml.
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &tenant.namespace);
    eventually(
        &format!("{user} to read AccessTokens through edit"),
        || async { tokens.list(&Default::default()).await.ok().map(drop) },
    )
    .await;
    (user, client)
}

fn user_subject(user: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: user.into(),
        namespace: None,
    }
}

/// Grants `user` the admin right of a scope: verb `admin` on `resource`/`name`, as a
/// platform admin would (`kubectl create clusterrole --verb=admin ...`).
async fn grant_scope_admin(user: &str, resource: &str, name: &str) {
    let client = admin_client().await;
    let role_name = unique_name(&format!("{user}-{resource}-admin"));
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["iam.accesstoken.io".into()]),
            resources: Some(vec![resource.into()]),
            resource_names: Some(vec![name.into()]),
            verbs: vec!["admin".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("ClusterRole is created");
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role_name,
        },
        subjects: Some(vec![user_subject(user)]),
    };
    Api::<ClusterRoleBinding>::all(client)
        .create(&PostParams::default(), &binding)
        .await
        .expect("ClusterRoleBinding is created");
}

fn access_token(namespace: &str, name: &str, spec: Value) -> AccessToken {
    serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1",
        "kind": "AccessToken",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("a valid AccessToken")
}

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

/// Waits until the operator's group index maps `group` to `organization` (the admission
/// policy reads it to let organization admins manage group tokens).
async fn wait_for_group_index(group: &str, organization: &str) {
    let config_maps: Api<ConfigMap> = Api::namespaced(admin_client().await, OPERATOR_ACCOUNT.0);
    eventually(&format!("the group index to list {group}"), || async {
        let index = config_maps.get_opt(GROUP_INDEX).await.ok()??;
        (index.data?.get(group)? == organization).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_namespace_editor_without_the_scope_admin_right_is_refused_every_token_write() {
    let tenant = Tenant::new("authz-editor").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let org_spec = json!({"organization": tenant.organization});
    let group_spec = json!({"group": tenant.group});
    tenant.issue("org-token", org_spec.clone()).await;
    tenant.issue("group-token", group_spec.clone()).await;
    wait_for_group_index(&tenant.group, &tenant.organization).await;

    let (_, mallory) = editor(&tenant, "mallory").await;
    let tokens: Api<AccessToken> = Api::namespaced(mallory, &tenant.namespace);
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
    wait_for_group_index(&tenant.group, &tenant.organization).await;
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
    Api::<Group>::all(tenant.client.clone())
        .create(
            &PostParams::default(),
            &Group::new(
                &other_group,
                GroupSpec {
                    organization: tenant.organization.clone(),
                    display_name: None,
                    token_namespaces: vec![tenant.namespace.clone()],
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("Group is created");
    tenant
        .issue("org-token", json!({"organization": tenant.organization}))
        .await;
    wait_for_group_index(&other_group, &tenant.organization).await;

    let (gina, client) = editor(&tenant, "gina").await;
    grant_scope_admin(&gina, "groups", &tenant.group).await;
    let tokens: Api<AccessToken> = Api::namespaced(client, &tenant.namespace);

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

#[tokio::test]
async fn nobody_but_the_operator_writes_technical_users_or_the_group_index() {
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

    // The group index decides who manages group tokens: its data is the operator's alone.
    let config_maps: Api<ConfigMap> = Api::namespaced(admin_client().await, OPERATOR_ACCOUNT.0);
    let forge_index = Patch::Merge(json!({"data": {tenant.group.clone(): "someone-elses-org"}}));
    assert_refused(
        config_maps
            .patch(GROUP_INDEX, &PatchParams::default(), &forge_index)
            .await,
        "ConfigMap access-token-operator-groups is written by the access-token-operator only",
    );
    assert_refused(
        config_maps
            .delete(GROUP_INDEX, &DeleteParams::default())
            .await,
        "admin may not delete it",
    );

    let after = tenant.users().get("t").await.expect("still there");
    assert_eq!(after.spec, issued.spec, "the TechnicalUser is unchanged");
    assert!(tenant.users().get_opt("forged").await.unwrap().is_none());
}

#[tokio::test]
async fn a_tenant_namespace_with_tokens_can_still_be_deleted() {
    // The policies let the cluster's own deleters through: the namespace controller deletes
    // the AccessTokens, the operator's finalizer removes the children, and the namespace goes.
    let tenant = Tenant::new("authz-nsdel").await;
    let _operator = Operator::start(&tenant.namespace).await;
    tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    let namespaces: Api<Namespace> = Api::all(admin_client().await);
    crate::support::delete_and_wait_gone(&namespaces, &tenant.namespace).await;
}
