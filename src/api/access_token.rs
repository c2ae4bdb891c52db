//! `AccessToken`: what tenants write. The operator reads its spec and writes only its status.
// Several `printcolumn(type_ = "string", ...)` attributes are distinct columns, not duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Role, conditions::conditions_schema};

/// Desired state of an AccessToken. The operator never writes it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "iam.accesstoken.io",
    version = "v1alpha1",
    kind = "AccessToken",
    doc = "An API token for automation, scoped to an organization or a group. The operator backs it with a TechnicalUser and writes the token into a Secret (the only place the value ever appears).",
    plural = "accesstokens",
    shortname = "atk",
    category = "accesstokens",
    namespaced,
    status = "AccessTokenStatus",
    // `kubectl get atk --field-selector spec.organization=acme`; also how scope status counts.
    selectable = ".spec.organization",
    selectable = ".spec.group",
    printcolumn(name = "Scope", type_ = "string", json_path = ".status.scope"),
    printcolumn(name = "Role", type_ = "string", json_path = ".status.role"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Token ID", type_ = "string", json_path = ".status.tokenId", priority = "1"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = "1"),
    printcolumn(name = "Next Renewal", type_ = "string", json_path = ".status.renewalTime", priority = "1"),
    validation = Rule::new(
        "has(oldSelf.spec.secretName) ? (has(self.spec.secretName) && self.spec.secretName == oldSelf.spec.secretName) : (!has(self.spec.secretName) || self.spec.secretName == self.metadata.name)"
    ).message("spec.secretName is immutable once set (it defaults to metadata.name)").reason(Reason::FieldValueInvalid)
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.organization) != has(self.group)").message("exactly one of spec.organization or spec.group must be set").reason(Reason::FieldValueInvalid),
    validation = Rule::new("!(has(self.expiresAt) && has(self.lifetime))").message("spec.expiresAt and spec.lifetime are mutually exclusive: set one of them").reason(Reason::FieldValueForbidden),
    validation = Rule::new("has(self.organization) == has(oldSelf.organization) && (!has(self.organization) || self.organization == oldSelf.organization)").message("spec.organization is immutable: create a new AccessToken for another scope").reason(Reason::FieldValueInvalid),
    validation = Rule::new("has(self.group) == has(oldSelf.group) && (!has(self.group) || self.group == oldSelf.group)").message("spec.group is immutable: create a new AccessToken for another scope").reason(Reason::FieldValueInvalid),
    validation = Rule::new(renew_before_within_lifetime()).message("spec.rotation.renewBefore needs spec.lifetime, and must be shorter than it").reason(Reason::FieldValueInvalid)
)]
pub struct AccessTokenSpec {
    /// Organization this token is scoped to. Exactly one of organization or group; immutable. The token's namespace must be listed in the Organization's spec.tokenNamespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub organization: Option<String>,
    /// Group this token is scoped to. Exactly one of organization or group; immutable. The token's namespace must be listed in the Group's spec.tokenNamespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub group: Option<String>,
    /// Free text describing what the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub display_name: Option<String>,
    /// When the token stops working (RFC 3339, e.g. 2027-06-30T00:00:00Z). Mutually exclusive with lifetime. With neither, the token expires 90 days after the AccessToken was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// How long the token lives, counted from the AccessToken's creation: a whole number and a unit, m (minutes), h (hours), d (days) or w (weeks), e.g. 90d. Mutually exclusive with expiresAt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]{0,5}[mhdw]$')").message("spec.lifetime must be a whole number followed by m, h, d or w, for example 90d").reason(Reason::FieldValueInvalid))]
    #[schemars(length(max = 7))]
    pub lifetime: Option<String>,
    /// Assign the admin role of the scope (OrganizationAdmin or GroupAdmin) instead of the user role.
    #[serde(default)]
    pub admin: bool,
    /// Disable the token, reversibly: the Secret is kept and setting this back to false re-enables the same token.
    #[serde(default)]
    pub revoked: bool,
    /// Name of the Secret that receives the token. Defaults to metadata.name; immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("spec.secretName must be a valid Secret name: lowercase letters, digits, '-' and '.'").reason(Reason::FieldValueInvalid))]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Labels and annotations copied onto the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// Any change of this value reactivates a token suspended for being idle (phase Suspended, reason TokenIdle) and restarts its idle clock: the one spec change a GitOps repository carries to bring an idle token back, e.g. the date (2026-11-28). The operator never writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub reactivate: Option<String>,
    /// Rotation: a new token into the same Secret, the previous one kept working for an overlap. Manual (rotation.trigger) or automatic (rotation.renewBefore, with lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
}

