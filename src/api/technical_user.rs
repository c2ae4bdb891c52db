//! `TechnicalUser`: the system account behind one AccessToken. Written only by the operator.
// Several `printcolumn(type_ = "string", ...)` attributes are distinct columns, not duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a TechnicalUser.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "iam.accesstoken.io",
    version = "v1alpha1",
    kind = "TechnicalUser",
    doc = "The account that holds one AccessToken's role and its hashed credentials. Created, updated and deleted by the operator only: same name and namespace as its AccessToken, which controls it.",
    plural = "technicalusers",
    shortname = "tu",
    category = "accesstokens",
    namespaced,
    printcolumn(name = "Scope", type_ = "string", json_path = ".spec.scope.name"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Disabled", type_ = "boolean", json_path = ".spec.disabled"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".spec.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TechnicalUserSpec {
    /// The organization or group whose role this user holds.
    pub scope: Scope,
    /// The role held in that scope.
    pub role: Role,
    /// True while the token is revoked, or its scope is no longer valid: the verifier denies it.
    pub disabled: bool,
    /// The token's effective expiry; the verifier denies it from then on, on its own clock.
    pub expires_at: Time,
    /// Hashed credentials of the token; a list so that a rotated token may overlap its successor. At most 4 (previous, current and one staged, plus one spare): the operator never accumulates more.
    #[serde(default)]
    #[schemars(length(max = 4))]
    pub credentials: Vec<Credential>,
}

/// The scope a technical user acts in.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    /// `Organization` or `Group`.
    pub kind: ScopeKind,
    /// Name of the Organization or Group.
    pub name: String,
    /// The organization: the scope itself for organization scope, the group's organization for group scope.
    pub organization: String,
    /// The uid of the Organization or Group the token was issued for. One deleted and created again under the same name has another uid, and does not inherit the token (a user written before uids were recorded is compared by name until the operator rewrites it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl Scope {
    /// Whether `self`, a scope resolved now, is the scope a token was `issued` for: same kind,
    /// name and organization, and the same object (uid) where the issued scope recorded one.
    pub fn is_issued_scope(&self, issued: &Scope) -> bool {
        self.kind == issued.kind
            && self.name == issued.name
            && self.organization == issued.organization
            && issued
                .uid
                .as_ref()
                .is_none_or(|uid| self.uid.as_ref() == Some(uid))
    }
}

/// Which kind of object a scope names.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    /// An `Organization`.
    Organization,
    /// A `Group`.
    Group,
}

/// A role: admin or user, at organization or group level.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Admin of an organization.
    OrganizationAdmin,
    /// User of an organization.
    OrganizationUser,
    /// Admin of a group.
    GroupAdmin,
    /// User of a group.
    GroupUser,
}

impl Role {
    /// The role for a scope kind and the `admin` flag.
    pub fn new(kind: ScopeKind, admin: bool) -> Self {
        match (kind, admin) {
            (ScopeKind::Organization, true) => Self::OrganizationAdmin,
            (ScopeKind::Organization, false) => Self::OrganizationUser,
            (ScopeKind::Group, true) => Self::GroupAdmin,
            (ScopeKind::Group, false) => Self::GroupUser,
        }
    }

    /// The role's name as written in status and in the Secret.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrganizationAdmin => "OrganizationAdmin",
            Self::OrganizationUser => "OrganizationUser",
            Self::GroupAdmin => "GroupAdmin",
            Self::GroupUser => "GroupUser",
        }
    }

    /// Whether this is an admin role.
    pub fn is_admin(self) -> bool {
        matches!(self, Self::OrganizationAdmin | Self::GroupAdmin)
    }
}

/// One hashed credential. Never holds the token itself.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// The token's public id (`status.tokenId` of the AccessToken).
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// argon2id PHC string of the token.
    #[schemars(length(min = 1, max = 512))]
    pub hash: String,
    /// The credential is not accepted after this time.
    pub not_after: Time,
    /// Set when a rotation replaced this credential: it is the previous token, accepted only until notAfter (the end of the overlap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Time>,
}
