//! The operator binary (`access-token-operator run`) as a real process against the local
//! control plane, as its ServiceAccount under the shipped RBAC.

use std::path::PathBuf;

use super::{
    cluster::{OPERATOR_ACCOUNT, operator_kubeconfig, test_logs_dir},
    process::Launch,
    wait::{DEADLINE, within},
};

/// What the operator logs at: enough to follow a reconcile and its API calls.
const OPERATOR_LOG_LEVEL: &str =
    "warn,access_token_operator=debug,kube_runtime=debug,kube_client=debug";

/// The operator running as a process, watching one namespace (or all). Killed when dropped
/// (also when a test panics).
pub struct Operator {
    launch: Launch,
    crash_at: Option<String>,
    log_path: PathBuf,
    child: Option<tokio::process::Child>,
}

/// How to start an [`Operator`]: `Operator::builder(ns).args(..).through(kubeconfig).crash_at(point).start()`.
pub struct OperatorBuilder {
    namespace: Option<String>,
    log_name: String,
    args: Vec<String>,
    crash_at: Option<String>,
    kubeconfig: Option<PathBuf>,
}

impl OperatorBuilder {
    /// Logs to `target/test-logs/<log_name>.log` (default: the namespace).
    pub fn log_name(mut self, log_name: &str) -> Self {
        self.log_name = log_name.to_string();
        self
    }

    /// Extra flags of `run`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Elects its leader on the Lease `lease` in the operator's namespace (where its Role
    /// allows Leases), as the replica `instance` when given. Tests name a Lease of their own
    /// so that other tests' operators do not compete for it.
    pub fn leader_election(self, lease: &str, instance: Option<&str>) -> Self {
        let elected = self.args(&[
            "--leader-elect",
            "--leader-election-namespace",
            OPERATOR_ACCOUNT.0,
            "--leader-election-lease-name",
            lease,
        ]);
        match instance {
            Some(id) => elected.args(&["--instance", id]),
            None => elected,
        }
    }

    /// Reaches the API server through `kubeconfig` (e.g. one whose server is a proxy a test
    /// can cut) instead of the ServiceAccount's.
    pub fn through(mut self, kubeconfig: PathBuf) -> Self {
        self.kubeconfig = Some(kubeconfig);
        self
    }

    /// Aborts when the operator reaches `point` (see `ATO_CRASH_AT` in
    /// src/controller/access_token/crash_point.rs).
    pub fn crash_at(mut self, point: &str) -> Self {
        self.crash_at = Some(point.to_string());
        self
    }

    /// Starts the process.
    pub async fn start(self) -> Operator {
        let kubeconfig = match self.kubeconfig {
            Some(kubeconfig) => kubeconfig,
            None => operator_kubeconfig().await,
        };
        let log_path = test_logs_dir().join(format!("{}.log", self.log_name));
        let mut launch = Launch::operator_binary(&["run"]);
        if let Some(namespace) = &self.namespace {
            launch = launch.args(&["--namespace", namespace]);
        }
        let launch = launch
            .args(&self.args)
            .kubeconfig(&kubeconfig)
            .env("RUST_LOG", OPERATOR_LOG_LEVEL)
            .log_to(log_path.clone());
        let mut operator = Operator {
            launch,
            crash_at: self.crash_at,
            log_path,
            child: None,
        };
        operator.spawn();
        operator
    }
}

impl Operator {
    /// An operator for `namespace`; `start` it.
    pub fn builder(namespace: &str) -> OperatorBuilder {
        OperatorBuilder {
            namespace: Some(namespace.to_string()),
            log_name: namespace.to_string(),
            args: Vec::new(),
            crash_at: None,
            kubeconfig: None,
        }
    }

    /// An operator for all namespaces, logging to `target/test-logs/<log_name>.log`.
    pub fn cluster_wide(log_name: &str) -> OperatorBuilder {
        OperatorBuilder {
            namespace: None,
            ..Self::builder(log_name)
        }
    }

    /// Starts the operator for `namespace`; its output goes to `target/test-logs/<namespace>.log`.
    pub async fn start(namespace: &str) -> Self {
        Self::builder(namespace).start().await
    }

    fn spawn(&mut self) {
        let launch = match &self.crash_at {
            Some(point) => self.launch.clone().env("ATO_CRASH_AT", point),
            None => self.launch.clone(),
        };
        self.child = Some(launch.spawn());
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|child| child.id())
            .expect("operator is running")
    }

    /// Asks the operator to stop (SIGTERM, as the kubelet would) and waits until it has.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid();
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
        self.wait_for_exit().await
    }

    /// Waits until the operator process has exited on its own and returns how it ended.
    pub async fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("operator was started");
        let status = within(DEADLINE, child.wait()).await.expect("wait works");
        self.child = None;
        status
    }

    /// Waits until the operator process has exited on its own; true if it was killed by a signal.
    pub async fn wait_for_crash(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        self.wait_for_exit().await.signal().is_some()
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
