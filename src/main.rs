//! The `access-token-operator` binary: parses flags and starts tasks; the work lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use access_token_operator::{
    controller,
    hasher::Hasher,
    impersonation, kubeconfig, leader,
    metrics::Metrics,
    plugin, probes,
    proxy::{self, Proxy},
    telemetry::{self, LogFormat},
    token::{HashLimits, HashParams},
    verifier::{self, Verifier, server},
};
use clap::{Args, Parser, Subcommand, builder::TypedValueParser as _};

/// Declarative API tokens for a multi-tenant Kubernetes platform.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile AccessTokens into TechnicalUsers and Secrets.
    Run(Box<RunArgs>),
    /// Run only the token verifier (TokenReview webhook), e.g. as its own scaled Deployment.
    Verifier(VerifierArgs),
    /// Run the authenticating proxy in front of kube-apiserver: access tokens work on
    /// clusters whose authentication flags cannot be set (EKS, GKE, AKS).
    Proxy(ProxyArgs),
    /// Print the CustomResourceDefinitions as YAML (what crds/ holds).
    Crd,
    /// The kubectl plugin (`kubectl atk`); a link to this binary named `kubectl-atk` runs it directly.
    Atk(plugin::Cli),
}

/// Flags of the probe and metrics server.
#[derive(Args)]
struct ProbeArgs {
    /// Serve /metrics, /healthz and /readyz over plain HTTP on this address (port 0: any free port).
    #[arg(long, env = "PROBE_BIND", default_value = "0.0.0.0:8080")]
    probe_bind: std::net::SocketAddr,
    /// Seconds the controllers may go without progress (their watches failing throughout,
    /// or one reconcile running) before /healthz fails and the kubelet restarts the process.
    #[arg(long, env = "LIVENESS_STALL_SECONDS", default_value_t = probes::DEFAULT_STALL_LIMIT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    liveness_stall_seconds: u64,
}

/// Flags of the verifier server.
#[derive(Args)]
struct ListenArgs {
    /// Serve the verifier on this address (with `run`: unset means no verifier in this process).
    #[arg(long, env = "VERIFIER_BIND")]
    verifier_bind: Option<std::net::SocketAddr>,
    /// PEM certificate (chain) for the verifier's TLS.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key for the verifier's TLS.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<std::path::PathBuf>,
    /// PEM CA certificate(s): when set, only clients presenting a certificate signed by one
    /// of them are served (kube-apiserver's, from its webhook kubeconfig).
    #[arg(long, env = "CLIENT_CA_FILE", requires = "tls_cert_file")]
    client_ca_file: Option<std::path::PathBuf>,
    /// Serve plain HTTP instead of TLS; refused unless the bind address is loopback.
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_key_file", "client_ca_file"])]
    insecure_http: bool,
    /// Connections the verifier serves at once; more wait to be accepted until one closes.
    #[arg(long, env = "VERIFIER_MAX_CONNECTIONS", default_value_t = server::Limits::default().max_connections,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    verifier_max_connections: usize,
    /// Seconds a client may take to complete the TLS handshake.
    #[arg(long, default_value_t = server::Limits::default().handshake_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    verifier_handshake_timeout_seconds: u64,
    /// Seconds a client may take to send an HTTP/1 request header (also how long an
    /// HTTP/1 keep-alive connection may wait for its next request).
    #[arg(long, default_value_t = server::Limits::default().header_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    verifier_header_timeout_seconds: u64,
    /// Seconds a connection may move no bytes before it is closed.
    #[arg(long, default_value_t = server::Limits::default().idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    verifier_idle_timeout_seconds: u64,
    #[command(flatten)]
    verify: VerifyArgs,
}

/// How the verifier decides (in the verifier and in the proxy).
#[derive(Args)]
struct VerifyArgs {
    /// How many argon2 verifications may run at once (on as many threads of their own).
    #[arg(long, env = "VERIFY_CONCURRENCY", default_value_t = 2)]
    verify_concurrency: usize,
    /// How many argon2 results the verifier caches (0 disables the cache).
    #[arg(long, env = "VERIFY_CACHE_CAPACITY", default_value_t = verifier::Config::default().cache_capacity)]
    verify_cache_capacity: u64,
    /// Seconds a watch of the verifier may keep failing before it stops answering from its
    /// caches: /readyz fails and TokenReviews are answered with an error (could not check).
    #[arg(long, env = "MAX_STALENESS_SECONDS", default_value_t = verifier::Config::default().max_staleness.as_secs())]
    max_staleness_seconds: u64,
    #[command(flatten)]
    verify_cost: VerifyCostArgs,
}

