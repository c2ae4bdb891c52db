//! Writes the shard ClusterRoles from a TechnicalUser watch, on the operator's leader.

use std::future::Future;

use futures::{FutureExt, StreamExt, future};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use tracing::{debug, error, info, warn};

use super::{ImpersonationArgs, Shard, cluster_role, of_user, plan, shard_name};
use crate::api::{
    TechnicalUser,
    wellknown::{MANAGED_BY_LABEL, OPERATOR_MANAGER as MANAGER},
};

/// Field manager of the shard roles (one owner per field, apart from the controllers').
const FIELD_MANAGER: &str = "access-token-operator-impersonation";
/// Every shard is re-applied this often even if nothing changed: a shard someone edited
/// or deleted comes back.
const REAPPLY_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs `work` (the controllers) with the impersonation sync beside it when `args` asks for
/// shards; ends when `work` does. The operator's one hook: `alongside(work, ...)`.
pub async fn alongside<W>(work: W, client: Client, args: &ImpersonationArgs) -> crate::Result<()>
where
    W: Future<Output = crate::Result<()>>,
{
    if args.impersonation_role_shards == 0 {
        return work.await;
    }
    let sync = run(client, args.impersonation_role_shards);
    match future::select(std::pin::pin!(work), std::pin::pin!(sync)).await {
        future::Either::Left((result, _)) => result,
        // The watch retries with backoff for ever; ending means the stream closed.
        future::Either::Right(((), work)) => work.await,
    }
}

/// Keeps the `shards` ClusterRoles equal to the live TechnicalUsers, until the watch ends.
/// Writes only after the first full list (a partial view would take rights from tokens not
/// seen yet) and only the shards whose content changed.
pub async fn run(client: Client, shards: u16) {
    let users: Api<TechnicalUser> = Api::all(client.clone());
    let roles: Api<ClusterRole> = Api::all(client);
    let (reader, writer) = reflector::store();
    let selector = format!("{MANAGED_BY_LABEL}={MANAGER}");
    let events = reflector::reflector(
        writer,
        watcher(users, watcher::Config::default().labels(&selector)).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    let mut reapply = tokio::time::interval(REAPPLY_EVERY);
    let mut synced = false;
    let mut written: Vec<Option<Shard>> = vec![None; usize::from(shards)];
    loop {
        let forced = tokio::select! {
            event = events.next() => {
                if !handle(event, &mut synced) {
                    return;
                }
                // Coalesce a burst (a restart's list, many tokens at once) into one pass.
                while let Some(event) = events.next().now_or_never() {
                    if !handle(event, &mut synced) {
                        return;
                    }
                }
                false
            }
            _ = reapply.tick() => true,
        };
        if !synced {
            continue;
        }
        let live = reader
            .state()
            .iter()
            .filter_map(|u| of_user(u))
            .collect::<Vec<_>>();
        let planned = plan(live, shards, super::SHARD_BUDGET_BYTES);
        if planned.left_out > 0 {
            error!(
                left_out = planned.left_out,
                shards,
                "impersonation shards are full: the proxy cannot act for some tokens; raise --impersonation-role-shards"
            );
        }
        for (index, shard) in planned.shards.into_iter().enumerate() {
            let slot = &mut written[index];
            if !forced && slot.as_ref() == Some(&shard) {
                continue;
            }
            let index = u16::try_from(index).expect("at most MAX_SHARDS shards");
            if apply(&roles, index, &shard).await {
                *slot = Some(shard);
            } else {
                *slot = None; // retried on the next event or tick
            }
        }
    }
}

/// Notes one watch event; false when the stream has ended.
fn handle(
    event: Option<Result<watcher::Event<TechnicalUser>, watcher::Error>>,
    synced: &mut bool,
) -> bool {
    match event {
        None => return false,
        Some(Ok(watcher::Event::InitDone)) => {
            if !*synced {
                info!("TechnicalUsers listed: writing the proxy's impersonation roles");
            }
            *synced = true;
        }
        Some(Ok(_)) => {}
        Some(Err(error)) => {
            warn!(%error, "TechnicalUser watch error (impersonation roles); retrying with backoff");
        }
    }
    true
}

async fn apply(roles: &Api<ClusterRole>, index: u16, shard: &Shard) -> bool {
    let name = shard_name(index);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match roles
        .patch(&name, &params, &Patch::Apply(cluster_role(index, shard)))
        .await
    {
        Ok(_) => {
            debug!(
                role = %name,
                users = shard.users.len(),
                groups = shard.groups.len(),
                "impersonation role written"
            );
            true
        }
        Err(error) => {
            warn!(%error, role = %name, "could not write an impersonation role");
            false
        }
    }
}
