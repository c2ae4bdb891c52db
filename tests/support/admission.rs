//! Admission policies a test puts in a tenant's way: a ValidatingAdmissionPolicy (and its
//! binding) that refuses every create and update of one kind in one namespace, for everyone,
//! the operator included, as a tenant's quota or webhook could.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::{
    Api, Resource,
    api::{DeleteParams, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{OPERATOR_ACCOUNT, admin_client, client_as, eventually, unique_name};

/// Denies every create and update of `K` in `namespace`, with the message `denial`, and
/// returns the name of the policy and its binding once the API server enforces them (a
/// dry-run create of `probe` by the operator's ServiceAccount is refused with `denial`).
pub async fn deny_writes_in<K>(namespace: &str, denial: &str, probe: &K) -> String
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let client = admin_client().await;
    let name = unique_name(&format!("deny-{}", K::plural(&())));
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [K::group(&())], "apiVersions": [K::version(&())],
                "operations": ["CREATE", "UPDATE"], "resources": [K::plural(&())],
            }]},
            "validations": [{"expression": "false", "message": denial}],
        },
    }))
    .expect("a valid policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": namespace},
            }},
        },
    }))
    .expect("a valid binding");
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy is created");
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding is created");

    // Policies take effect a moment after they are stored: probe with a dry-run create.
    let operator = client_as(&format!(
        "system:serviceaccount:{}:{}",
        OPERATOR_ACCOUNT.0, OPERATOR_ACCOUNT.1
    ))
    .await;
    let objects: Api<K> = Api::namespaced(operator, namespace);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually("the denying policy to take effect", || async {
        match objects.create(&dry_run, probe).await {
            Err(kube::Error::Api(status)) if status.message.contains(denial) => Some(()),
            _ => None,
        }
    })
    .await;
    name
}

/// Lets writes through again: deletes the binding of [`deny_writes_in`]'s policy `name`.
pub async fn lift_denial(name: &str) {
    Api::<ValidatingAdmissionPolicyBinding>::all(admin_client().await)
        .delete(name, &DeleteParams::default())
        .await
        .expect("binding is deleted");
}

/// Deletes [`deny_writes_in`]'s policy `name` (after [`lift_denial`]).
pub async fn delete_denial(name: &str) {
    Api::<ValidatingAdmissionPolicy>::all(admin_client().await)
        .delete(name, &DeleteParams::default())
        .await
        .expect("policy is deleted");
}
