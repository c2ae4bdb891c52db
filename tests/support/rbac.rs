//! RBAC a platform admin would grant people in the tests: rights on one Organization or
//! Group (`admin` makes a scope admin), and the built-in `edit` role in a namespace.

use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use access_token_operator::api::AccessToken;

use super::{
    cluster::{admin_client, client_as, unique_name},
    tenant::{Tenant, access_token},
    wait::{eventually, eventually_for},
};

/// An RBAC subject for the (impersonated) user `user`.
pub fn user_subject(user: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: user.into(),
        namespace: None,
    }
}

/// Grants `user` `verbs` on one Organization or Group (`resource`/`name`), as a platform
/// admin would (`kubectl create clusterrole --verb=... --resource-name=...`).
pub async fn grant_on_scope(user: &str, resource: &str, name: &str, verbs: &[&str]) {
    let client = admin_client().await;
    let role_name = unique_name(&format!("{user}-{resource}"));
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["iam.accesstoken.io".into()]),
            resources: Some(vec![resource.into()]),
            resource_names: Some(vec![name.into()]),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
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

/// Makes `user` an admin of one Organization or Group: verb `admin` on `resource`/`name`.
pub async fn grant_scope_admin(user: &str, resource: &str, name: &str) {
    grant_on_scope(user, resource, name, &["admin"]).await;
}

/// Binds the (Cluster)Role `kind`/`role` to `user` in `namespace`, as RoleBinding `name`.
async fn bind_in_namespace(user: &str, namespace: &str, name: &str, kind: &str, role: &str) {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: kind.into(),
            name: role.into(),
        },
        subjects: Some(vec![user_subject(user)]),
    };
    Api::<RoleBinding>::namespaced(admin_client().await, namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding is created");
}

/// Grants `user` every verb on every resource of iam.accesstoken.io in `namespace`
/// (`resources: ["*"]`, which matches subresources such as `accesstokens/status`): a
/// "namespace owner" role as many platforms define one.
pub async fn grant_everything_in_namespace(user: &str, namespace: &str) {
    let name = unique_name("everything");
    let role = Role {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["iam.accesstoken.io".into()]),
            resources: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin_client().await, namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("the Role is created");
    bind_in_namespace(user, namespace, &name, "Role", &name).await;
    // The grant reaches the authorizer's cache a moment later: wait until it answers with it,
    // so that a refusal the test then sees is the admission policies', not RBAC's lag.
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.into()),
                verb: Some("patch".into()),
                group: Some("iam.accesstoken.io".into()),
                resource: Some("accesstokens".into()),
                subresource: Some("status".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client_as(user).await);
    eventually(
        &format!("RBAC to give {user} everything in {namespace}"),
        || async {
            let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
            answer.status?.allowed.then_some(())
        },
    )
    .await;
}

/// Binds the built-in `edit` role to `user` in `namespace` and waits until the aggregation
/// controller has filled it from deploy/tenant-roles.yaml (AccessTokens readable).
pub async fn bind_edit(user: &str, namespace: &str) {
    bind_in_namespace(
        user,
        namespace,
        &format!("{user}-edit"),
        "ClusterRole",
        "edit",
    )
    .await;
    let tokens: Api<AccessToken> = Api::namespaced(client_as(user).await, namespace);
    eventually(
        &format!("{user} to read AccessTokens in {namespace} through edit"),
        || async { tokens.list(&Default::default()).await.ok().map(drop) },
    )
    .await;
}

/// A new person (an impersonated user named after `prefix`) with `edit` in the tenant's
/// namespace, and a client acting as them. A namespace editor is not a scope admin.
pub async fn editor(tenant: &Tenant, prefix: &str) -> (String, Client) {
    let user = unique_name(prefix);
    bind_edit(&user, &tenant.namespace).await;
    let client = client_as(&user).await;
    (user, client)
}

/// Waits up to `limit` until kube-apiserver's group-token create policy reads Group `group`:
/// it takes the Groups as its parameters, from an informer that sees a new Group (or, after an
/// install, the Group kind) a moment later, and until then a token of the group is checked
/// against no Group. The probe is a server-side dry run (nothing is written) of such a token by
/// `tokens`' user, who must not manage the group: refused, naming the group right, once the
/// policy reads the Group.
pub async fn wait_until_the_group_policy_reads(
    tokens: &Api<AccessToken>,
    group: &str,
    limit: std::time::Duration,
) {
    let namespace = tokens.namespace().expect("a namespaced Api").to_string();
    let probe = access_token(
        &namespace,
        "policy-probe",
        serde_json::json!({"group": group}),
    );
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let needed = format!(r#"needs verb "admin" on groups.iam.accesstoken.io "{group}""#);
    eventually_for(
        limit,
        &format!("the group-token policy to read Group {group}"),
        || async {
            match tokens.create(&dry_run, &probe).await {
                Err(kube::Error::Api(status)) if status.message.contains(&needed) => Some(()),
                _ => None,
            }
        },
    )
    .await;
}
