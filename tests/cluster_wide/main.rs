//! Tests that need the operator watching every namespace: Organization and Group status.
//! A separate test binary: cargo runs test binaries one at a time, so its cluster-wide
//! operator never reconciles alongside the per-namespace operators of `tests/integration`.

#[path = "../support/mod.rs"]
mod support;

use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use access_token_operator::api::{Group, Organization, Phase, TokenCounts};

use support::Tenant;
use support::{Operator, eventually, unique_name};

/// One cluster-wide operator at a time: two would reconcile the same objects concurrently.
static ONE_OPERATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn organizations_and_groups_report_readiness_and_token_counts() {
    let _one = ONE_OPERATOR.lock().await;
    let tenant = Tenant::new("scopes").await;
    let _operator = Operator::cluster_wide("cluster-wide").start().await;
    tenant
        .create_token("a", json!({"organization": tenant.organization}))
        .await;
    tenant
        .create_token(
            "b",
            json!({"organization": tenant.organization, "revoked": true}),
        )
        .await;
    tenant
        .create_token("c", json!({"group": tenant.group}))
        .await;
    tenant.wait_for_phase("a", Phase::Active).await;
    tenant.wait_for_phase("b", Phase::Revoked).await;
    tenant.wait_for_phase("c", Phase::Active).await;

    let orgs: Api<Organization> = Api::all(tenant.client.clone());
    let groups: Api<Group> = Api::all(tenant.client.clone());
    eventually("organization counts", || async {
        let status = orgs.get(&tenant.organization).await.ok()?.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "True"
            && status.tokens
                == TokenCounts {
                    active: 1,
                    revoked: 1,
                    ..Default::default()
                })
        .then_some(())
    })
    .await;
    eventually("group counts", || async {
        let status = groups.get(&tenant.group).await.ok()?.status?;
        (status.tokens
            == TokenCounts {
                active: 1,
                ..Default::default()
            })
        .then_some(())
    })
    .await;

    // A change to a token moves the counts, without touching the organization.
    tenant.patch_spec("b", json!({"revoked": false})).await;
    eventually("organization counts after un-revoke", || async {
        let status = orgs.get(&tenant.organization).await.ok()?.status?;
        (status.tokens
            == TokenCounts {
                active: 2,
                ..Default::default()
            })
        .then_some(())
    })
    .await;
    orgs.patch(
        &tenant.organization,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"displayName": "x"}})),
    )
    .await
    .unwrap();
    eventually("observedGeneration to follow the spec", || async {
        let org = orgs.get(&tenant.organization).await.ok()?;
        (org.status?.observed_generation == org.metadata.generation).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_group_whose_organization_is_missing_is_not_ready() {
    let _one = ONE_OPERATOR.lock().await;
    let tenant = Tenant::new("orphan").await;
    let _operator = Operator::cluster_wide("cluster-wide-orphan").start().await;
    let groups: Api<Group> = Api::all(tenant.client.clone());
    let name = unique_name("orphan-grp");
    let missing_org = unique_name("never-org");
    groups
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "Group",
                "metadata": {"name": name},
                "spec": {"organization": missing_org, "tokenNamespaces": [tenant.namespace]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    eventually("the group to report OrganizationMissing", || async {
        let status = groups.get(&name).await.ok()?.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "False" && ready.reason == "OrganizationMissing").then_some(())
    })
    .await;
    // Creating the organization makes the group ready, with no edit to the group.
    Api::<Organization>::all(tenant.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "Organization",
                "metadata": {"name": missing_org}, "spec": {}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    eventually("the group to become ready", || async {
        let status = groups.get(&name).await.ok()?.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "True").then_some(())
    })
    .await;
}