fn renew_before_within_lifetime() -> String {
    format!(
        "!has(self.rotation) || !has(self.rotation.renewBefore) || (has(self.lifetime) && {} < {})",
        super::cel_seconds("rotation.renewBefore"),
        super::cel_seconds("lifetime")
    )
}

/// How the token is rotated. A rotation mints a new token into the same Secret and keeps the TechnicalUser; the previous token keeps working until rotation.overlap has passed. Nothing else about the token changes (with lifetime, the new token's life counts from the rotation).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Any change of this value rotates the token now (for example a date, 2026-11-28-1): the GitOps way to ask for a rotation. The first value seen at issue rotates nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub trigger: Option<String>,
    /// Rotate automatically when less than this is left before the expiry, e.g. 7d. Needs spec.lifetime, and must be shorter than it. status.renewalTime shows when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(super::DURATION_RULE).message("spec.rotation.renewBefore must be a whole number followed by m, h, d or w, for example 7d").reason(Reason::FieldValueInvalid))]
    #[schemars(length(max = 7))]
    pub renew_before: Option<String>,
    /// How long the previous token keeps working after a rotation, e.g. 1h (the default). It is never accepted after that, even if the operator is down (the verifier checks on its own clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(super::DURATION_RULE).message("spec.rotation.overlap must be a whole number followed by m, h, d or w, for example 1h").reason(Reason::FieldValueInvalid))]
    #[schemars(length(max = 7))]
    pub overlap: Option<String>,
    /// Workloads in this namespace that read the Secret, restarted the way kubectl rollout restart does it (a pod template annotation) once the Secret holds the new token. The previous token is removed as soon as all of them have rolled out, and at the latest when the overlap ends. A missing or stuck target is reported (condition TargetsRolledOut, Warning Event), never waited on past the overlap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub restart_targets: Vec<RestartTarget>,
}

/// A workload restarted after a rotation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestartTarget {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: RestartKind,
    /// Its name, in the AccessToken's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The kinds of workload a rotation can restart.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

/// Extra metadata for the token's Secret. Validated by the API server: a key or value the
/// Secret would refuse must be refused here, or the Secret write fails after the token's
/// credential was staged.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Labels added to the Secret (the operator's own labels take precedence): at most 32, each a valid Kubernetes label key and value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "template_labels_schema")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Secret: at most 32, each key a valid Kubernetes annotation key, each value at most 4096 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "template_annotations_schema")]
    pub annotations: BTreeMap<String, String>,
}

/// Most labels `spec.secretTemplate` may add.
pub const MAX_TEMPLATE_LABELS: u32 = 32;
/// Most annotations `spec.secretTemplate` may add.
pub const MAX_TEMPLATE_ANNOTATIONS: u32 = 32;
/// Longest annotation value: with `MAX_TEMPLATE_ANNOTATIONS` this bounds the template's
/// annotations (keys included) to about 140 KiB, under the API server's 256 KiB limit.
pub const MAX_ANNOTATION_VALUE: u32 = 4096;

// Kubernetes' qualified-name rule (label and annotation keys), in RE2 without escapes: an
// optional DNS-subdomain prefix and '/', then a name of 1 to 63 characters. The second
// pattern bounds the prefix to 253 characters, which the first cannot express. Keys have no
// schema of their own, so these are checked with `all` over the map; `maxProperties` bounds
// the iteration and keeps the rule inside the API server's CEL cost budget.
const QUALIFIED_NAME: &str = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
const PREFIX_LENGTH: &str = "^([^/]{1,253}/)?[^/]{1,63}$";
// A label value: empty, or up to 63 characters beginning and ending with a letter or digit.
const LABEL_VALUE: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$";

