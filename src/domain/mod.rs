//! What a token means, shared by the controller and the verifier: the scope a token
//! resolves to, the username it authenticates as, its effective expiry and the policy
//! that bounds it. Pure (no API calls), so both sides agree by construction.

pub mod expiry;
pub mod policy;
pub mod scope;

/// The username a token authenticates as.
pub fn username(namespace: &str, name: &str) -> String {
    format!("accesstoken:{namespace}:{name}")
}
