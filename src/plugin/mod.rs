//! `kubectl atk`, the kubectl plugin: the operator's binary reached under the name
//! `kubectl-atk` (a link on PATH), or as `access-token-operator atk`. Every command is a
//! plain API call a user could make with kubectl; the plugin only spares the typing.
//! It writes spec fields the user owns (`revoked`, `rotation.trigger`), never status.

mod table;

use std::{ffi::OsString, io::Write as _, process::ExitCode};

use clap::{Parser, Subcommand};
use k8s_openapi::{
    api::{
        authentication::v1::{SelfSubjectReview, TokenReview, TokenReviewSpec, TokenReviewStatus},
        core::v1::Secret,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};

use crate::api::AccessToken;

/// Field manager of the plugin's spec patches (visible in managedFields).
pub const FIELD_MANAGER: &str = "kubectl-atk";

/// Manage AccessTokens (iam.accesstoken.io) from kubectl.
#[derive(Parser, Debug)]
#[command(name = "kubectl atk", bin_name = "kubectl atk", version)]
pub struct Cli {
    /// Namespace of the AccessToken (default: the kubeconfig context's namespace).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// List AccessTokens: phase, scope, role, expiry, token id and the reason of Ready.
    Status {
        /// Only this AccessToken.
        name: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Print a token's value from its Secret to stdout (with a warning on stderr).
    Reveal {
        /// The AccessToken.
        name: String,
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
    /// Who a token belongs to: a TokenReview through kube-apiserver, or straight to a verifier.
    Whoami {
        /// The token, or `-` to read it from stdin (keeps it out of shell history and `ps`).
        token: String,
        /// Ask this verifier (e.g. https://access-token-verifier.access-token-operator.svc)
        /// instead of kube-apiserver.
        #[arg(long)]
        verifier: Option<String>,
        /// PEM CA certificate(s) to trust for --verifier.
        #[arg(long, requires = "verifier")]
        certificate_authority: Option<std::path::PathBuf>,
    },
}

/// Whether the process was started under the plugin's name (`kubectl-atk`).
pub fn invoked_as_plugin(arg0: Option<OsString>) -> bool {
    arg0.as_ref()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("kubectl-atk"))
}

/// Why a plugin command failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Talking to the API server failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// Loading the kubeconfig failed.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// Anything the user should read as is.
    #[error("{0}")]
    Message(String),
}

type PluginResult<T = ExitCode> = Result<T, PluginError>;

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
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> PluginResult {
    let config = kube::Config::infer()
        .await
        .map_err(|e| PluginError::Config(e.to_string()))?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config.clone())?;
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), &namespace);
    match cli.command {
        PluginCommand::Status {
            name,
            all_namespaces,
        } => status(&client, &namespace, name, all_namespaces).await,
        PluginCommand::Reveal { name } => reveal(&client, &tokens, &namespace, &name).await,
        PluginCommand::Revoke { name } => set_revoked(&tokens, &namespace, &name, true).await,
        PluginCommand::Unrevoke { name } => set_revoked(&tokens, &namespace, &name, false).await,
        PluginCommand::Rotate { name } => rotate(&client, &namespace, &name).await,
        PluginCommand::Whoami {
            token,
            verifier,
            certificate_authority,
        } => {
            let token = read_token(token)?;
            let answer = match verifier {
                Some(url) => review_at_verifier(&url, certificate_authority, token).await?,
                None => review_through_apiserver(&client, &config, token).await?,
            };
            Ok(print_review(answer))
        }
    }
}

async fn status(
    client: &Client,
    namespace: &str,
    name: Option<String>,
    all_namespaces: bool,
) -> PluginResult {
    let api: Api<AccessToken> = if all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    };
    let tokens = match &name {
        Some(name) => vec![api.get(name).await?],
        None => api.list(&ListParams::default()).await?.items,
    };
    if tokens.is_empty() && name.is_none() {
        eprintln!("No AccessTokens found in {namespace}.");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table::render(&tokens, all_namespaces));
    Ok(ExitCode::SUCCESS)
}

