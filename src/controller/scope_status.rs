//! Status of Organizations and Groups: a Ready condition and token counts by phase.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client, Resource, ResourceExt, runtime::controller::Action};
use tracing::warn;

use super::{
    build::{Readiness, conditions},
    phase_index::{PhaseIndex, ScopeField},
};
use crate::{
    Result,
    api::{Group, Organization, Reason, ScopeStatus, TokenCounts},
    domain::policy,
    error::{AtStep, Step},
};

/// What the scope reconcilers need.
pub struct Context {
    /// Client for the API server.
    pub client: Client,
    /// Consecutive failures per Organization or Group, for the shared backoff.
    pub failures: super::Failures,
    /// Phases of the tokens, from this controller's own AccessToken watch.
    pub tokens: Arc<PhaseIndex>,
}

/// How long a status reconcile waits for the token index's first list.
const INDEX_NOT_READY: Duration = Duration::from_secs(1);

/// Reconciles an Organization's status.
pub async fn reconcile_organization(org: Arc<Organization>, ctx: Arc<Context>) -> Result<Action> {
    let Some(counts) = ctx.tokens.counts(ScopeField::Organization, &org.name_any()) else {
        return Ok(Action::requeue(INDEX_NOT_READY));
    };
    let status = scope_status(
        org.status.as_ref(),
        org.meta().generation,
        true,
        Reason::ScopeValid,
        "Organization is ready for tokens".into(),
        counts,
    );
    let action = write_status(
        &Api::<Organization>::all(ctx.client.clone()),
        &*org,
        org.status.as_ref(),
        status,
    )
    .await?;
    ctx.failures.succeeded(&*org);
    Ok(action)
}

/// Reconciles a Group's status; not Ready while its organization is missing.
pub async fn reconcile_group(group: Arc<Group>, ctx: Arc<Context>) -> Result<Action> {
    let Some(counts) = ctx.tokens.counts(ScopeField::Group, &group.name_any()) else {
        return Ok(Action::requeue(INDEX_NOT_READY));
    };
    let org = &group.spec.organization;
    let organization = Api::<Organization>::all(ctx.client.clone())
        .get_opt(org)
        .await
        .at(Step::ReadScope)?
        .filter(|o| o.meta().deletion_timestamp.is_none());
    let org_exists = organization.is_some();
    let (reason, message) = if let Some(organization) = organization {
        let looser = policy::looser_fields(
            organization.spec.token_policy.as_ref(),
            group.spec.token_policy.as_ref(),
        );
        (Reason::ScopeValid, group_ready_message(org, &looser))
    } else {
        (
            Reason::OrganizationMissing,
            format!(
                "Organization {org:?} does not exist; tokens scoped to this group are not issued"
            ),
        )
    };
    let status = scope_status(
        group.status.as_ref(),
        group.meta().generation,
        org_exists,
        reason,
        message,
        counts,
    );
    let action = write_status(
        &Api::<Group>::all(ctx.client.clone()),
        &*group,
        group.status.as_ref(),
        status,
    )
    .await?;
    ctx.failures.succeeded(&*group);
    Ok(action)
}

/// The Ready message of a usable Group, naming the policy fields that have no effect.
fn group_ready_message(org: &str, looser: &[&str]) -> String {
    if looser.is_empty() {
        return "Group is ready for tokens".to_string();
    }
    let fields = looser
        .iter()
        .map(|f| format!("tokenPolicy.{f}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "Group is ready for tokens; {fields} is looser than Organization {org:?}'s and has no effect (a group can only tighten its organization's policy)"
    )
}

fn scope_status(
    previous: Option<&ScopeStatus>,
    generation: Option<i64>,
    ready: bool,
    reason: Reason,
    message: String,
    tokens: TokenCounts,
) -> ScopeStatus {
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let readiness = Readiness {
        ready,
        // Not ready means a missing organization: only an outside change fixes it.
        stalled: !ready,
        reason,
        message: &message,
    };
    let conditions = conditions(previous_conditions, readiness, generation, Timestamp::now());
    ScopeStatus {
        observed_generation: generation,
        conditions,
        tokens,
    }
}

async fn write_status<K>(
    api: &Api<K>,
    object: &K,
    previous: Option<&ScopeStatus>,
    status: ScopeStatus,
) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if previous != Some(&status) {
        super::apply_status(api, &object.name_any(), &status).await?;
    }
    Ok(Action::await_change())
}

/// Retries a failed scope status write with the shared exponential backoff.
pub fn error_policy<K>(object: Arc<K>, error: &crate::Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let (failures, wait) = ctx.failures.failed(&*object);
    warn!(kind = %K::kind(&()), name = %object.meta().name.clone().unwrap_or_default(), %error, failures, "status update failed");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::super::phase_index::count;
    use crate::api::{Phase, TokenCounts};

    #[test]
    fn counts_tokens_by_phase_and_no_status_as_pending() {
        let mut counts = TokenCounts::default();
        for phase in [
            None,
            Some(Phase::Active),
            Some(Phase::Active),
            Some(Phase::Revoked),
            Some(Phase::Expired),
            Some(Phase::Failed),
            Some(Phase::Suspended),
        ] {
            count(&mut counts, phase);
        }
        assert_eq!(
            counts,
            TokenCounts {
                pending: 1,
                active: 2,
                revoked: 1,
                expired: 1,
                failed: 1,
                suspended: 1,
            }
        );
    }
}
