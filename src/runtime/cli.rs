//! The command line of the `access-token-operator` binary: subcommands and their flags.

use clap::{Args, Parser, Subcommand, builder::TypedValueParser as _};

use crate::{
    controller,
    observability::{liveness, logging::LogFormat},
    plugin,
    token::{HashLimits, HashParams},
    verifier::{self, server},
};

/// Declarative API tokens for a multi-tenant Kubernetes platform.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
pub struct ProbeArgs {
    /// Serve /metrics, /healthz and /readyz over plain HTTP on this address (port 0: any free port).
    #[arg(long, env = "PROBE_BIND", default_value = "0.0.0.0:8080")]
    pub probe_bind: std::net::SocketAddr,
    /// Seconds the controllers may go without progress (their watches failing throughout,
    /// or one reconcile running) before /healthz fails and the kubelet restarts the process.
    #[arg(long, env = "LIVENESS_STALL_SECONDS", default_value_t = liveness::DEFAULT_STALL_LIMIT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub liveness_stall_seconds: u64,
}

/// Flags of the verifier server.
#[derive(Args)]
pub struct ListenArgs {
    /// Serve the verifier on this address (with `run`: unset means no verifier in this process).
    #[arg(long, env = "VERIFIER_BIND")]
    pub verifier_bind: Option<std::net::SocketAddr>,
    /// PEM certificate (chain) for the verifier's TLS.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key for the verifier's TLS.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<std::path::PathBuf>,
    /// PEM CA certificate(s): when set, only clients presenting a certificate signed by one
    /// of them are served (kube-apiserver's, from its webhook kubeconfig).
    #[arg(long, env = "CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub client_ca_file: Option<std::path::PathBuf>,
    /// Serve plain HTTP instead of TLS; refused unless the bind address is loopback.
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_key_file", "client_ca_file"])]
    pub insecure_http: bool,
    /// Connections the verifier serves at once; more wait to be accepted until one closes.
    #[arg(long, env = "VERIFIER_MAX_CONNECTIONS", default_value_t = server::Limits::default().max_connections,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub verifier_max_connections: usize,
    /// Seconds a client may take to complete the TLS handshake.
    #[arg(long, default_value_t = server::Limits::default().handshake_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub verifier_handshake_timeout_seconds: u64,
    /// Seconds a client may take to send an HTTP/1 request header (also how long an
    /// HTTP/1 keep-alive connection may wait for its next request).
    #[arg(long, default_value_t = server::Limits::default().header_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub verifier_header_timeout_seconds: u64,
    /// Seconds a connection may move no bytes before it is closed.
    #[arg(long, default_value_t = server::Limits::default().idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub verifier_idle_timeout_seconds: u64,
    /// Connections one client address may hold at once (kube-apiserver multiplexes its
    /// TokenReviews over a few); beyond it a new connection is closed at once.
    #[arg(long, env = "VERIFIER_MAX_CONNECTIONS_PER_PEER", default_value_t = server::Limits::default().max_connections_per_peer,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub verifier_max_connections_per_peer: usize,
    /// With --client-ca-file: connections (of --verifier-max-connections, at most half) kept
    /// for addresses that have presented an accepted client certificate before, so clients
    /// that never authenticated cannot take every slot from kube-apiserver.
    #[arg(long, env = "VERIFIER_RESERVED_CONNECTIONS", default_value_t = server::Limits::default().reserved_for_authenticated,
          value_parser = clap::value_parser!(u32).map(|n| n as usize))]
    pub verifier_reserved_connections: usize,
    /// Seconds after which a connection is closed gracefully, however busy (clients
    /// reconnect; no connection holds a slot for ever); 0: never.
    #[arg(long, default_value_t = server::Limits::default().max_connection_age.map_or(0, |age| age.as_secs()))]
    pub verifier_max_connection_age_seconds: u64,
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// How the verifier decides (in the verifier and in the proxy).
#[derive(Args)]
pub struct VerifyArgs {
    /// How many argon2 verifications may run at once (on as many threads of their own).
    #[arg(long, env = "VERIFY_CONCURRENCY", default_value_t = 2)]
    pub verify_concurrency: usize,
    /// How many argon2 results the verifier caches (0 disables the cache).
    #[arg(long, env = "VERIFY_CACHE_CAPACITY", default_value_t = verifier::Config::default().cache_capacity)]
    pub verify_cache_capacity: u64,
    /// Seconds a watch of the verifier may keep failing before it stops answering from its
    /// caches: /readyz fails and TokenReviews are answered with an error (could not check).
    #[arg(long, env = "MAX_STALENESS_SECONDS", default_value_t = verifier::Config::default().max_staleness.as_secs())]
    pub max_staleness_seconds: u64,
    /// Most status.lastUsedAt writes a second (each token is written at most once a minute;
    /// above this rate the tokens waiting longest are written first).
    #[arg(long, env = "LAST_USED_WRITES_PER_SECOND", default_value_t = verifier::Config::default().last_used_writes_per_second, value_parser = clap::value_parser!(u32).range(1..))]
    pub last_used_writes_per_second: u32,
    #[command(flatten)]
    pub verify_cost: VerifyCostArgs,
}