async fn reveal(
    client: &Client,
    tokens: &Api<AccessToken>,
    namespace: &str,
    name: &str,
) -> PluginResult {
    let token = tokens.get(name).await?;
    let status = token.status.clone().unwrap_or_default();
    let Some(secret_name) = status.secret_name.filter(|_| status.token_id.is_some()) else {
        return Err(PluginError::Message(format!(
            "{namespace}/{name} has no token yet (phase {}); see `kubectl atk status {name}`",
            crate::observability::token_series::phase_name(status.phase)
        )));
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets.get(&secret_name).await?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .map(str::to_string)
        .ok_or_else(|| {
            PluginError::Message(format!("Secret {namespace}/{secret_name} holds no token"))
        })?;
    eprintln!(
        "warning: printing the token of AccessToken {namespace}/{name} (id {}, phase {}). \
         It is a credential: anyone who sees this output can use it until it is revoked.",
        status.token_id.as_deref().unwrap_or("?"),
        crate::observability::token_series::phase_name(status.phase),
    );
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{value}").map_err(|e| PluginError::Message(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
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
    Ok(ExitCode::SUCCESS)
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
        return Err(PluginError::Message(
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
    Ok(ExitCode::SUCCESS)
}

fn read_token(token: String) -> PluginResult<String> {
    if token != "-" {
        return Ok(token);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| PluginError::Message(format!("reading the token from stdin: {e}")))?;
    Ok(line.trim().to_string())
}

fn review(token: String) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A TokenReview through kube-apiserver, which asks its authenticators (the verifier's
/// webhook among them). It needs `create` on `tokenreviews` (e.g. `system:auth-delegator`);
/// without that right, kube-apiserver is asked who the token is by presenting it (a
/// SelfSubjectReview, which any authenticated caller may make).
async fn review_through_apiserver(
    client: &Client,
    config: &kube::Config,
    token: String,
) -> PluginResult<TokenReviewStatus> {
    let api: Api<TokenReview> = Api::all(client.clone());
    match api
        .create(&PostParams::default(), &review(token.clone()))
        .await
    {
        Ok(answer) => Ok(answer.status.unwrap_or_default()),
        Err(kube::Error::Api(status)) if status.is_forbidden() => {
            eprintln!(
                "note: you may not create TokenReviews; asking kube-apiserver with the token itself (SelfSubjectReview)"
            );
            self_review(config, token).await
        }
        Err(error) => Err(error.into()),
    }
}

/// Who kube-apiserver says the bearer of `token` is; not authenticated on a 401.
async fn self_review(config: &kube::Config, token: String) -> PluginResult<TokenReviewStatus> {
    let mut config = config.clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let api: Api<SelfSubjectReview> = Api::all(Client::try_from(config)?);
    match api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(review) => Ok(TokenReviewStatus {
            authenticated: Some(true),
            user: review.status.and_then(|s| s.user_info),
            ..Default::default()
        }),
        Err(kube::Error::Api(status)) if status.code == 401 => Ok(TokenReviewStatus {
            authenticated: Some(false),
            ..Default::default()
        }),
        Err(error) => Err(error.into()),
    }
}

/// A TokenReview posted straight to a verifier's `/tokenreviews`.
async fn review_at_verifier(
    url: &str,
    certificate_authority: Option<std::path::PathBuf>,
    token: String,
) -> PluginResult<TokenReviewStatus> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let uri = url
        .parse()
        .map_err(|e| PluginError::Message(format!("--verifier {url}: {e}")))?;
    let mut config = kube::Config::new(uri);
    if let Some(path) = certificate_authority {
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| PluginError::Message(format!("{}: {e}", path.display())))?;
        config.root_cert = Some(certs.into_iter().map(|c| c.to_vec()).collect());
    }
    let client = Client::try_from(config)?;
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }))
    .map_err(|e| PluginError::Message(e.to_string()))?;
    let request = axum::http::Request::post("/tokenreviews")
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| PluginError::Message(e.to_string()))?;
    let answer: TokenReview = client.request(request).await?;
    Ok(answer.status.unwrap_or_default())
}

/// Prints who the token is; exit code 1 when it is not authenticated.
fn print_review(status: TokenReviewStatus) -> ExitCode {
    if let Some(error) = status.error.filter(|e| !e.is_empty()) {
        eprintln!("could not check the token: {error}");
        return ExitCode::from(2);
    }
    if status.authenticated != Some(true) {
        println!("authenticated: false");
        eprintln!(
            "the token is not valid (revoked, expired, suspended, deleted, unknown or malformed)"
        );
        return ExitCode::FAILURE;
    }
    let user = status.user.unwrap_or_default();
    println!("authenticated: true");
    println!("username: {}", user.username.unwrap_or_default());
    println!("uid: {}", user.uid.unwrap_or_default());
    println!("groups:");
    for group in user.groups.unwrap_or_default() {
        println!("- {group}");
    }
    let extra = user.extra.unwrap_or_default();
    if !extra.is_empty() {
        println!("extra:");
        for (key, values) in extra {
            println!("  {key}: {}", values.join(", "));
        }
    }
    ExitCode::SUCCESS
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
}