/// Bounds on what a presented token may cost the verifier.
#[derive(Args)]
struct VerifyCostArgs {
    /// Largest argon2id memory cost (KiB) accepted in a stored hash; costlier ones are refused without hashing.
    #[arg(long, env = "VERIFY_MAX_MEMORY_KIB", default_value_t = HashLimits::default().memory_kib)]
    verify_max_memory_kib: u32,
    /// Largest argon2id pass count accepted in a stored hash.
    #[arg(long, env = "VERIFY_MAX_ITERATIONS", default_value_t = HashLimits::default().iterations)]
    verify_max_iterations: u32,
    /// Largest argon2id lane count accepted in a stored hash.
    #[arg(long, env = "VERIFY_MAX_PARALLELISM", default_value_t = HashLimits::default().parallelism)]
    verify_max_parallelism: u32,
    /// Wrong secrets per token id that may cost an argon2 check per window; beyond, "could not check".
    #[arg(long, env = "VERIFY_MISS_BUDGET", default_value_t = verifier::MissBudget::default().misses)]
    verify_miss_budget: u32,
    /// The window of --verify-miss-budget, in seconds.
    #[arg(long, env = "VERIFY_MISS_WINDOW_SECONDS", default_value_t = verifier::MissBudget::default().window.as_secs())]
    verify_miss_window_seconds: u64,
}

#[derive(Args)]
struct VerifierArgs {
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    probe: ProbeArgs,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Args)]
struct ProxyArgs {
    #[command(flatten)]
    serve: proxy::cli::ProxyFlags,
    #[command(flatten)]
    verify: VerifyArgs,
    #[command(flatten)]
    probe: ProbeArgs,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Args)]
struct RunArgs {
    /// Watch AccessTokens in this namespace only (default: all namespaces). In this mode
    /// Organization and Group status is not written.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Identity reported on Events and in leader election, e.g. the pod name.
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Reconcile only while holding a Lease, so several replicas can run (the verifier
    /// serves in every replica regardless).
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "access-token-operator")]
    leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "access-token-operator")]
    leader_election_lease_name: String,
    /// Seconds a leader holds the Lease without renewing it; a crashed leader is replaced after this.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds the leader keeps reconciling without a successful Lease renewal before it
    /// exits; shorter than the lease duration (default: two thirds of it, 10 with 15).
    #[arg(long)]
    renew_deadline_seconds: Option<u64>,
    /// Namespace of the group index ConfigMap (group -> organization) that the AccessToken
    /// admission policy reads; the operator's own namespace. Empty: write no index.
    #[arg(
        long,
        env = "GROUP_INDEX_NAMESPACE",
        default_value = "access-token-operator"
    )]
    group_index_namespace: String,
    /// How many AccessTokens are reconciled at once (0: no bound).
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = controller::DEFAULT_RECONCILE_CONCURRENCY)]
    reconcile_concurrency: u16,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    hash: HashArgs,
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    probe: ProbeArgs,
    #[command(flatten)]
    kubeconfig: kubeconfig::KubeconfigArgs,
    #[command(flatten)]
    impersonation: impersonation::ImpersonationArgs,
}

/// argon2id cost parameters for new credentials (existing ones keep theirs).
#[derive(Args)]
struct HashArgs {
    /// argon2id memory cost in KiB.
    #[arg(long, env = "HASH_MEMORY_KIB", default_value_t = HashParams::default().memory_kib)]
    hash_memory_kib: u32,
    /// argon2id passes over memory.
    #[arg(long, env = "HASH_ITERATIONS", default_value_t = HashParams::default().iterations)]
    hash_iterations: u32,
    /// argon2id lanes.
    #[arg(long, env = "HASH_PARALLELISM", default_value_t = HashParams::default().parallelism)]
    hash_parallelism: u32,
    /// How many hashes may run at once, on as many threads of their own (each holds about memory-kib of memory).
    #[arg(long, env = "HASH_CONCURRENCY", default_value_t = 2)]
    hash_concurrency: usize,
}

