//! The `access-token-operator` binary: parses flags; the work lives in the library's `runtime`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use access_token_operator::{plugin, runtime};
use clap::Parser as _;

fn main() -> ExitCode {
    // Reached as `kubectl-atk` (kubectl finds plugins by that name on PATH): the plugin alone.
    if plugin::invoked_as_plugin(std::env::args_os().next()) {
        return plugin::main(plugin::Cli::parse());
    }
    runtime::main(runtime::Cli::parse())
}
