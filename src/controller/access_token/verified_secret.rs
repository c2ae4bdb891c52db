//! The record, kept in the TechnicalUser, of which Secret the operator last verified with
//! argon2id: an annotation binding the Secret's uid and resourceVersion to the credential id
//! its token matched. A reconcile (after a restart too) that finds the same Secret at the
//! same resourceVersion skips argon2: the token cannot have changed without a new
//! resourceVersion, and a Secret deleted and created again has a new uid.
//!
//! Trust: only the operator may write TechnicalUsers (an admission policy in `deploy/`
//! refuses everyone else), while tenants may write the Secret. Any write to the Secret moves
//! its resourceVersion, so a tampered Secret no longer matches the record and is verified
//! with argon2 again. The record holds no secret material: uid, version and the public id.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::api::TechnicalUser;

/// The annotation on a TechnicalUser: `<secret uid>/<secret resourceVersion>/<credential id>`.
pub const VERIFIED_SECRET_ANNOTATION: &str = "iam.accesstoken.io/verified-secret";

/// The record for `secret` holding the token of credential `credential_id`; `None` if the
/// Secret lacks a uid or resourceVersion (not read from the API server).
pub fn record(secret: &Secret, credential_id: &str) -> Option<String> {
    let (uid, version) = (secret.uid()?, secret.resource_version()?);
    Some(format!("{uid}/{version}/{credential_id}"))
}

/// Whether `user` records `secret`, at its current resourceVersion, as verified against
/// credential `credential_id`.
pub fn is_recorded(user: &TechnicalUser, secret: &Secret, credential_id: &str) -> bool {
    let recorded = user.annotations().get(VERIFIED_SECRET_ANNOTATION);
    recorded.is_some() && recorded == record(secret, credential_id).as_ref()
}

/// Sets (or, with `None`, removes) the record on a TechnicalUser about to be applied.
pub fn set(user: &mut TechnicalUser, record: Option<String>) {
    let annotations = user.annotations_mut();
    match record {
        Some(record) => {
            annotations.insert(VERIFIED_SECRET_ANNOTATION.to_string(), record);
        }
        None => {
            annotations.remove(VERIFIED_SECRET_ANNOTATION);
        }
    }
}

#[cfg(test)]
pub(in crate::controller) mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    /// A Secret as read from the API server: a uid and a resourceVersion.
    pub(in crate::controller) fn secret(uid: &str, version: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn user_recording(record: Option<String>) -> TechnicalUser {
        let mut user: TechnicalUser = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "TechnicalUser",
            "metadata": {"name": "t"},
            "spec": {
                "scope": {"kind": "Organization", "name": "o", "organization": "o"},
                "role": "OrganizationUser", "disabled": false,
                "expiresAt": "2030-01-01T00:00:00Z", "credentials": []
            }
        }))
        .unwrap();
        set(&mut user, record);
        user
    }

    #[test]
    fn a_record_matches_only_the_same_secret_at_the_same_version_and_credential() {
        let verified = secret("uid-1", "100");
        let user = user_recording(record(&verified, "abc"));
        assert!(is_recorded(&user, &verified, "abc"));
        // Any write to the Secret (a tenant's edit) moves its resourceVersion.
        assert!(!is_recorded(&user, &secret("uid-1", "101"), "abc"));
        // Deleted and created again under the same name: a new uid.
        assert!(!is_recorded(&user, &secret("uid-2", "100"), "abc"));
        // Another credential (a token minted since) is not covered.
        assert!(!is_recorded(&user, &verified, "xyz"));
    }

    #[test]
    fn no_record_or_an_unread_secret_matches_nothing() {
        let verified = secret("uid-1", "100");
        assert!(!is_recorded(&user_recording(None), &verified, "abc"));
        let unread = Secret::default();
        assert_eq!(record(&unread, "abc"), None);
        let user = user_recording(record(&verified, "abc"));
        assert!(!is_recorded(&user, &unread, "abc"));
        let mut cleared = user.clone();
        set(&mut cleared, None);
        assert!(!is_recorded(&cleared, &verified, "abc"));
    }
}
