//! Leader election on a `coordination.k8s.io/v1` Lease, so that several operator replicas can
//! run and only one reconciles at a time. Losing the lease ends the process: nothing may
//! reconcile without it, and a restart rejoins the election cleanly.
//!
//! Safety rests on two clocks that never need to agree, only to run at about the same rate:
//! - a standby takes the Lease over only after it has seen the same Lease version for a whole
//!   lease duration on its own monotonic clock (the Lease's wall-clock times are informative);
//! - the leader stops reconciling, and exits, once it has gone `renew deadline` (shorter than
//!   the lease duration) on its own monotonic clock without a renewal that the API server
//!   accepted. A renewal counts from the moment its attempt started, which is no later than
//!   the moment the API server accepted the write, so the leader always stops at least
//!   `lease duration - renew deadline` before any standby can take over.
//!
//! Writes are JSON merge patches carrying the read `resourceVersion`, so two replicas racing
//! for the same Lease cannot both win (the API server answers the loser 409 Conflict).

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::{Error, Result};

/// Where the Lease lives, who is asking, and the timing of the election.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Seconds a leader holds the Lease without renewing it; a standby takes over after this.
    pub lease_duration_seconds: u64,
    /// Seconds the leader keeps reconciling without a successful renewal; then it exits.
    /// Must be shorter than the lease duration.
    pub renew_deadline_seconds: u64,
}

impl LeaderElection {
    /// Refuses timings that would let a standby take over while the leader still reconciles.
    pub fn validate(&self) -> Result<()> {
        if self.renew_deadline_seconds == 0 {
            return Err(Error::Config(
                "--renew-deadline-seconds must be at least 1".into(),
            ));
        }
        if self.renew_deadline_seconds >= self.lease_duration_seconds {
            return Err(Error::Config(format!(
                "--renew-deadline-seconds ({}) must be shorter than --lease-duration-seconds ({}): \
                 the leader must stop before a standby may take over",
                self.renew_deadline_seconds, self.lease_duration_seconds
            )));
        }
        if i32::try_from(self.lease_duration_seconds).is_err() {
            return Err(Error::Config(
                "--lease-duration-seconds is too large".into(),
            ));
        }
        Ok(())
    }

    fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_seconds)
    }

    fn renew_deadline(&self) -> Duration {
        Duration::from_secs(self.renew_deadline_seconds)
    }

    /// How often the leader renews and a standby looks: several tries fit in the deadline.
    fn retry_period(&self) -> Duration {
        (self.renew_deadline() / 4).clamp(Duration::from_millis(200), Duration::from_secs(2))
    }
}

/// Runs `work` once this replica holds the Lease, renewing it meanwhile. Fails (so that the
/// process exits) if the Lease is taken by someone else or cannot be renewed within the renew
/// deadline; `work` is dropped first, so nothing reconciles after that. Returns early if
/// `shutdown` completes while still waiting. When `work` ends, the Lease is released for the
/// next replica.
pub async fn run_as_leader<F>(
    client: Client,
    election: LeaderElection,
    work: F,
    shutdown: impl Future<Output = ()>,
) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    election.validate()?;
    let mut lock = LeaseLock::new(client, &election);
    info!(lease = %election.lease_name, namespace = %election.namespace, identity = %election.identity, "waiting for leadership");
    let acquire = async {
        loop {
            let started = Instant::now();
            match lock.try_acquire_or_renew().await {
                Ok(Attempt::Held) => return started,
                Ok(Attempt::HeldByOther(holder)) => {
                    debug!(%holder, "the lease is held by another replica");
                }
                Err(error) => warn!(%error, "could not read or take the lease; retrying"),
            }
            tokio::time::sleep(election.retry_period()).await;
        }
    };
    let renewed = tokio::select! {
        started = acquire => started,
        () = shutdown => return Ok(()),
    };
    info!(identity = %election.identity, "acquired leadership");
    let outcome = tokio::select! {
        biased;
        error = keep(&mut lock, &election, renewed) => {
            error!(%error, "stopping reconciliation and exiting so that only the leader reconciles");
            return Err(error);
        }
        result = work => result,
    };
    // `work` ended on its own (shutdown or failure): hand the Lease on at once.
    match tokio::time::timeout(election.retry_period() * 2, lock.release()).await {
        Ok(Ok(())) => info!("released the lease"),
        Ok(Err(error)) => warn!(%error, "could not release the lease; it expires on its own"),
        Err(_) => warn!("releasing the lease timed out; it expires on its own"),
    }
    outcome
}

