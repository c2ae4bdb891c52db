//! `Organization` and `Group`: the cluster-scoped tenants that tokens are scoped to.
// Several `printcolumn(type_ = "string", ...)` attributes are distinct columns, not duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{DURATION_RULE, cel_seconds, conditions::conditions_schema};

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
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspended"),
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
    /// Kill switch: true stops every token of this organization and of all its groups at once (the verifier denies them; phase Suspended, reason ScopeSuspended). Setting it back to false restores the same tokens. Default false.
    #[serde(default)]
    pub suspended: bool,
    /// Limits on the lifetime and use of this organization's tokens, and of its groups' (a Group's own policy can only tighten these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_policy: Option<TokenPolicy>,
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
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspended"),
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
    /// Kill switch: true stops every token of this group at once (the verifier denies them; phase Suspended, reason ScopeSuspended). Setting it back to false restores the same tokens. Default false.
    #[serde(default)]
    pub suspended: bool,
    /// Limits on the lifetime and use of this group's tokens. It can only tighten its organization's policy: for each of maxLifetime, defaultLifetime and idleTimeout the shorter of the two applies, for expiryWarning the longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_policy: Option<TokenPolicy>,
}

fn default_within_max() -> String {
    format!(
        "!has(self.maxLifetime) || !has(self.defaultLifetime) || {} <= {}",
        cel_seconds("defaultLifetime"),
        cel_seconds("maxLifetime")
    )
}

/// Token policy of an Organization or Group. Every duration is a whole number and a unit: m (minutes), h (hours), d (days) or w (weeks), e.g. 90d.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(default_within_max()).message("tokenPolicy.defaultLifetime must not be longer than tokenPolicy.maxLifetime").reason(Reason::FieldValueInvalid))]
pub struct TokenPolicy {
    /// No token of this scope lives longer than this, counted from its creation. A token asking for more is not issued (Ready=False, reason PolicyViolation); lowering it later moves issued tokens' expiry earlier (with a TokenExpiryShortened Event), never later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("tokenPolicy.maxLifetime must be a whole number followed by m, h, d or w, for example 90d").reason(Reason::FieldValueInvalid))]
    #[schemars(length(max = 7))]
    pub max_lifetime: Option<String>,
    /// Lifetime of tokens that set neither expiresAt nor lifetime (otherwise 90 days, or maxLifetime if shorter). At most maxLifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("tokenPolicy.defaultLifetime must be a whole number followed by m, h, d or w, for example 30d").reason(Reason::FieldValueInvalid))]
    #[schemars(length(max = 7))]
    pub default_lifetime: Option<String>,
    /// How long before its expiry a token reports ExpiringSoon=True and gets one TokenExpiringSoon Warning Event. Default 7d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("tokenPolicy.expiryWarning must be a whole number followed by m, h, d or w, for example 7d").reason(Reason::FieldValueInvalid))]
    #[schemars(length(max = 7))]
    pub expiry_warning: Option<String>,
    /// Tokens not used for this long (counted from their last use, issue or reactivation) are suspended, reversibly (phase Suspended, reason TokenIdle). Unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DURATION_RULE).message("tokenPolicy.idleTimeout must be a whole number followed by m, h, d or w, for example 30d").reason(Reason::FieldValueInvalid))]
    #[schemars(length(max = 7))]
    pub idle_timeout: Option<String>,
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
    /// How many AccessTokens scoped directly to this object are in each phase. A change of the counts alone is written at most once a second.
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
    /// Tokens stopped by a kill switch (spec.suspended of their scope) or for being idle.
    #[serde(default)]
    pub suspended: i64,
    /// Tokens that failed (for example a Secret conflict).
    pub failed: i64,
}
