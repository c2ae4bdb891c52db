//! The status an AccessToken gets when its first reconcile cannot finish: `Reconciling=True`
//! and `Ready=False` (reason `FirstReconcile`). A first reconcile that finishes writes the
//! token's real status as its first (one write fewer per token, issue 22); one that fails
//! (an API error, a refused write) would otherwise leave the token with no status while it
//! backs off, and kstatus (Flux, `kubectl wait`-style tools) reads an object with no
//! conditions as already current. The window without a status is the same either way: it
//! lasts until the first reconcile ends. The next status write leaves `Reconciling` out and so
//! removes it (server-side apply by the same field manager).

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};

use crate::api::{
    AccessToken, AccessTokenStatus, ConditionType, Reason, conditions, wellknown::OPERATOR_MANAGER,
};

const MESSAGE: &str = "The operator is issuing the token";

/// Whether `token` has never had a status written (and is not being deleted).
pub fn needed(token: &AccessToken) -> bool {
    token.status.is_none() && token.meta().deletion_timestamp.is_none()
}

/// The first status: conditions only, no phase (the reconcile decides it).
pub fn status(token: &AccessToken, now: Timestamp) -> AccessTokenStatus {
    let generation = token.meta().generation;
    let condition = |type_, value| {
        conditions::condition(
            &[],
            type_,
            value,
            Reason::FirstReconcile,
            MESSAGE,
            generation,
            now,
        )
    };
    AccessTokenStatus {
        observed_generation: generation,
        conditions: vec![
            condition(ConditionType::Ready, false),
            condition(ConditionType::Reconciling, true),
        ],
        ..AccessTokenStatus::default()
    }
}

/// Writes the first status of `token` after its first reconcile failed, at `now`. The apply
/// carries the token's resourceVersion: if the failed reconcile wrote a status of its own, or
/// read `token` from a watch that lags, the apply gets a conflict and writes nothing over it.
/// Best effort: the reconcile's own error is what the caller reports and retries.
pub async fn after_failure(api: &Api<AccessToken>, token: &AccessToken, now: Timestamp) {
    let params = PatchParams::apply(OPERATOR_MANAGER).force();
    let written = api
        .patch_status(&token.name_any(), &params, &Patch::Apply(patch(token, now)))
        .await;
    if let Err(error) = written {
        tracing::debug!(name = %token.name_any(), %error, "first status not written");
    }
}

/// The apply body: the first status, on the condition that `token` is still the stored one.
fn patch(token: &AccessToken, now: Timestamp) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": AccessToken::api_version(&()),
        "kind": AccessToken::kind(&()),
        "metadata": {"resourceVersion": token.resource_version()},
        "status": status(token, now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_gets_reconciling_true_and_no_phase() {
        let mut token: AccessToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": "ci", "namespace": "acme", "generation": 1},
            "spec": {"organization": "acme"},
        }))
        .expect("valid");
        assert!(needed(&token));
        let status = status(&token, Timestamp::UNIX_EPOCH);
        assert_eq!(status.phase, None);
        assert_eq!(status.observed_generation, Some(1));
        let reconciling = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Reconciling")
            .expect("Reconciling");
        assert_eq!(
            (reconciling.status.as_str(), reconciling.reason.as_str()),
            ("True", "FirstReconcile")
        );
        token.status = Some(status);
        assert!(!needed(&token), "written once");
    }

    #[test]
    fn the_first_status_is_written_only_over_the_version_it_was_decided_on() {
        let token: AccessToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": "ci", "namespace": "acme", "resourceVersion": "41"},
            "spec": {"organization": "acme"},
        }))
        .expect("valid");
        let body = patch(&token, Timestamp::UNIX_EPOCH);
        // kube-apiserver refuses an apply whose resourceVersion is not the stored one (409).
        assert_eq!(body["metadata"]["resourceVersion"], "41");
        assert_eq!(body["status"]["conditions"][1]["reason"], "FirstReconcile");
    }
}
