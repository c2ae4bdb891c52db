//! `kubectl atk`, the kubectl plugin: the operator's binary reached under the name
//! `kubectl-atk` (a link on PATH), or as `access-token-operator atk`. Every command is a
//! plain API call a user could make with kubectl; the plugin only spares the typing.
//! It creates AccessTokens and writes spec fields the user owns (`revoked`,
//! `rotation.trigger`), never status.

pub mod client;
mod completion;
mod console;
mod create;
mod error;
pub mod exit;
pub mod output;
mod table;
mod value;
mod whoami;

use std::{ffi::OsString, io::Write as _, process::ExitCode};

use clap::{Parser, Subcommand};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
};

use crate::api::AccessToken;

pub use error::PluginError;
use exit::Exit;

/// Field manager of the plugin's creates and spec patches (visible in managedFields).
pub const FIELD_MANAGER: &str = "kubectl-atk";

/// Manage AccessTokens (iam.accesstoken.io) from kubectl.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl atk",
    bin_name = "kubectl atk",
    version,
    after_help = "Exit codes: 0 done (whoami: valid), 1 not valid, 2 usage error, \
                  3 could not check or finish, 4 refused by the API server."
)]
pub struct Cli {
    /// kubectl's connection flags (`--kubeconfig`, `--context`, `-n`, `--as`, ...).
    #[command(flatten)]
    pub kube: client::KubeFlags,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Create an AccessToken, wait until it is Active and print its value (alone) on stdout.
    Create(create::CreateArgs),
    /// List AccessTokens: phase, scope, role, expiry, token id and the reason of Ready.
    Status {
        /// Only this AccessToken.
        name: Option<String>,
        #[command(flatten)]
        all: client::AllNamespaces,
        /// Print the AccessTokens as json or yaml instead of a table.
        #[arg(short, long, value_enum, value_name = "FORMAT")]
        output: Option<output::OutputFormat>,
    },
    /// Print a token's value from its Secret to stdout (with a warning on stderr).
    Reveal {
        /// The AccessToken.
        name: String,
        /// Write the value to this new file (mode 0600) instead of stdout.
        #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
        file: Option<std::path::PathBuf>,
    },
    /// Revoke a token (spec.revoked=true): it stops working; reversible with unrevoke.
    Revoke {
        /// The AccessToken.
        name: String,
    },
    /// Re-enable a revoked token (spec.revoked=false): the same token works again.
    Unrevoke {
        /// The AccessToken.
        name: String,
    },
    /// Rotate a token now: set spec.rotation.trigger to a fresh value (needs an operator with rotation).
    Rotate {
        /// The AccessToken.
        name: String,
    },
    /// Who a token (read from stdin) belongs to: a TokenReview through kube-apiserver, or
    /// straight to a verifier. Exit 0 valid, 1 not valid, 3 could not check.
    Whoami(whoami::WhoamiArgs),
    /// Print a shell completion script for the `kubectl-atk` command (for `kubectl atk <TAB>`,
    /// see the `kubectl_complete-atk` shim in docs/usage/kubectl-atk.md).
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// kubectl's plugin completion protocol, for a `kubectl_complete-atk` shim:
    /// `exec kubectl atk __complete -- "$@"` (the `--` keeps typed flags as words).
    #[command(name = "__complete", hide = true)]
    Complete {
        /// The words after `kubectl atk`, the last one being completed.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Open the web console: the Organization and Group pages of your tokens, in a browser.
    Console(console::ConsoleArgs),
}

/// Whether the process was started under the plugin's name (`kubectl-atk`).
pub fn invoked_as_plugin(arg0: Option<OsString>) -> bool {
    arg0.as_ref()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("kubectl-atk"))
}

/// A command's outcome: its exit code, or why it failed.
pub type PluginResult<T = Exit> = Result<T, PluginError>;

/// Runs one plugin command.
pub fn main(cli: Cli) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::Unavailable.into();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error}");
            error.exit().into()
        }
    }
}

async fn run(cli: Cli) -> PluginResult {
    // whoami may ask a verifier without any kubeconfig; it connects itself when needed.
    let command = match cli.command {
        PluginCommand::Whoami(args) => return whoami::run(&cli.kube, args).await,
        // Neither needs a cluster.
        PluginCommand::Completion { shell } => return Ok(completion::script(shell)),
        PluginCommand::Complete { words } => return Ok(completion::answer(&words)),
        command => command,
    };
    let client::Kube {
        client, namespace, ..
    } = cli.kube.connect().await?;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &namespace);
    match command {
        PluginCommand::Create(args) => create::run(&client, &namespace, &args).await,
        PluginCommand::Status { name, all, output } => {
            status(&client, &namespace, name, all.all_namespaces, output).await
        }
        PluginCommand::Reveal { name, file } => reveal(&client, &tokens, &name, file).await,
        PluginCommand::Revoke { name } => set_revoked(&tokens, &namespace, &name, true).await,
        PluginCommand::Unrevoke { name } => set_revoked(&tokens, &namespace, &name, false).await,
        PluginCommand::Rotate { name } => rotate(&client, &namespace, &name).await,
        PluginCommand::Console(args) => console::serve(client, namespace, args).await,
        PluginCommand::Whoami(_)
        | PluginCommand::Completion { .. }
        | PluginCommand::Complete { .. } => Ok(Exit::Ok),
    }
}

