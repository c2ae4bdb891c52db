//! Shared test plumbing: clients for the local control plane, CRD installation, unique
//! names, and waiting on conditions with a deadline (never fixed sleeps).

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};
use tokio::sync::OnceCell;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

fn kubeconfig_path() -> String {
    std::env::var("KUBECONFIG").unwrap_or_else(|_| {
        panic!(
            "KUBECONFIG is not set: integration tests need the local control plane. \
             Run `make test` (or `hack/local-cluster.sh -- cargo test`)."
        )
    })
}

/// An admin client for the local control plane.
pub async fn admin_client() -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("KUBECONFIG is readable");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("KUBECONFIG is valid");
    Client::try_from(config).expect("client builds")
}

/// A client that authenticates with a bearer token instead of the admin identity.
pub async fn client_with_token(token: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("KUBECONFIG is readable");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("KUBECONFIG is valid");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Client::try_from(config).expect("client builds")
}

/// A client acting as `user` (the admin impersonates it), with no groups but
/// `system:authenticated`: a person with exactly the RBAC a test grants `user`.
pub async fn client_as(user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("KUBECONFIG is readable");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("KUBECONFIG is valid");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("client builds")
}

/// An environment variable that the local-cluster launcher sets.
pub fn cluster_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests through `make test`"))
}

static INSTALLED: OnceCell<()> = OnceCell::const_new();

/// The parts of `deploy/` that tests install exactly as shipped: the operator's RBAC, the
/// admission policies and the tenant roles (everything but the Deployment, which needs a node).
pub const DEPLOY_MANIFESTS: [&str; 3] = [
    "deploy/rbac.yaml",
    "deploy/admission-policies.yaml",
    "deploy/tenant-roles.yaml",
];

/// Installs the CRDs from `crds/` (as a user would, from the checked-in file, not from the
/// Rust types) and `DEPLOY_MANIFESTS`, once per test run, and waits until the API server
/// has established the CRDs.
pub async fn install_crds() {
    INSTALLED
        .get_or_init(|| async {
            let client = admin_client().await;
            let api = Api::<CustomResourceDefinition>::all(client.clone());
            let yaml = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/crds/access-token-operator.yaml"
            ))
            .expect("crds/ is readable");
            let crds: Vec<CustomResourceDefinition> =
                serde_saphyr::from_multiple(&yaml).expect("crds/ holds CRDs");
            for crd in crds {
                let name = crd.name_any();
                api.patch(
                    &name,
                    &PatchParams::apply("integration-tests").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .unwrap_or_else(|e| panic!("CRD {name} applies: {e}"));
                within(
                    DEADLINE,
                    await_condition(api.clone(), &name, conditions::is_crd_established()),
                )
                .await
                .expect("watch works");
            }
            for path in DEPLOY_MANIFESTS {
                apply_manifests(&client, path).await;
            }
        })
        .await;
}

/// Applies every document of a YAML file in this repository with server-side apply.
pub async fn apply_manifests(client: &Client, path: &str) {
    let yaml = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path} is readable: {e}"));
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery works");
    let objects: Vec<kube::api::DynamicObject> = serde_saphyr::from_multiple(&yaml)
        .unwrap_or_else(|e| panic!("{path} holds manifests: {e}"));
    for object in objects {
        let types = object.types.as_ref().expect("manifests name their kind");
        let gvk = kube::api::GroupVersionKind::try_from(types).expect("a valid apiVersion");
        let (resource, capabilities) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("the API server knows {gvk:?}"));
        let api: Api<kube::api::DynamicObject> = match capabilities.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object.namespace().as_deref().unwrap_or("default"),
                &resource,
            ),
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &object.name_any(),
            &PatchParams::apply("integration-tests").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("{} from {path} applies: {e}", object.name_any()));
    }
}

/// Namespace and name of the operator's ServiceAccount in `deploy/rbac.yaml`.
pub const OPERATOR_ACCOUNT: (&str, &str) = ("access-token-operator", "access-token-operator");

static OPERATOR_KUBECONFIG: OnceCell<std::path::PathBuf> = OnceCell::const_new();

