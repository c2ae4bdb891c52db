//! `Organization` and `Group`: the cluster-scoped tenants that tokens are scoped to.
// Several `printcolumn(type_ = "string", ...)` attributes are distinct columns, not duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::conditions::conditions_schema;

/// Desired state of an Organization.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "iam.accesstoken.io",
    version = "v1alpha1",
    kind = "Organization",
    doc = "An organization of the platform. AccessTokens scoped to it may live only in the namespaces it lists in spec.tokenNamespaces.",
    plural = "organizations",
    shortname = "org",
    category = "accesstokens",
    status = "ScopeStatus",
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(
        name = "Active",
        type_ = "integer",
        json_path = ".status.tokens.active"
    ),
    printcolumn(
        name = "Revoked",
        type_ = "integer",
        json_path = ".status.tokens.revoked"
    ),
    printcolumn(
        name = "Expired",
        type_ = "integer",
        json_path = ".status.tokens.expired"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationSpec {
    /// Human-readable name of the organization, for display only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Namespaces whose AccessTokens may be scoped to this organization. This is the tenant boundary: a token in any other namespace is refused (NamespaceNotAllowed). Empty allows none.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub token_namespaces: Vec<String>,
}

/// Desired state of a Group.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "iam.accesstoken.io",
    version = "v1alpha1",
    kind = "Group",
    doc = "A group inside one organization. AccessTokens scoped to it may live only in the namespaces it lists in spec.tokenNamespaces.",
    plural = "groups",
    shortname = "grp",
    category = "accesstokens",
    status = "ScopeStatus",
    printcolumn(
        name = "Organization",
        type_ = "string",
        json_path = ".spec.organization"
    ),
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(
        name = "Active",
        type_ = "integer",
        json_path = ".status.tokens.active"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GroupSpec {
    /// Name of the Organization this group belongs to. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("organization is immutable").reason(Reason::FieldValueInvalid))]
    #[schemars(length(min = 1, max = 253))]
    pub organization: String,
    /// Human-readable name of the group, for display only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Namespaces whose AccessTokens may be scoped to this group. Empty allows none.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub token_namespaces: Vec<String>,
}

/// Observed state of an Organization or Group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScopeStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready is True while the scope is usable for tokens.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// How many AccessTokens scoped directly to this object are in each phase.
    #[serde(default)]
    pub tokens: TokenCounts,
}

/// Counts of AccessTokens by phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenCounts {
    /// Tokens waiting to be issued (including those whose scope is not valid yet).
    pub pending: i64,
    /// Tokens that are issued and usable.
    pub active: i64,
    /// Tokens disabled by `spec.revoked`.
    pub revoked: i64,
    /// Tokens past their expiry.
    pub expired: i64,
    /// Tokens that failed (for example a Secret conflict).
    pub failed: i64,
}