fn key_rule(what: &str) -> serde_json::Value {
    serde_json::json!({
        "rule": format!("self.all(k, k.matches('{QUALIFIED_NAME}') && k.matches('{PREFIX_LENGTH}'))"),
        "message": format!("every {what} key must be a valid Kubernetes {what} key: an optional DNS subdomain prefix (lowercase, at most 253 characters) and '/', then a name of 1 to 63 letters, digits, '-', '_' or '.' that begins and ends with a letter or digit, e.g. example.com/team"),
        "reason": "FieldValueInvalid",
    })
}

fn template_labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_TEMPLATE_LABELS,
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "x-kubernetes-validations": [{
                "rule": format!("self.matches('{LABEL_VALUE}')"),
                "message": "a label value must be empty or at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit",
                "reason": "FieldValueInvalid",
            }],
        },
        "x-kubernetes-validations": [key_rule("label")],
    })
}

fn template_annotations_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_TEMPLATE_ANNOTATIONS,
        "additionalProperties": {"type": "string", "maxLength": MAX_ANNOTATION_VALUE},
        "x-kubernetes-validations": [key_rule("annotation")],
    })
}

/// The lifecycle phase of an AccessToken.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Not issued yet (or waiting for its scope to become valid).
    Pending,
    /// Issued and usable.
    Active,
    /// Disabled by spec.revoked; re-enabled by setting it back to false.
    Revoked,
    /// Stopped, reversibly, by its scope's kill switch (reason ScopeSuspended) or for being unused too long (reason TokenIdle).
    Suspended,
    /// Past its expiry.
    Expired,
    /// Cannot be issued until something changes (see the Ready condition's reason).
    Failed,
}

/// Observed state of an AccessToken. Never contains the token value.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessTokenStatus {
    /// Lifecycle phase: Pending, Active, Revoked, Suspended, Expired or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The public part of the token (the id in atk_<id>_...), safe to show; leads from a leaked token to this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The scope, as organization/<name> or group/<name>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The organization whose admins manage the token: its own, or its group's (for an issued token, the one it was issued for). Written by the operator alone; the admission policy lets that organization's admins change and delete a group token by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The uid of the Organization or Group the token was issued for (recorded in its TechnicalUser too): one deleted and created again under the same name is another scope, and the token stays disabled there (reason ScopeChanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_uid: Option<String>,
    /// Name of the TechnicalUser backing the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub technical_user: Option<String>,
    /// Name of the Secret holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The username the verifier reports: accesstoken:<namespace>:<name>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The role the token holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The effective expiry (from expiresAt, or creation time plus lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the verifier last accepted the token (coarse, about per minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Time>,
    /// The token id for which the TokenExpiringSoon Warning Event was published: one Event per issued token, not one per reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_warned_token_id: Option<String>,
    /// When the token was last rotated; with spec.lifetime, the current token's life counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<Time>,
    /// The token replaced by the last rotation, while it still works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_token_id: Option<String>,
    /// When the previous token stops working (the end of the overlap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<Time>,
    /// When the next automatic rotation is due (spec.rotation.renewBefore before the expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// The spec.reactivate value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactivated_for: Option<String>,
    /// When spec.reactivate last changed: the idle clock counts from the latest of this, the last use and the issue or rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactivated_at: Option<Time>,
    /// The token id the restart targets were last restarted for (after the rotation that issued it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_for: Option<String>,
    /// The spec.rotation.trigger value last acted on; a different value in the spec rotates the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_trigger: Option<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready always; Stalled only while true; Reconciling only while the first reconcile runs
    /// (kstatus); ExpiringSoon once issued; TargetsRolledOut after a rotation with restart targets.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