/// A kubeconfig that authenticates as the operator's ServiceAccount (a token from the
/// TokenRequest API, as the kubelet would mount it), so that tests run the operator and
/// the verifier with exactly the RBAC that ships, never as a cluster admin.
pub async fn operator_kubeconfig() -> std::path::PathBuf {
    OPERATOR_KUBECONFIG
        .get_or_init(|| async {
            install_crds().await;
            let token = service_account_token(OPERATOR_ACCOUNT.0, OPERATOR_ACCOUNT.1).await;
            kubeconfig_with_token("operator-service-account", &token)
        })
        .await
        .clone()
}

/// A token for a ServiceAccount from the TokenRequest API, valid for the whole test run.
pub async fn service_account_token(namespace: &str, name: &str) -> String {
    use k8s_openapi::api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::ServiceAccount,
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(admin_client().await, namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(6 * 3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for ServiceAccount {namespace}/{name}: {e}"))
        .status
        .expect("the TokenRequest has a status")
        .token
        .expect("the TokenRequest carries a token")
}

/// A name nobody else in this test run uses: `<prefix>-<random>`.
pub fn unique_name(prefix: &str) -> String {
    let suffix: String = (0..6)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random_range(0..36)]))
        .collect();
    format!("{prefix}-{suffix}")
}

/// Creates a fresh namespace for one test and returns its name.
pub async fn test_namespace(client: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace is created");
    name
}

/// Awaits `future`, failing the test if it takes longer than `deadline`.
pub async fn within<T>(deadline: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(deadline, future)
        .await
        .unwrap_or_else(|_| panic!("condition not reached within {deadline:?}"))
}

/// Polls `check` until it returns `Some`, failing the test after `DEADLINE` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_for(DEADLINE, what, check).await
}

/// `eventually` with a deadline of the caller's.
pub async fn eventually_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `target/test-logs/`, created if missing: logs, kubeconfigs and scratch files of a run.
pub fn test_logs_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).expect("log dir is writable");
    dir
}

/// Writes a kubeconfig for the local control plane that authenticates with `bearer_token`,
/// to `target/test-logs/<name>.kubeconfig`, and returns its path.
pub fn kubeconfig_with_token(name: &str, bearer_token: &str) -> std::path::PathBuf {
    let mut kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("KUBECONFIG is readable");
    for named in &mut kubeconfig.auth_infos {
        named.auth_info = Some(kube::config::AuthInfo {
            token: Some(bearer_token.to_string().into()),
            ..Default::default()
        });
    }
    let path = test_logs_dir().join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        serde_saphyr::to_string(&kubeconfig).expect("kubeconfig serializes"),
    )
    .expect("kubeconfig is written");
    path
}

/// The operator binary running as a real process against the local control plane, watching
/// one namespace (or all). Killed when dropped (also when a test panics).
pub struct Operator {
    namespace: Option<String>,
    extra_args: Vec<String>,
    crash_at: Option<String>,
    kubeconfig: std::path::PathBuf,
    log_path: std::path::PathBuf,
    child: Option<tokio::process::Child>,
    starts: u32,
}

impl Operator {
    /// Starts the operator for `namespace`; its output goes to `target/test-logs/<namespace>.log`.
    pub async fn start(namespace: &str) -> Self {
        Self::start_with(Some(namespace.to_string()), namespace, None).await
    }

    /// Starts the operator for all namespaces, logging to `target/test-logs/<log_name>.log`.
    #[allow(dead_code)] // only tests/cluster_wide runs a cluster-wide operator
    pub async fn start_cluster_wide(log_name: &str) -> Self {
        Self::start_with(None, log_name, None).await
    }

