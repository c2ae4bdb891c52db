//! The verifier (`access-token-operator verifier`) as a real process: on a loopback port of
//! its own, or on kube-apiserver's webhook port over TLS.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use super::{
    cluster::{cluster_env, operator_kubeconfig, test_logs_dir},
    process::{Launch, free_port},
    wait::eventually,
};

/// `access-token-operator verifier` serving 127.0.0.1:`port`; TLS or `--insecure-http` flags
/// are the caller's.
pub fn verifier_on(port: u16) -> Launch {
    Launch::operator_binary(&["verifier", "--verifier-bind", &format!("127.0.0.1:{port}")])
}

/// `verifier_on` over TLS with the local control plane's serving certificate
/// (`ATO_VERIFIER_CERT`/`_KEY`), requiring no client certificate: as the benches run it.
pub fn tls_verifier_on(port: u16) -> Launch {
    verifier_on(port).args(&[
        "--tls-cert-file",
        &cluster_env("ATO_VERIFIER_CERT"),
        "--tls-key-file",
        &cluster_env("ATO_VERIFIER_KEY"),
    ])
}

/// Starts the verifier on 127.0.0.1:`port` with `kubeconfig` and `flags`, logging (at debug
/// level) to a fresh `target/test-logs/<log_name>-verifier.log`; killed when the returned
/// child is dropped.
/// A started verifier: its process, log file and probe port (where its metrics are).
struct Spawned {
    child: tokio::process::Child,
    log_path: PathBuf,
    probe_url: String,
}

fn spawn_verifier(log_name: &str, kubeconfig: &Path, port: u16, flags: Vec<OsString>) -> Spawned {
    let log_path = test_logs_dir().join(format!("{log_name}-verifier.log"));
    let _ = std::fs::remove_file(&log_path);
    let probe = free_port();
    let child = verifier_on(port)
        .args(&flags)
        .env("PROBE_BIND", format!("127.0.0.1:{probe}"))
        .kubeconfig(kubeconfig)
        .env("RUST_LOG", "warn,access_token_operator=debug")
        .log_to(log_path.clone())
        .spawn();
    Spawned {
        child,
        log_path,
        probe_url: format!("http://127.0.0.1:{probe}"),
    }
}

/// The metrics page a verifier serves on its probe port (empty until it answers).
async fn metrics_page(probe_url: &str) -> String {
    let response = reqwest::get(format!("{probe_url}/metrics")).await;
    match response {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A verifier process serving plain HTTP on a free loopback port, for tests that talk to it
/// directly (no TLS, and not kube-apiserver's webhook port). Killed when dropped.
pub struct LoopbackVerifier {
    child: tokio::process::Child,
    port: u16,
    http: reqwest::Client,
    log_path: PathBuf,
    probe_url: String,
}

impl LoopbackVerifier {
    /// Starts `verifier --insecure-http` with `kubeconfig` and `args`, logging to
    /// `target/test-logs/<log_name>-verifier.log`.
    pub fn start(log_name: &str, kubeconfig: &Path, args: &[&str]) -> Self {
        let port = free_port();
        let mut flags = vec![OsString::from("--insecure-http")];
        flags.extend(args.iter().map(Into::into));
        let spawned = spawn_verifier(log_name, kubeconfig, port, flags);
        Self {
            child: spawned.child,
            port,
            http: reqwest::Client::new(),
            log_path: spawned.log_path,
            probe_url: spawned.probe_url,
        }
    }

    /// Its metrics page, from its probe port (empty until it answers).
    pub async fn metrics(&self) -> String {
        metrics_page(&self.probe_url).await
    }

    /// What the verifier has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("verifier is running")
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The status code of `/readyz`, if the verifier answers at all.
    pub async fn ready_status(&self) -> Option<u16> {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let response = self.http.get(url).send().await.ok()?;
        Some(response.status().as_u16())
    }

    /// The `status` of a TokenReview of `token`, if the verifier answers.
    pub async fn review(&self, token: &str) -> Option<serde_json::Value> {
        let endpoint = format!("http://127.0.0.1:{}/tokenreviews", self.port);
        token_review(&self.http, &endpoint, token).await
    }
}

/// The `status` of a TokenReview of `token` posted to `endpoint` (a verifier's
/// `.../tokenreviews`), if it answers with JSON.
pub async fn token_review(
    http: &reqwest::Client,
    endpoint: &str,
    token: &str,
) -> Option<serde_json::Value> {
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    });
    let response = http.post(endpoint).json(&body).send().await.ok()?;
    let answer: serde_json::Value = response.json().await.ok()?;
    answer.get("status").cloned()
}

