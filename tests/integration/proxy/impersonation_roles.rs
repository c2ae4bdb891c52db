//! The proxy's ServiceAccount may impersonate exactly the live tokens' users, UIDs and
//! groups (the shard ClusterRoles the operator keeps), under the shipped RBAC and admission
//! policies of overlays/proxy, and nothing else.

use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use access_token_operator::impersonation::{DEFAULT_SHARDS, shard_name};

use crate::support::{
    OPERATOR_ACCOUNT, Operator, PROXY_ACCOUNT, Tenant, admin_client, client_with_token, eventually,
    proxy_kubeconfig, service_account_token, unique_name,
};

/// `kubectl auth can-i impersonate <what>` as the proxy's ServiceAccount.
async fn proxy_can_impersonate(kubeconfig: &std::path::Path, what: &str) -> bool {
    let output = crate::support::within(
        crate::support::DEADLINE,
        tokio::process::Command::new("kubectl")
            .args(["auth", "can-i", "impersonate", what])
            .env("KUBECONFIG", kubeconfig)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl runs");
    let answer = String::from_utf8_lossy(&output.stdout);
    // "no" may be followed by the RBAC authorizer's reasons (e.g. shards not written yet).
    match answer.split_whitespace().next().unwrap_or_default() {
        "yes" => true,
        "no" => false,
        _ => panic!(
            "kubectl auth can-i impersonate {what}: {answer:?} {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Whether the proxy may impersonate UID `uid`.
async fn proxy_can_impersonate_uid(token: &str, uid: &str) -> bool {
    proxy_may_impersonate(token, "authentication.k8s.io", "uids", uid).await
}

/// Whether the proxy may impersonate group `group`.
async fn proxy_can_impersonate_group(token: &str, group: &str) -> bool {
    proxy_may_impersonate(token, "", "groups", group).await
}

/// A SelfSubjectAccessReview as the proxy (what `kubectl auth can-i` sends; kubectl cannot
/// name these two: discovery lists no `uids`, and it maps `groups` to our Group kind).
async fn proxy_may_impersonate(token: &str, group: &str, resource: &str, name: &str) -> bool {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {
        "resourceAttributes": {"group": group, "resource": resource,
                               "verb": "impersonate", "name": name}}}))
    .unwrap();
    let client = client_with_token(token).await;
    Api::<SelfSubjectAccessReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
        .expect("a SelfSubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn the_proxy_may_impersonate_the_live_tokens_and_nothing_else() {
    let proxy = proxy_kubeconfig().await;
    let tenant = Tenant::new("impersonate").await;
    let shards = DEFAULT_SHARDS.to_string();
    let _operator = Operator::builder(&tenant.namespace)
        .args(&["--impersonation-role-shards", &shards])
        .start()
        .await;
    let proxy_token = service_account_token(PROXY_ACCOUNT.0, PROXY_ACCOUNT.1).await;

    tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    let uid = tenant.users().get("t").await.unwrap().metadata.uid.unwrap();
    let user = format!("users/accesstoken:{}:t", tenant.namespace);
    let org_group = format!("accesstoken:org:{}", tenant.organization);
    // Its names may land in different shards, written one after the other.
    eventually(
        "the new token's user, UID and groups to become impersonable",
        || async {
            let all = proxy_can_impersonate(&proxy, &user).await
                && proxy_can_impersonate_uid(&proxy_token, &uid).await
                && proxy_can_impersonate_group(&proxy_token, &org_group).await
                && proxy_can_impersonate_group(&proxy_token, &format!("{org_group}:user")).await;
            all.then_some(())
        },
    )
    .await;
    // Never a privileged or human identity, nor a group or user that is not ours.
    for never in [
        "users/system:admin",
        "users/system:kube-controller-manager",
        "users/system:serviceaccount:access-token-operator:access-token-operator",
        "users/alice@example.com",
        "users/accesstoken:nowhere:nothing",
    ] {
        assert!(!proxy_can_impersonate(&proxy, never).await, "{never}");
    }
    assert!(!proxy_can_impersonate_uid(&proxy_token, "00000000-0000-0000-0000-000000000000").await);
    for group in [
        "system:masters",
        "system:nodes",
        "accesstoken:org:not-an-organization",
    ] {
        assert!(
            !proxy_can_impersonate_group(&proxy_token, group).await,
            "{group}"
        );
    }

    // A deleted token stops being impersonable.
    tenant.delete_token("t").await;
    eventually(
        "the deleted token's user to stop being impersonable",
        || async { (!proxy_can_impersonate(&proxy, &user).await).then_some(()) },
    )
    .await;
    assert!(!proxy_can_impersonate_uid(&proxy_token, &uid).await);
}

#[tokio::test]
async fn the_shard_roles_hold_only_impersonate_on_our_names_whoever_writes_them() {
    proxy_kubeconfig().await;
    let admin = admin_client().await;
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    // A shard name no operator in this run writes (past the default shards).
    let name = shard_name(DEFAULT_SHARDS + 7);
    let role = |rules: serde_json::Value| -> ClusterRole {
        serde_json::from_value(json!({"metadata": {"name": name}, "rules": rules})).unwrap()
    };
    let refused = |result: kube::Result<ClusterRole>, why: &str| match result {
        Err(kube::Error::Api(status)) => assert!(
            status.message.contains("impersonation shard role"),
            "{why}: {}",
            status.message
        ),
        other => panic!("{why}: admitted {other:?}"),
    };
    let impersonate = |resource: &str, names: &[&str]| json!({"apiGroups": [""], "resources": [resource], "verbs": ["impersonate"], "resourceNames": names});
    // A new admission policy takes effect moments after it is created.
    eventually("the shard policy to refuse system:masters", || async {
        let masters = role(json!([impersonate("groups", &["system:masters"])]));
        match roles.create(&PostParams::default(), &masters).await {
            Ok(_) => {
                roles.delete(&name, &DeleteParams::default()).await.unwrap();
                None
            }
            Err(_) => Some(()),
        }
    })
    .await;
    // Even a cluster admin may not put a privileged name, a wildcard or another verb there.
    for (rules, why) in [
        (
            json!([impersonate("groups", &["system:masters"])]),
            "system:masters",
        ),
        (
            json!([impersonate("users", &["accesstoken:a:b", "alice"])]),
            "a human user",
        ),
        (
            json!([{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}]),
            "no resourceNames",
        ),
        (
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
            "everything",
        ),
        (
            json!([{"apiGroups": ["authentication.k8s.io"], "resources": ["uids"], "verbs": ["impersonate"], "resourceNames": ["*"]}]),
            "any uid",
        ),
    ] {
        refused(
            roles.create(&PostParams::default(), &role(rules)).await,
            why,
        );
    }
    let mut aggregating = role(json!([]));
    aggregating.aggregation_rule = serde_json::from_value(
        json!({"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate": "true"}}]}),
    )
    .unwrap();
    refused(
        roles.create(&PostParams::default(), &aggregating).await,
        "an aggregationRule",
    );
    // What the operator writes passes.
    roles
        .create(
            &PostParams::default(),
            &role(json!([impersonate("users", &["accesstoken:a:b"])])),
        )
        .await
        .expect("impersonate on accesstoken: names is admitted");
    roles.delete(&name, &DeleteParams::default()).await.unwrap();

    // And a shard is bound to the proxy's ServiceAccount only.
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin);
    let binding = serde_json::from_value(json!({
        "metadata": {"name": format!("steal-{name}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}],
    }))
    .unwrap();
    match bindings.create(&PostParams::default(), &binding).await {
        Err(kube::Error::Api(status)) => {
            assert!(
                status.message.contains("proxy's ServiceAccount only"),
                "{}",
                status.message
            )
        }
        other => panic!("a shard bound to another subject was admitted: {other:?}"),
    }
}

#[tokio::test]
async fn the_operator_may_write_no_cluster_role_but_the_shards() {
    // Its create, patch and escalate rights name the shards only: as its ServiceAccount,
    // writing another ClusterRole is refused.
    proxy_kubeconfig().await;
    let operator =
        client_with_token(&service_account_token(OPERATOR_ACCOUNT.0, OPERATOR_ACCOUNT.1).await)
            .await;
    let roles: Api<ClusterRole> = Api::all(operator);
    let other: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": unique_name("not-a-shard")},
        "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["accesstoken:a:b"]}],
    }))
    .unwrap();
    let denied = roles
        .patch(
            &other.metadata.name.clone().unwrap(),
            &PatchParams::apply("test").force(),
            &Patch::Apply(&other),
        )
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{denied:?}"
    );
}
