//! Process assembly: the command line, and what `run` and `verifier` start (controllers,
//! verifier, probes, leader election, the argon2 thread pool). `main.rs` only parses.

pub mod cli;
pub mod hash_pool;
pub mod leader;
mod operator;
mod shutdown;
mod verifier;

use std::process::ExitCode;

pub use cli::{Cli, Command};

use crate::plugin;

/// Runs one command of the `access-token-operator` binary to its end.
pub fn main(cli: Cli) -> ExitCode {
    // One TLS crypto provider for the process (kube's client and the verifier's server).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Crd => crate::api::crds_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(Into::into),
        Command::Run(args) => operator::run(args),
        Command::Verifier(args) => verifier::verifier_only(args),
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

fn usage(message: &str) -> crate::Error {
    crate::Error::Config(message.to_string())
}
