//! `kubectl atk whoami`: who a token belongs to, asked of kube-apiserver (TokenReview, or a
//! SelfSubjectReview with the token) or straight of a verifier. The token comes from stdin
//! by default, so it stays out of shell history and `ps`.

use std::{
    io::{BufRead as _, IsTerminal as _},
    path::PathBuf,
};

use clap::Args;
use k8s_openapi::api::authentication::v1::{
    SelfSubjectReview, TokenReview, TokenReviewSpec, TokenReviewStatus,
};
use kube::{Api, Client, api::PostParams};

use super::{
    PluginError, PluginResult,
    client::KubeFlags,
    exit::Exit,
    output::{OutputFormat, render},
};

/// What `whoami` asks.
#[derive(Args, Debug, Clone)]
pub struct WhoamiArgs {
    /// The token: leave out (or `-`) to read it from stdin, which keeps it out of shell history
    /// and `ps`; a token given here is accepted with a warning.
    #[arg(value_name = "TOKEN")]
    pub token: Option<String>,
    /// Ask this verifier instead of kube-apiserver: https (e.g.
    /// https://access-token-verifier.access-token-operator.svc), or http to a loopback address.
    #[arg(long, value_name = "URL", value_parser = parse_https)]
    pub verifier: Option<String>,
    /// PEM CA certificate(s) to trust for --verifier.
    #[arg(long, requires = "verifier", value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub certificate_authority: Option<PathBuf>,
    /// Print the TokenReview status as json or yaml instead of text.
    #[arg(short, long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

/// Runs `whoami`; the exit code says valid (0), not valid (1) or could not check (3).
pub async fn run(flags: &KubeFlags, args: WhoamiArgs) -> PluginResult<Exit> {
    let token = read_token(args.token)?;
    let answer = match &args.verifier {
        Some(url) => at_verifier(url, args.certificate_authority, token).await?,
        // Only this path needs a kubeconfig: a verifier is asked without one.
        None => {
            let kube = flags.connect().await?;
            through_apiserver(&kube.client, &kube.config, token).await?
        }
    };
    match args.output {
        Some(format) => {
            print!("{}", render(&answer, format)?);
            Ok(verdict(&answer))
        }
        None => Ok(print_review(answer)),
    }
}

/// The token from the argument, or from stdin (the first line) when it is absent or `-`.
fn read_token(argument: Option<String>) -> PluginResult<String> {
    if let Some(token) = argument.filter(|t| t != "-") {
        eprintln!(
            "warning: a token on the command line lands in shell history and `ps`; \
             pipe it on stdin instead (`kubectl atk whoami < file`)"
        );
        return Ok(token);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Paste the token and press Enter:");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| PluginError::Unavailable(format!("reading the token from stdin: {e}")))?;
    let token = line.trim().to_string();
    if token.is_empty() {
        return Err(PluginError::Unavailable(
            "no token on stdin (pipe it in: `kubectl atk whoami < file`)".into(),
        ));
    }
    Ok(token)
}

/// `--verifier`: an https URL, since the token travels in the request; plain http only to a
/// loopback address (a local verifier or a port-forward), where it never leaves the machine.
fn parse_https(url: &str) -> Result<String, String> {
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(url.to_string()),
        Some("http") if loopback => Ok(url.to_string()),
        _ => Err(format!(
            "{url:?}: the token is sent to it, so only https://HOST[:PORT] is accepted \
             (http only to a loopback address)"
        )),
    }
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
async fn through_apiserver(
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
    // Only the server and its CA are kept: the caller's identity and impersonation would
    // otherwise ride along with the token.
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
async fn at_verifier(
    url: &str,
    certificate_authority: Option<PathBuf>,
    token: String,
) -> PluginResult<TokenReviewStatus> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let uri = url
        .parse()
        .map_err(|e| PluginError::Unavailable(format!("--verifier {url}: {e}")))?;
    let mut config = kube::Config::new(uri);
    if let Some(path) = certificate_authority {
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| PluginError::Unavailable(format!("{}: {e}", path.display())))?;
        config.root_cert = Some(certs.into_iter().map(|c| c.to_vec()).collect());
    }
    let client = Client::try_from(config)?;
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }))
    .map_err(|e| PluginError::Unavailable(e.to_string()))?;
    let request = axum::http::Request::post("/tokenreviews")
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| PluginError::Unavailable(e.to_string()))?;
    // Whatever the verifier answers with, it did not check the token: "could not check".
    let answer: TokenReview = client
        .request(request)
        .await
        .map_err(|e| PluginError::Unavailable(format!("the verifier at {url}: {e}")))?;
    Ok(answer.status.unwrap_or_default())
}

/// Valid, not valid, or could not check, from a TokenReview status.
fn verdict(status: &TokenReviewStatus) -> Exit {
    if status.error.as_ref().is_some_and(|e| !e.is_empty()) {
        Exit::Unavailable
    } else if status.authenticated == Some(true) {
        Exit::Ok
    } else {
        Exit::NotValid
    }
}

/// Prints who the token is, as text.
fn print_review(status: TokenReviewStatus) -> Exit {
    let verdict = verdict(&status);
    match verdict {
        Exit::Unavailable => eprintln!(
            "could not check the token: {}",
            status.error.unwrap_or_default()
        ),
        Exit::NotValid => {
            println!("authenticated: false");
            eprintln!(
                "the token is not valid (revoked, expired, suspended, deleted, unknown or malformed)"
            );
        }
        _ => print_user(status.user.unwrap_or_default()),
    }
    verdict
}

fn print_user(user: k8s_openapi::api::authentication::v1::UserInfo) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_verifiers_are_accepted() {
        for good in [
            "https://verifier.example.svc:8443",
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert!(parse_https(good).is_ok(), "{good} refused");
        }
        for bad in [
            "http://verifier:8443",
            "http://10.0.0.1:8080",
            "verifier:8443",
            "https://",
            "ftp://x",
        ] {
            assert!(parse_https(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_verdict_tells_valid_from_not_valid_from_unchecked() {
        let valid = TokenReviewStatus {
            authenticated: Some(true),
            ..Default::default()
        };
        assert_eq!(verdict(&valid), Exit::Ok);
        assert_eq!(verdict(&TokenReviewStatus::default()), Exit::NotValid);
        let errored = TokenReviewStatus {
            error: Some("verifier not ready".into()),
            ..Default::default()
        };
        assert_eq!(verdict(&errored), Exit::Unavailable);
    }
}
