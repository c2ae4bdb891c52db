//! `access-token-operator run`: the controllers (under leader election if asked), the
//! verifier when it has an address, and the probe server, in one process.

use super::{
    cli::RunArgs,
    hash_pool::Hasher,
    leader,
    shutdown::shutdown_signal,
    verifier::{ProcessMetrics, listen_config, serve_probes, start_verifier},
};
use crate::{
    controller::{self, access_token::kubeconfig::Endpoint},
    observability::logging,
    token::HashParams,
    verifier::server,
};

pub(super) fn run(args: RunArgs) -> crate::Result<()> {
    logging::init(args.log_format);
    let hasher = hasher(&args)?;
    let listen = listen_config(&args.listen)?;
    let election = leader_election(&args)?;
    if args.group_index_namespace.is_some() {
        tracing::warn!(
            "--group-index-namespace is ignored: the group-token admission policy reads the Groups themselves"
        );
    }
    let config = controller::Config {
        namespace: args.namespace,
        instance: args.instance,
        reconcile_concurrency: args.reconcile_concurrency,
        kubeconfig: Endpoint::from_args(&args.kubeconfig)?,
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = kube::Client::try_default().await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "access-token-operator starting"
        );
        let metrics = ProcessMetrics::new();
        let verifier = match &listen {
            Some(_) => Some(start_verifier(
                client.clone(),
                &args.listen.verify,
                &metrics,
            )?),
            None => None,
        };
        let probes = serve_probes(&args.probe, &metrics.all, verifier.clone()).await?;
        let verifier = async {
            match (listen, verifier) {
                (Some(listen), Some(verifier)) => {
                    Ok(server::serve(verifier, listen, shutdown_signal()).await?)
                }
                _ => Ok(()),
            }
        };
        let controllers = async {
            let work = controller::run(client.clone(), config, hasher, metrics.all.clone());
            let work =
                crate::impersonation::sync::alongside(work, client.clone(), &args.impersonation);
            match election {
                Some(election) => {
                    leader::run_as_leader(client.clone(), election, work, shutdown_signal()).await
                }
                None => work.await,
            }
        };
        // Either half failing ends the process; on a clean shutdown both finish draining.
        tokio::pin!(controllers, verifier);
        let served = tokio::select! {
            result = &mut controllers => { result?; verifier.await }
            result = &mut verifier => { result?; controllers.await }
        };
        probes.abort();
        served
    })
}

/// The argon2id pool of `--hash-*`.
fn hasher(args: &RunArgs) -> crate::Result<Hasher> {
    let params = HashParams {
        memory_kib: args.hash.hash_memory_kib,
        iterations: args.hash.hash_iterations,
        parallelism: args.hash.hash_parallelism,
    };
    Ok(Hasher::new(params, args.hash.hash_concurrency)?)
}

/// The leader election `--leader-elect` asks for, validated.
fn leader_election(args: &RunArgs) -> crate::Result<Option<leader::LeaderElection>> {
    let election = args.leader_elect.then(|| leader::LeaderElection {
        namespace: args.leader_election_namespace.clone(),
        lease_name: args.leader_election_lease_name.clone(),
        identity: args.instance.clone().unwrap_or_else(random_identity),
        lease_duration_seconds: args.lease_duration_seconds,
        renew_deadline_seconds: args
            .renew_deadline_seconds
            .unwrap_or(args.lease_duration_seconds.saturating_mul(2) / 3),
    });
    if let Some(election) = &election {
        election.validate()?;
    }
    Ok(election)
}

/// A unique identity when no pod name is given: host name plus random digits.
fn random_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}-{:08x}", host.trim(), rand::random::<u32>())
}
