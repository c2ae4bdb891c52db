//! Leader election on a `coordination.k8s.io` Lease, so that several operator replicas can
//! run and only one reconciles at a time. Losing the lease ends the process: nothing may
//! reconcile without it, and a restart rejoins the election cleanly.

use std::future::Future;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

use crate::{Error, Result};

/// Where the Lease lives and who is asking.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Seconds a leader holds the Lease without renewing it.
    pub lease_duration_seconds: u64,
}

/// Runs `work` once this replica holds the Lease; fails if the Lease is lost meanwhile.
/// Returns early if `shutdown` completes while still waiting. Dropping the election (on
/// return) releases the Lease for the next replica.
pub async fn run_as_leader<F>(
    client: Client,
    election: LeaderElection,
    work: F,
    shutdown: impl Future<Output = ()>,
) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    let duration = election.lease_duration_seconds.max(2);
    let manager = LeaseManagerBuilder::new(client, &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .map_err(|e| Error::LeaderElection(e.to_string()))?;
    let (mut leader, _task) = manager.watch().await;
    info!(lease = %election.lease_name, namespace = %election.namespace, identity = %election.identity, "waiting for leadership");
    let acquired = async {
        while !*leader.borrow_and_update() {
            leader
                .changed()
                .await
                .map_err(|_| Error::LeaderElection("the lease manager stopped".into()))?;
        }
        Ok::<_, Error>(())
    };
    tokio::select! {
        result = acquired => result?,
        () = shutdown => return Ok(()),
    }
    info!(identity = %election.identity, "acquired leadership");
    let lost = async {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                return;
            }
        }
    };
    tokio::select! {
        result = work => result,
        () = lost => {
            warn!("lost leadership; exiting so that only the leader reconciles");
            Err(Error::LeaderElection("lost the lease".into()))
        }
    }
}