    /// Every operator runs as the operator's ServiceAccount, under the shipped RBAC.
    async fn start_with(namespace: Option<String>, log_name: &str, crash_at: Option<&str>) -> Self {
        let log_dir = test_logs_dir();
        let mut operator = Self {
            namespace,
            extra_args: Vec::new(),
            crash_at: crash_at.map(str::to_string),
            kubeconfig: operator_kubeconfig().await,
            log_path: log_dir.join(format!("{log_name}.log")),
            child: None,
            starts: 0,
        };
        operator.spawn();
        operator
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file opens");
        self.starts += 1;
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_access-token-operator"));
        command.arg("run");
        if let Some(namespace) = &self.namespace {
            command.args(["--namespace", namespace]);
        }
        command.args(&self.extra_args);
        command.env("KUBECONFIG", &self.kubeconfig);
        // Probes on any free port (many operators run at once); a test that scrapes them
        // passes --probe-bind with a port of its own.
        command.env("PROBE_BIND", "127.0.0.1:0");
        if let Some(point) = &self.crash_at {
            command.env("ATO_CRASH_AT", point);
        }
        let child = command
            .env(
                "RUST_LOG",
                "warn,access_token_operator=debug,kube_runtime=debug,kube_client=debug",
            )
            .stdout(log.try_clone().expect("log file clones"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("operator starts");
        self.child = Some(child);
    }

    /// Starts the operator for `namespace` with extra flags, logging to `<log_name>.log`.
    pub async fn start_with_args(namespace: &str, log_name: &str, args: &[&str]) -> Self {
        let mut operator = Self::start_with(Some(namespace.to_string()), log_name, None).await;
        operator.kill().await;
        operator.extra_args = args.iter().map(|a| a.to_string()).collect();
        operator.spawn();
        operator
    }

    /// Starts the operator for `namespace` with extra flags, reaching the API server through
    /// `kubeconfig` (e.g. one whose server is a proxy a test can cut).
    #[allow(dead_code)] // only some tests partition the operator
    pub async fn start_through(
        namespace: &str,
        log_name: &str,
        args: &[&str],
        kubeconfig: std::path::PathBuf,
    ) -> Self {
        let log_dir = test_logs_dir();
        let mut operator = Self {
            namespace: Some(namespace.to_string()),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            crash_at: None,
            kubeconfig,
            log_path: log_dir.join(format!("{log_name}.log")),
            child: None,
            starts: 0,
        };
        operator.spawn();
        operator
    }

    /// Asks the operator to stop (SIGTERM, as the kubelet would) and waits until it has.
    #[allow(dead_code)] // only some tests stop the operator cleanly
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self
            .child
            .as_ref()
            .and_then(|child| child.id())
            .expect("operator is running");
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
        self.wait_for_exit().await
    }

    /// Waits until the operator process has exited on its own and returns how it ended.
    #[allow(dead_code)] // only some tests expect the operator to stop by itself
    pub async fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("operator was started");
        let status = within(DEADLINE, child.wait()).await.expect("wait works");
        self.child = None;
        status
    }

    /// Starts the operator for `namespace` set to abort when it reaches `point` (see
    /// `ATO_CRASH_AT` in src/controller/crash_point.rs).
    pub async fn start_crashing_at(namespace: &str, point: &str) -> Self {
        Self::start_with(Some(namespace.to_string()), namespace, Some(point)).await
    }

    /// Waits until the operator process has exited on its own; true if it was killed by a signal.
    pub async fn wait_for_crash(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let child = self.child.as_mut().expect("operator was started");
        let status = within(DEADLINE, child.wait()).await.expect("wait works");
        self.child = None;
        status.signal().is_some()
    }

    /// Starts the operator again without crash injection.
    pub async fn start_again(&mut self) {
        self.kill().await;
        self.crash_at = None;
        self.spawn();
    }

    /// Kills the operator with SIGKILL, as a crash would, and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("operator is killed");
        }
    }

    /// Kills the operator and starts it again.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn();
    }

    /// Everything the operator has logged so far, across restarts.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Starts `access-token-operator verifier` on 127.0.0.1:`port` with `kubeconfig` and `flags`,
/// logging (at debug level) to `target/test-logs/<log_name>-verifier.log`; killed when the
/// returned child is dropped.
fn spawn_verifier(
    log_name: &str,
    kubeconfig: &std::path::Path,
    port: &str,
    flags: Vec<std::ffi::OsString>,
) -> (tokio::process::Child, std::path::PathBuf) {
    let log_path = test_logs_dir().join(format!("{log_name}-verifier.log"));
    let log = std::fs::File::create(&log_path).expect("log file opens");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_access-token-operator"))
        .args(["verifier", "--verifier-bind", &format!("127.0.0.1:{port}")])
        .args(flags)
        .env("KUBECONFIG", kubeconfig)
        .env("PROBE_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn,access_token_operator=debug")
        .stdout(log.try_clone().expect("log file clones"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("verifier starts");
    (child, log_path)
}

/// A verifier process serving plain HTTP on a free loopback port, for tests that talk to it
/// directly (no TLS, and not kube-apiserver's webhook port). Killed when dropped.
pub struct LoopbackVerifier {
    _child: tokio::process::Child,
    port: u16,
    http: reqwest::Client,
    log_path: std::path::PathBuf,
}

impl LoopbackVerifier {
    /// Starts `verifier --insecure-http` with `kubeconfig` and `args`, logging to
    /// `target/test-logs/<log_name>-verifier.log`.
    pub fn start(log_name: &str, kubeconfig: &std::path::Path, args: &[&str]) -> Self {
        let port = free_port();
        let mut flags = vec![std::ffi::OsString::from("--insecure-http")];
        flags.extend(args.iter().map(Into::into));
        let (child, log_path) = spawn_verifier(log_name, kubeconfig, &port.to_string(), flags);
        Self {
            _child: child,
            port,
            http: reqwest::Client::new(),
            log_path,
        }
    }

    /// What the verifier has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `http://127.0.0.1:<port>`.
    #[allow(dead_code)] // not every test binary asks
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
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        });
        let url = format!("http://127.0.0.1:{}/tokenreviews", self.port);
        let response = self.http.post(url).json(&body).send().await.ok()?;
        let answer: serde_json::Value = response.json().await.ok()?;
        answer.get("status").cloned()
    }
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
    log_path: std::path::PathBuf,
}