/// kube-apiserver asks the verifier on one fixed port, so one test at a time may serve it.
static WEBHOOK_PORT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The verifier (`access-token-operator verifier`) serving kube-apiserver's webhook port over
/// TLS, as a real process. Holds the port until dropped; killed when dropped.
pub struct VerifierProcess {
    child: tokio::process::Child,
    _port: Option<tokio::sync::MutexGuard<'static, ()>>,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    log_path: PathBuf,
    probe_url: String,
}

/// How to start a `VerifierProcess` other than with the launcher's defaults.
#[derive(Default)]
pub struct VerifierSetup {
    /// Certificate and key files to serve instead of `ATO_VERIFIER_CERT`/`_KEY`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// More flags.
    pub args: Vec<String>,
    /// Serve a port of its own instead of kube-apiserver's webhook port (no wait for it, and
    /// no kube-apiserver connections mixed into what the test observes).
    pub private_port: bool,
}

impl VerifierProcess {
    /// Starts the verifier on the webhook port and waits until it reports ready.
    pub async fn start(log_name: &str) -> Self {
        Self::start_with(log_name, VerifierSetup::default()).await
    }

    /// Starts the verifier on a port of its own, with the default setup.
    pub async fn start_private(log_name: &str) -> Self {
        let setup = VerifierSetup {
            private_port: true,
            ..Default::default()
        };
        Self::start_with(log_name, setup).await
    }

    /// Starts the verifier as `setup` says and waits until it reports ready. It requires
    /// client certificates from `ATO_VERIFIER_CLIENT_CA`, as kube-apiserver presents one.
    pub async fn start_with(log_name: &str, setup: VerifierSetup) -> Self {
        let (port_guard, port) = if setup.private_port {
            (None, free_port())
        } else {
            let port = cluster_env("ATO_VERIFIER_PORT");
            let port = port.parse().expect("ATO_VERIFIER_PORT is a port");
            (Some(WEBHOOK_PORT.lock().await), port)
        };
        let (cert, key) = setup.tls.unwrap_or_else(|| {
            (
                cluster_env("ATO_VERIFIER_CERT").into(),
                cluster_env("ATO_VERIFIER_KEY").into(),
            )
        });
        let kubeconfig = operator_kubeconfig().await;
        let mut flags: Vec<OsString> = vec![
            "--tls-cert-file".into(),
            cert.into(),
            "--tls-key-file".into(),
            key.into(),
            "--client-ca-file".into(),
            cluster_env("ATO_VERIFIER_CLIENT_CA").into(),
        ];
        flags.extend(setup.args.iter().map(Into::into));
        let spawned = spawn_verifier(log_name, &kubeconfig, port, flags);
        let verifier = Self {
            child: spawned.child,
            _port: port_guard,
            url: format!("https://127.0.0.1:{port}"),
            log_path: spawned.log_path,
            probe_url: spawned.probe_url,
        };
        let client = verifier.http();
        let ready = format!("{}/readyz", verifier.url);
        eventually("the verifier to be ready", || async {
            let response = client.get(&ready).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        verifier
    }

    /// An HTTPS client that trusts the local cluster's CA (which signed the verifier's
    /// certificate) and presents the test client certificate the verifier requires.
    pub fn http(&self) -> reqwest::Client {
        Self::test_client()
    }

    /// The client `http` returns, without a verifier at hand (e.g. to ask the one serving
    /// kube-apiserver's webhook port, `ATO_VERIFIER_PORT`).
    pub fn test_client() -> reqwest::Client {
        Self::http_builder()
            .identity(test_client_identity())
            .build()
            .expect("client builds")
    }

    /// An HTTPS client builder that trusts the local cluster's CA and presents no certificate.
    pub fn http_builder() -> reqwest::ClientBuilder {
        let ca = std::fs::read(cluster_env("ATO_CLUSTER_CA")).expect("CA is readable");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA parses"))
    }

    /// What the verifier has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("verifier is running")
    }

    /// Its metrics page, from its probe port (empty until it answers).
    pub async fn metrics(&self) -> String {
        metrics_page(&self.probe_url).await
    }
}

impl Drop for VerifierProcess {
    /// Kills the verifier and waits until it is gone (up to 10 s: a busy machine may take a
    /// moment to reap it), so the next test can bind the port (audit F9).
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        for _ in 0..500 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The launcher's test client certificate for the verifier (`ATO_VERIFIER_TEST_CLIENT_*`).
pub fn test_client_identity() -> reqwest::Identity {
    let mut pem = std::fs::read(cluster_env("ATO_VERIFIER_TEST_CLIENT_CERT")).expect("readable");
    pem.extend(std::fs::read(cluster_env("ATO_VERIFIER_TEST_CLIENT_KEY")).expect("readable"));
    reqwest::Identity::from_pem(&pem).expect("the test client certificate parses")
}
