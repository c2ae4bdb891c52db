//! `kubectl atk console`: the seed's Organization and Group pages in a browser, served on
//! the user's own machine and acting with the user's kube client, so RBAC and the admission
//! policies decide exactly as for kubectl. See docs/usage/console.md.

mod cluster;
mod html;
mod routes;
mod security;

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, middleware, routing::get, routing::post};
use kube::Client;

use super::{PluginError, PluginResult};

/// Flags of `kubectl atk console`.
#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    /// Address to listen on. Keep it on loopback: the console acts with your credentials.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    /// Port to listen on (default: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Only print the URL; do not open a browser.
    #[arg(long)]
    no_browser: bool,
}

/// What every request handler shares.
#[derive(Clone)]
pub struct ConsoleState {
    client: Client,
    /// The kubeconfig's namespace: where the rules review asks.
    namespace: Arc<str>,
    /// Who the console acts as, for the page header.
    identity: Arc<str>,
    session: Arc<security::Session>,
    /// The `Host` values this console answers to.
    hosts: Arc<[String]>,
    /// `http://host:port`, the only origin whose writes are accepted.
    origin: Arc<str>,
}

fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(routes::start))
        .route("/login", get(security::login))
        .route("/assets/console.js", get(routes::script))
        .route("/assets/console.css", get(routes::stylesheet))
        .route("/{kind}/{name}", get(routes::tokens_tab))
        .route("/organizations/{name}/groups", get(routes::groups_tab))
        .route("/api/{kind}/{name}/rows", get(routes::rows))
        .route("/api/{kind}/{name}/events", get(routes::events))
        .route("/api/{kind}/{name}/tokens", post(routes::create))
        .route("/api/tokens/{namespace}/{name}/{action}", post(routes::act))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .with_state(state)
}

/// The `Host` values a browser sends for this console.
fn hosts_for(bound: SocketAddr) -> Vec<String> {
    let mut hosts = vec![bound.to_string()];
    if bound.ip().is_loopback() {
        hosts.push(format!("localhost:{}", bound.port()));
    }
    hosts
}

/// Serves the console until Ctrl-C; prints its login URL on stdout.
pub async fn serve(client: Client, namespace: String, args: ConsoleArgs) -> PluginResult {
    let identity = cluster::who_am_i(&client).await;
    if !args.address.is_loopback() {
        eprintln!(
            "warning: listening on {}, not loopback: anyone who can reach it and learns the login URL acts as you",
            args.address
        );
    }
    let listener = tokio::net::TcpListener::bind((args.address, args.port))
        .await
        .map_err(|e| {
            PluginError::Unavailable(format!("listening on {}:{}: {e}", args.address, args.port))
        })?;
    let bound = listener
        .local_addr()
        .map_err(|e| PluginError::Unavailable(e.to_string()))?;
    let key = security::random_secret().map_err(|e| PluginError::Unavailable(e.to_string()))?;
    let url = format!("http://{bound}/login?key={key}");
    let state = ConsoleState {
        client,
        namespace: namespace.into(),
        identity: identity.into(),
        session: Arc::new(security::Session::new(key)),
        hosts: hosts_for(bound).into(),
        origin: format!("http://{bound}").into(),
    };
    println!("{url}");
    eprintln!(
        "kubectl atk console: serving on http://{bound} as {}; Ctrl-C stops it. The URL above works once.",
        state.identity
    );
    if !args.no_browser {
        open_browser(&url);
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| PluginError::Unavailable(e.to_string()))?;
    Ok(super::exit::Exit::Ok)
}

/// Opens `url` with the desktop's opener, when there is one; the URL is printed anyway.
fn open_browser(url: &str) {
    for opener in ["xdg-open", "open"] {
        let started = std::process::Command::new(opener)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if started.is_ok() {
            return;
        }
    }
    eprintln!("no browser opener (xdg-open, open) found: open the URL yourself");
}