/// How to start a `VerifierProcess` other than with the launcher's defaults.
#[derive(Default)]
pub struct VerifierSetup {
    /// Certificate and key files to serve instead of `ATO_VERIFIER_CERT`/`_KEY`.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
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

    /// Starts the verifier as `setup` says and waits until it reports ready. It requires
    /// client certificates from `ATO_VERIFIER_CLIENT_CA`, as kube-apiserver presents one.
    pub async fn start_with(log_name: &str, setup: VerifierSetup) -> Self {
        let (port_guard, port) = if setup.private_port {
            (None, free_port().to_string())
        } else {
            (
                Some(WEBHOOK_PORT.lock().await),
                cluster_env("ATO_VERIFIER_PORT"),
            )
        };
        let (cert, key) = setup.tls.unwrap_or_else(|| {
            (
                cluster_env("ATO_VERIFIER_CERT").into(),
                cluster_env("ATO_VERIFIER_KEY").into(),
            )
        });
        let kubeconfig = operator_kubeconfig().await;
        let mut flags: Vec<std::ffi::OsString> = vec![
            "--tls-cert-file".into(),
            cert.into(),
            "--tls-key-file".into(),
            key.into(),
            "--client-ca-file".into(),
            cluster_env("ATO_VERIFIER_CLIENT_CA").into(),
        ];
        flags.extend(setup.args.iter().map(Into::into));
        let (child, log_path) = spawn_verifier(log_name, &kubeconfig, &port, flags);
        let verifier = Self {
            child,
            _port: port_guard,
            url: format!("https://127.0.0.1:{port}"),
            log_path,
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
}

impl Drop for VerifierProcess {
    /// Kills the verifier and waits until it is gone, so the next test can bind the port.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        for _ in 0..50 {
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

/// Deletes an object and waits until the API server no longer has it (finalizers done).
pub async fn delete_and_wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.delete(name, &kube::api::DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{name} is deleted: {e}"));
    eventually(&format!("{name} to be gone"), || async {
        api.get_opt(name)
            .await
            .expect("get works")
            .is_none()
            .then_some(())
    })
    .await;
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback binds");
    listener.local_addr().expect("bound address").port()
}

/// How long one test may run before the whole test binary is stopped, so that a regression
/// that hangs (a wait outside `eventually`, a stuck process) fails CI instead of hanging
/// it. `ATO_TEST_TIMEOUT_SECONDS` overrides it.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(600);

/// A per-test timeout: started with the test's fixtures, disarmed when they are dropped.
/// Past the timeout it names the test and exits the process (a thread cannot be cancelled
/// from outside; the launcher then stops everything the test started).
pub struct Watchdog {
    _disarm: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    /// Arms the watchdog for the test running on this thread.
    pub fn arm() -> Self {
        let timeout = std::env::var("ATO_TEST_TIMEOUT_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(TEST_TIMEOUT, Duration::from_secs);
        let test = std::thread::current()
            .name()
            .unwrap_or("a test")
            .to_string();
        let (disarm, disarmed) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            // Dropping the sender (the test's fixtures going away) ends the wait early.
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(timeout)
            {
                // Straight to stderr: libtest captures eprintln! of threads a test spawns.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "{test} still running after {timeout:?}: stopping the test binary"
                );
                std::process::exit(124);
            }
        });
        Self { _disarm: disarm }
    }
}
