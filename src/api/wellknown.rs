//! The names the operator and the verifier write and recognise on objects: finalizer,
//! labels, annotations, the token Secret's type and keys, and the field managers.

/// Field manager and Event reporter name of the operator; also the value of [`MANAGED_BY_LABEL`].
pub const OPERATOR_MANAGER: &str = "access-token-operator";
/// Field manager of the verifier's `status.lastUsed` writes, apart from the operator's fields.
pub const VERIFIER_MANAGER: &str = "access-token-verifier";
/// Label on every child the operator writes; the operator's Secret watch selects on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label naming the AccessToken a child belongs to.
pub const ACCESS_TOKEN_LABEL: &str = "iam.accesstoken.io/access-token";
/// Label holding the uid of the AccessToken a child belongs to: identifies the children
/// after the garbage collector stripped their owner references (`propagationPolicy: Orphan`).
pub const ACCESS_TOKEN_UID_LABEL: &str = "iam.accesstoken.io/access-token-uid";
/// The finalizer earlier builds put on every AccessToken; new tokens get none, and the operator
/// only removes it (their children go through owner references and the sweep).
pub const FINALIZER: &str = "iam.accesstoken.io/cleanup";
/// The type of token Secrets.
pub const SECRET_TYPE: &str = "iam.accesstoken.io/token";
/// Annotation on a token Secret listing the label and annotation keys that came from
/// `spec.secretTemplate`, so that keys removed from the template leave the Secret while keys
/// others added stay.
pub const TEMPLATE_KEYS_ANNOTATION: &str = "iam.accesstoken.io/secret-template-keys";

/// Keys of a token Secret.
pub mod keys {
    /// The token itself: the only place its value is ever written.
    pub const TOKEN: &str = "token";
    /// The public token id.
    pub const TOKEN_ID: &str = "token-id";
    /// The username the verifier reports.
    pub const USERNAME: &str = "username";
    /// The organization (also for group tokens: the group's organization).
    pub const ORGANIZATION: &str = "organization";
    /// The group (group tokens only).
    pub const GROUP: &str = "group";
    /// The role name.
    pub const ROLE: &str = "role";
    /// The effective expiry, RFC 3339.
    pub const EXPIRES_AT: &str = "expires-at";
    /// A kubeconfig holding the token, when the operator knows where clients connect.
    pub const KUBECONFIG: &str = "kubeconfig";
}
