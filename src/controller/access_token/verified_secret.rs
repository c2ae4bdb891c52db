//! The operator's memory of which Secret version it last verified, per token: the Secret's
//! uid and resourceVersion bound to the credential id its token matched. A reconcile that
//! finds the same Secret at the same resourceVersion skips argon2: the token cannot have
//! changed without a new resourceVersion, and a Secret deleted and created again has a new uid.
//!
//! Kept in memory only (issue 22): it was an annotation on the TechnicalUser, one more write
//! per issued token. A restarted operator verifies each Secret once again instead; at the
//! default cost (256 KiB) that is about 0.1 ms of CPU a token. Tenants may write the Secret,
//! and any write moves its resourceVersion, so a tampered Secret never matches a memory.
//!
//! Each entry is a keyed hash (SipHash with this process's random key) of the binding, not
//! the binding itself: about 100 bytes a token instead of three strings, and no object
//! names in memory that need none.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::Mutex,
};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

/// Which Secret version each token's credential was last verified against.
#[derive(Debug, Default)]
pub struct VerifiedSecrets {
    key: RandomState,
    /// Token uid → the keyed hash of `(secret uid, resourceVersion, credential id)`.
    by_token: Mutex<HashMap<String, u64>>,
}

impl VerifiedSecrets {
    /// The binding of `secret`, as read or written, to `credential_id`; `None` if the Secret
    /// lacks a uid or resourceVersion (not read from the API server).
    fn binding(&self, secret: &Secret, credential_id: &str) -> Option<u64> {
        let (uid, version) = (secret.uid()?, secret.resource_version()?);
        Some(self.key.hash_one((uid, version, credential_id)))
    }

    /// Remembers that `secret` holds the token of credential `credential_id` of token
    /// `token_uid` (verified with argon2, or written by the operator itself).
    pub fn remember(&self, token_uid: &str, secret: &Secret, credential_id: &str) {
        let mut by_token = self.by_token.lock().expect("lock");
        match self.binding(secret, credential_id) {
            Some(binding) => by_token.insert(token_uid.to_string(), binding),
            None => by_token.remove(token_uid),
        };
    }

    /// Whether `secret`, at its current resourceVersion, was verified as holding the token of
    /// credential `credential_id` of token `token_uid`.
    pub fn holds(&self, token_uid: &str, secret: &Secret, credential_id: &str) -> bool {
        let binding = self.binding(secret, credential_id);
        let by_token = self.by_token.lock().expect("lock");
        binding.is_some() && by_token.get(token_uid) == binding.as_ref()
    }

    /// Whether this process has settled token `token_uid` with a Secret already.
    pub fn knows(&self, token_uid: &str) -> bool {
        self.by_token.lock().expect("lock").contains_key(token_uid)
    }

    /// Forgets a token (deleted).
    pub fn forget(&self, token_uid: &str) {
        self.by_token.lock().expect("lock").remove(token_uid);
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

    #[test]
    fn a_memory_matches_only_the_same_secret_at_the_same_version_and_credential() {
        let verified = VerifiedSecrets::default();
        verified.remember("token", &secret("uid-1", "100"), "abc");
        assert!(verified.holds("token", &secret("uid-1", "100"), "abc"));
        // Any write to the Secret (a tenant's edit) moves its resourceVersion.
        assert!(!verified.holds("token", &secret("uid-1", "101"), "abc"));
        // Deleted and created again under the same name: a new uid.
        assert!(!verified.holds("token", &secret("uid-2", "100"), "abc"));
        // Another credential (a token minted since) is not covered, nor is another token.
        assert!(!verified.holds("token", &secret("uid-1", "100"), "xyz"));
        assert!(!verified.holds("other", &secret("uid-1", "100"), "abc"));
    }

    #[test]
    fn an_unread_secret_or_a_forgotten_token_matches_nothing() {
        let verified = VerifiedSecrets::default();
        let read = secret("uid-1", "100");
        assert!(!verified.holds("token", &read, "abc"), "nothing remembered");
        verified.remember("token", &read, "abc");
        assert!(!verified.holds("token", &Secret::default(), "abc"));
        // Remembering an unread Secret replaces what was remembered.
        verified.remember("token", &Secret::default(), "abc");
        assert!(!verified.holds("token", &read, "abc"));
        verified.remember("token", &read, "abc");
        assert!(verified.knows("token") && !verified.knows("other"));
        verified.forget("token");
        assert!(!verified.holds("token", &read, "abc"));
        assert!(!verified.knows("token"));
    }
}
