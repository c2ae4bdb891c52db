//! The `access-token-operator` binary: parses flags and starts tasks; the work lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use access_token_operator::{
    controller,
    hasher::Hasher,
    telemetry::{self, LogFormat},
    token::HashParams,
};
use clap::{Args, Parser, Subcommand};

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
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML (what crds/ holds).
    Crd,
}

#[derive(Args)]
struct RunArgs {
    /// Watch AccessTokens in this namespace only (default: all namespaces). In this mode
    /// Organization and Group status is not written.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Identity reported on Events, e.g. the pod name.
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    hash: HashArgs,
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
    /// How many hashes may run at once (each takes about memory-kib of memory).
    #[arg(long, env = "HASH_CONCURRENCY", default_value_t = 2)]
    hash_concurrency: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => access_token_operator::api::crds_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
        Command::Run(args) => run(args),
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
    let config = controller::Config {
        namespace: args.namespace,
        instance: args.instance,
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = kube::Client::try_default().await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "access-token-operator starting"
        );
        controller::run(client, config, hasher).await
    })
}