/// Bounds on what a presented token may cost the verifier.
#[derive(Args)]
pub struct VerifyCostArgs {
    /// Largest argon2id memory cost (KiB) accepted in a stored hash; costlier ones are refused without hashing.
    #[arg(long, env = "VERIFY_MAX_MEMORY_KIB", default_value_t = HashLimits::default().memory_kib)]
    pub verify_max_memory_kib: u32,
    /// Largest argon2id pass count accepted in a stored hash.
    #[arg(long, env = "VERIFY_MAX_ITERATIONS", default_value_t = HashLimits::default().iterations)]
    pub verify_max_iterations: u32,
    /// Largest argon2id lane count accepted in a stored hash.
    #[arg(long, env = "VERIFY_MAX_PARALLELISM", default_value_t = HashLimits::default().parallelism)]
    pub verify_max_parallelism: u32,
    /// Deprecated, ignored (a per-id cap on wrong secrets let forgeries lock the owner out);
    /// still accepted so existing manifests keep starting.
    #[arg(long, env = "VERIFY_MISS_BUDGET", hide = true)]
    pub verify_miss_budget: Option<u32>,
    /// Deprecated, ignored (see --verify-miss-budget).
    #[arg(long, env = "VERIFY_MISS_WINDOW_SECONDS", hide = true)]
    pub verify_miss_window_seconds: Option<u64>,
}

#[derive(Args)]
pub struct VerifierArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub serve: crate::proxy::cli::ProxyFlags,
    #[command(flatten)]
    pub verify: VerifyArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Args)]
pub struct RunArgs {
    /// Watch AccessTokens in this namespace only (default: all namespaces). In this mode
    /// Organization and Group status is not written.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Identity reported on Events and in leader election, e.g. the pod name.
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Reconcile only while holding a Lease, so several replicas can run (the verifier
    /// serves in every replica regardless).
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "access-token-operator")]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "access-token-operator")]
    pub leader_election_lease_name: String,
    /// Seconds a leader holds the Lease without renewing it; a crashed leader is replaced after this.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds the leader keeps reconciling without a successful Lease renewal before it
    /// exits; shorter than the lease duration (default: two thirds of it, 10 with 15).
    #[arg(long)]
    pub renew_deadline_seconds: Option<u64>,
    /// No longer used (the group-token admission policy reads the Groups themselves); still
    /// accepted so that an older manifest's flag does not stop the operator.
    #[arg(long, hide = true)]
    pub group_index_namespace: Option<String>,
    /// How many AccessTokens are reconciled at once (0: no bound).
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = controller::DEFAULT_RECONCILE_CONCURRENCY)]
    pub reconcile_concurrency: u16,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub hash: HashArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[command(flatten)]
    pub kubeconfig: crate::controller::access_token::kubeconfig::KubeconfigArgs,
    #[command(flatten)]
    pub impersonation: crate::impersonation::ImpersonationArgs,
}

/// argon2id cost parameters for new credentials (existing ones keep theirs).
#[derive(Args)]
pub struct HashArgs {
    /// argon2id memory cost in KiB.
    #[arg(long, env = "HASH_MEMORY_KIB", default_value_t = HashParams::default().memory_kib)]
    pub hash_memory_kib: u32,
    /// argon2id passes over memory.
    #[arg(long, env = "HASH_ITERATIONS", default_value_t = HashParams::default().iterations)]
    pub hash_iterations: u32,
    /// argon2id lanes.
    #[arg(long, env = "HASH_PARALLELISM", default_value_t = HashParams::default().parallelism)]
    pub hash_parallelism: u32,
    /// How many hashes may run at once, on as many threads of their own (each holds about memory-kib of memory).
    #[arg(long, env = "HASH_CONCURRENCY", default_value_t = 2)]
    pub hash_concurrency: usize,
}