/// Renews the Lease until that fails: returns why this replica must stop.
async fn keep(lock: &mut LeaseLock, election: &LeaderElection, mut renewed: Instant) -> Error {
    loop {
        let deadline = renewed + election.renew_deadline();
        tokio::time::sleep_until((Instant::now() + election.retry_period()).min(deadline)).await;
        let started = Instant::now();
        if started >= deadline {
            return deadline_passed(election);
        }
        // A renewal that hangs (a partition that drops packets) is cut off at the deadline.
        match tokio::time::timeout_at(deadline, lock.try_acquire_or_renew()).await {
            Err(_) => return deadline_passed(election),
            Ok(Ok(Attempt::Held)) => renewed = started,
            Ok(Ok(Attempt::HeldByOther(holder))) => {
                return Error::LeaderElection(format!("lost the lease to {holder}"));
            }
            Ok(Err(error)) => {
                warn!(%error, "could not renew the lease; retrying until the renew deadline");
            }
        }
    }
}

fn deadline_passed(election: &LeaderElection) -> Error {
    Error::LeaderElection(format!(
        "no successful lease renewal within the renew deadline ({} s)",
        election.renew_deadline_seconds
    ))
}

/// Result of one look at the Lease.
#[derive(Debug)]
enum Attempt {
    /// This replica holds the Lease, renewed just now.
    Held,
    /// Another replica holds it and it has not expired (by our clock).
    HeldByOther(String),
}

/// One replica's view of the Lease.
struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The Lease version last seen and the local instant it was first seen: a standby's
    /// expiry clock, independent of the holder's wall clock.
    observed: Option<(String, Instant)>,
}

impl LeaseLock {
    fn new(client: Client, election: &LeaderElection) -> Self {
        Self {
            api: Api::namespaced(client, &election.namespace),
            name: election.lease_name.clone(),
            identity: election.identity.clone(),
            duration: election.lease_duration(),
            observed: None,
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Creates the Lease, held by us; a replica that created it first holds it.
    async fn create(&self, now: MicroTime) -> kube::Result<Attempt> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Attempt::HeldByOther("another replica".into()))
            }
            Err(error) => Err(error),
        }
    }

    /// Reads the Lease and renews it if ours, takes it if free or expired, else reports the holder.
    async fn try_acquire_or_renew(&mut self) -> kube::Result<Attempt> {
        let now = MicroTime(Timestamp::now());
        let Some(current) = self.api.get_opt(&self.name).await? else {
            return self.create(now).await;
        };
        let version = current.resource_version().unwrap_or_default();
        if self.observed.as_ref().map(|(seen, _)| seen) != Some(&version) {
            self.observed = Some((version.clone(), Instant::now()));
        }
        let spec = current.spec.unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if let Some(holder) = &holder
            && !ours
        {
            let their_duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(self.duration, Duration::from_secs);
            let unchanged_for = self.observed.as_ref().map(|(_, at)| at.elapsed());
            if unchanged_for.is_none_or(|unchanged| unchanged < their_duration) {
                return Ok(Attempt::HeldByOther(holder.clone()));
            }
            info!(%holder, "the lease expired without renewal; taking it over");
        }
        let (acquire_time, transitions) = if ours {
            (spec.acquire_time, spec.lease_transitions)
        } else {
            (
                Some(now.clone()),
                Some(spec.lease_transitions.unwrap_or(0).saturating_add(1)),
            )
        };
        let patch = json!({
            // A precondition: if anyone wrote the Lease since we read it, this write fails.
            "metadata": {"resourceVersion": version},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.duration_seconds(),
                "acquireTime": acquire_time,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        });
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldByOther(
                holder.unwrap_or_else(|| "another replica".into()),
            )),
            Err(error) => Err(error),
        }
    }

    /// Clears the holder if it is still us, so a standby takes over without waiting.
    async fn release(&self) -> kube::Result<()> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let holder = current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.identity.as_str()) {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "spec": {
                "holderIdentity": null,
                "leaseDurationSeconds": 1,
                "renewTime": MicroTime(Timestamp::now()),
            },
        });
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election(duration: u64, deadline: u64) -> LeaderElection {
        LeaderElection {
            namespace: "ns".into(),
            lease_name: "lease".into(),
            identity: "me".into(),
            lease_duration_seconds: duration,
            renew_deadline_seconds: deadline,
        }
    }

    #[test]
    fn the_renew_deadline_must_be_shorter_than_the_lease() {
        assert!(election(15, 10).validate().is_ok());
        assert!(election(15, 15).validate().is_err());
        assert!(election(15, 20).validate().is_err());
        assert!(election(15, 0).validate().is_err());
    }

    #[test]
    fn several_renewals_fit_in_the_deadline() {
        for (duration, deadline) in [(15, 10), (3, 2), (6, 4), (600, 500)] {
            let election = election(duration, deadline);
            assert!(election.retry_period() * 3 <= election.renew_deadline());
        }
    }
}