async fn status(
    client: &Client,
    namespace: &str,
    name: Option<String>,
    all_namespaces: bool,
    output: Option<output::OutputFormat>,
) -> PluginResult {
    let tokens = if all_namespaces {
        // kubectl cannot get one name across namespaces; a field selector can.
        let mut params = ListParams::default();
        if let Some(name) = &name {
            params = params.fields(&format!("metadata.name={name}"));
        }
        Api::<AccessToken>::all(client.clone())
            .list(&params)
            .await?
            .items
    } else {
        let api: Api<AccessToken> = Api::namespaced(client.clone(), namespace);
        match &name {
            Some(name) => vec![api.get(name).await?],
            None => api.list(&ListParams::default()).await?.items,
        }
    };
    if let Some(format) = output {
        let mut objects = tokens
            .iter()
            .map(output::without_managed_fields)
            .collect::<PluginResult<Vec<_>>>()?;
        let shown = match (&name, all_namespaces) {
            (Some(_), false) => objects.remove(0),
            _ => output::list(objects),
        };
        print!("{}", output::render(&shown, format)?);
        return Ok(Exit::Ok);
    }
    if tokens.is_empty() {
        if all_namespaces {
            eprintln!("No AccessTokens found.");
        } else {
            eprintln!("No AccessTokens found in {namespace}.");
        }
        return Ok(Exit::Ok);
    }
    print!("{}", table::render(&tokens, all_namespaces));
    Ok(Exit::Ok)
}

async fn reveal(
    client: &Client,
    tokens: &Api<AccessToken>,
    name: &str,
    file: Option<std::path::PathBuf>,
) -> PluginResult {
    let token = tokens.get(name).await?;
    let value = value::read(client, &token).await?;
    let status = token.status.clone().unwrap_or_default();
    let namespace = kube::ResourceExt::namespace(&token).unwrap_or_default();
    let phase = crate::observability::token_series::phase_name(status.phase);
    let Some(path) = file else {
        eprintln!(
            "warning: printing the token of AccessToken {namespace}/{name} (id {}, phase {phase}). \
             It is a credential: anyone who sees this output (a CI log too) can use it until it \
             is revoked; --file PATH writes it to a file only you can read.",
            value.id().as_str(),
        );
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", value.expose_secret())
            .map_err(|e| PluginError::Unavailable(e.to_string()))?;
        return Ok(Exit::Ok);
    };
    write_private(&path, value.expose_secret())?;
    eprintln!(
        "wrote the token of AccessToken {namespace}/{name} (id {}, phase {phase}) to {} (mode 0600)",
        value.id().as_str(),
        path.display()
    );
    Ok(Exit::Ok)
}

/// Writes `value` to a new file that only its owner can read; an existing file is kept.
fn write_private(path: &std::path::Path, value: &str) -> PluginResult<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let unable = |e: std::io::Error| PluginError::Unavailable(format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(unable)?;
    writeln!(file, "{value}").map_err(unable)
}

async fn set_revoked(
    tokens: &Api<AccessToken>,
    namespace: &str,
    name: &str,
    revoked: bool,
) -> PluginResult {
    let patch = serde_json::json!({"spec": {"revoked": revoked}});
    tokens
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            },
            &Patch::Merge(&patch),
        )
        .await?;
    let done = if revoked {
        "revoked (spec.revoked=true)"
    } else {
        "re-enabled (spec.revoked=false)"
    };
    println!("accesstoken {namespace}/{name} {done}");
    eprintln!(
        "note: if a GitOps tool manages this AccessToken, change spec.revoked in its source too, \
         or the tool reverts this edit."
    );
    Ok(Exit::Ok)
}

async fn rotate(client: &Client, namespace: &str, name: &str) -> PluginResult {
    let resource = ApiResource::erase::<AccessToken>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let trigger = Timestamp::now().to_string();
    let patch = serde_json::json!({"spec": {"rotation": {"trigger": trigger}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    // A dry run first: an operator without rotation has no such field, and the API server
    // drops unknown fields without an error; nothing is written in that case.
    let tried = api
        .patch(
            name,
            &PatchParams {
                dry_run: true,
                ..params.clone()
            },
            &Patch::Merge(&patch),
        )
        .await?;
    let kept = tried.data["spec"]["rotation"]["trigger"].as_str() == Some(trigger.as_str());
    if !kept {
        return Err(PluginError::Refused(
            "this cluster's AccessToken CRD has no spec.rotation.trigger (rotation comes with a \
             newer operator): nothing was changed"
                .to_string(),
        ));
    }
    api.patch(name, &params, &Patch::Merge(&patch)).await?;
    println!("accesstoken {namespace}/{name} rotation requested (spec.rotation.trigger={trigger})");
    eprintln!(
        "note: if a GitOps tool manages this AccessToken, set spec.rotation.trigger in its source \
         instead, or the tool reverts this edit."
    );
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_plugin_is_recognised_by_its_name() {
        assert!(invoked_as_plugin(Some("/usr/local/bin/kubectl-atk".into())));
        assert!(invoked_as_plugin(Some("kubectl-atk".into())));
        assert!(!invoked_as_plugin(Some(
            "/bin/access-token-operator".into()
        )));
        assert!(!invoked_as_plugin(None));
    }

    #[test]
    fn help_lists_every_command() {
        Cli::command().debug_assert();
        let help = Cli::command().render_help().to_string();
        for command in ["status", "reveal", "revoke", "unrevoke", "rotate", "whoami"] {
            assert!(help.contains(command), "{command} missing from\n{help}");
        }
    }

    #[test]
    fn complete_takes_every_word_after_the_separator() {
        let cli = Cli::try_parse_from(["kubectl atk", "__complete", "--", "-n", "acme", "-o", ""])
            .expect("parses");
        match cli.command {
            PluginCommand::Complete { words } => assert_eq!(words, ["-n", "acme", "-o", ""]),
            other => panic!("parsed as {other:?}"),
        }
        assert_eq!(
            cli.kube.namespace, None,
            "the words are not the plugin's own flags"
        );
    }
}