fn main() -> ExitCode {
    // Reached as `kubectl-atk` (kubectl finds plugins by that name on PATH): the plugin alone.
    if plugin::invoked_as_plugin(std::env::args_os().next()) {
        return plugin::main(<plugin::Cli as clap::Parser>::parse());
    }
    let cli = Cli::parse();
    // One TLS crypto provider for the process (kube's client and the verifier's server).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Crd => access_token_operator::api::crds_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
        Command::Run(args) => run(*args),
        Command::Verifier(args) => verifier_only(args),
        Command::Proxy(args) => proxy_only(args),
        Command::Atk(cli) => return plugin::main(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> access_token_operator::Result<()> {
    telemetry::init(args.log_format);
    let params = HashParams {
        memory_kib: args.hash.hash_memory_kib,
        iterations: args.hash.hash_iterations,
        parallelism: args.hash.hash_parallelism,
    };
    let hasher = Hasher::new(params, args.hash.hash_concurrency)?;
    let listen = listen_config(&args.listen)?;
    kubeconfig::configure(kubeconfig::Endpoint::from_args(&args.kubeconfig)?);
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
    let config = controller::Config {
        namespace: args.namespace,
        instance: args.instance,
        group_index_namespace: Some(args.group_index_namespace.clone())
            .filter(|namespace| !namespace.is_empty()),
        reconcile_concurrency: args.reconcile_concurrency,
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = kube::Client::try_default().await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "access-token-operator starting"
        );
        let metrics = Metrics::new();
        let verifier = match &listen {
            Some(_) => Some(start_verifier(
                client.clone(),
                &args.listen.verify,
                metrics.clone(),
            )?),
            None => None,
        };
        let probes = serve_probes(&args.probe, &metrics, verifier.clone()).await?;
        let verifier = async {
            match (listen, verifier) {
                (Some(listen), Some(verifier)) => {
                    Ok(server::serve(verifier, listen, shutdown_signal()).await?)
                }
                _ => Ok(()),
            }
        };
        let controllers = async {
            let work = controller::run(client.clone(), config, hasher, metrics.clone());
            let work = impersonation::sync::alongside(work, client.clone(), &args.impersonation);
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

fn verifier_only(args: VerifierArgs) -> access_token_operator::Result<()> {
    telemetry::init(args.log_format);
    let Some(listen) = listen_config(&args.listen)? else {
        return Err(usage("the verifier needs --verifier-bind"));
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = kube::Client::try_default().await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "access-token-operator verifier starting"
        );
        let metrics = Metrics::new();
        let verifier = start_verifier(client, &args.listen.verify, metrics.clone())?;
        let probes = serve_probes(&args.probe, &metrics, Some(verifier.clone())).await?;
        let served = server::serve(verifier, listen, shutdown_signal()).await;
        probes.abort();
        Ok(served?)
    })
}

fn proxy_only(args: ProxyArgs) -> access_token_operator::Result<()> {
    telemetry::init(args.log_format);
    let listen = args.serve.listen()?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = kube::Client::try_default().await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "access-token-operator proxy starting"
        );
        let metrics = Metrics::new();
        let verifier = start_verifier(client, &args.verify, metrics.clone())?;
        let probes = serve_probes(&args.probe, &metrics, Some(verifier.clone())).await?;
        let upstream = proxy::upstream_client().await?;
        let proxy = Proxy::new(
            verifier,
            upstream,
            metrics.proxy.clone(),
            args.serve.proxy_max_body_bytes,
        );
        let served = proxy.serve(listen, shutdown_signal()).await;
        probes.abort();
        Ok(served?)
    })
}

/// A unique identity when no pod name is given: host name plus random digits.
fn random_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}-{:08x}", host.trim(), rand::random::<u32>())
}

fn usage(message: &str) -> access_token_operator::Error {
    access_token_operator::Error::Config(message.to_string())
}

fn listen_config(args: &ListenArgs) -> access_token_operator::Result<Option<server::Listen>> {
    let Some(bind) = args.verifier_bind else {
        return Ok(None);
    };
    let tls = match (&args.tls_cert_file, &args.tls_key_file, args.insecure_http) {
        (Some(cert), Some(key), false) => Some(server::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca_file.clone(),
        }),
        (None, None, true) => None,
        _ => {
            return Err(usage(
                "the verifier needs --tls-cert-file and --tls-key-file, or --insecure-http on a loopback address",
            ));
        }
    };
    let limits = server::Limits {
        max_connections: args.verifier_max_connections,
        handshake_timeout: std::time::Duration::from_secs(args.verifier_handshake_timeout_seconds),
        header_timeout: std::time::Duration::from_secs(args.verifier_header_timeout_seconds),
        idle_timeout: std::time::Duration::from_secs(args.verifier_idle_timeout_seconds),
    };
    Ok(Some(server::Listen { bind, tls, limits }))
}

/// Starts the probe server in a task of its own; it stops when the process does.
async fn serve_probes(
    args: &ProbeArgs,
    metrics: &std::sync::Arc<Metrics>,
    verifier: Option<std::sync::Arc<Verifier>>,
) -> access_token_operator::Result<tokio::task::JoinHandle<()>> {
    metrics
        .progress
        .set_stall_limit(std::time::Duration::from_secs(args.liveness_stall_seconds));
    let probes = probes::Probes::new(metrics.clone(), verifier);
    let server = probes::serve(args.probe_bind, probes, shutdown_signal())
        .await
        .map_err(|e| usage(&format!("cannot serve probes on {}: {e}", args.probe_bind)))?;
    Ok(tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "probe server failed");
        }
    }))
}

/// Starts the verifier's caches (it serves once `server::serve` runs).
fn start_verifier(
    client: kube::Client,
    args: &VerifyArgs,
    metrics: std::sync::Arc<Metrics>,
) -> access_token_operator::Result<std::sync::Arc<Verifier>> {
    // Verification takes its parameters from each PHC string, within `hash_limits`; these
    // params are never used to hash here.
    let hasher = Hasher::new(HashParams::default(), args.verify_concurrency)?;
    let cost = &args.verify_cost;
    let config = verifier::Config {
        cache_capacity: args.verify_cache_capacity,
        max_staleness: std::time::Duration::from_secs(args.max_staleness_seconds),
        hash_limits: HashLimits {
            memory_kib: cost.verify_max_memory_kib,
            iterations: cost.verify_max_iterations,
            parallelism: cost.verify_max_parallelism,
        },
        miss_budget: verifier::MissBudget {
            misses: cost.verify_miss_budget,
            window: std::time::Duration::from_secs(cost.verify_miss_window_seconds),
        },
        ..verifier::Config::default()
    };
    Verifier::start(client, hasher, config, metrics)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
