//! The one launcher of processes under test: the operator binary (as `run` or `verifier`)
//! or another program, with its flags, environment and output, killed when dropped.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Stdio,
};

/// Where a launched process's output goes.
#[derive(Clone)]
enum Output {
    /// Appended to a file (across restarts of the same process).
    Log(PathBuf),
    /// Discarded but for errors, which go to the caller's stderr (the benches').
    ErrorsOnly,
}

/// What to start and how; `spawn` may be called again to restart it the same way.
#[derive(Clone)]
pub struct Launch {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    output: Output,
}

impl Launch {
    /// This build's `access-token-operator` binary with `args`, its probes on any free port
    /// (many processes run at once; a test that scrapes them passes `--probe-bind`).
    pub fn operator_binary(args: &[&str]) -> Self {
        Self::binary_at(env!("CARGO_BIN_EXE_access-token-operator"), args)
    }

    /// `operator_binary`, from a copy of it at `path` (a bench restarts what it measured).
    pub fn binary_at(path: impl Into<OsString>, args: &[&str]) -> Self {
        Self::program(path, args).env("PROBE_BIND", "127.0.0.1:0")
    }

    /// Runs `binary` instead, e.g. a copy of the operator binary.
    pub fn binary(mut self, binary: impl Into<OsString>) -> Self {
        self.program = binary.into();
        self
    }

    /// Logs warnings and errors only (the benches: logging is not what they measure).
    pub fn quiet(self) -> Self {
        self.env("RUST_LOG", "warn")
    }

    /// Any program with `args`; its output is discarded but for errors until `log_to`.
    pub fn program(program: impl Into<OsString>, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(Into::into).collect(),
            env: Vec::new(),
            output: Output::ErrorsOnly,
        }
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More arguments.
    pub fn args<S: Into<OsString> + Clone>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().cloned().map(Into::into));
        self
    }

    /// An environment variable.
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Authenticates with `kubeconfig` instead of the caller's KUBECONFIG.
    pub fn kubeconfig(self, kubeconfig: &Path) -> Self {
        self.env("KUBECONFIG", kubeconfig)
    }

    /// Appends stdout and stderr to `path`.
    pub fn log_to(mut self, path: PathBuf) -> Self {
        self.output = Output::Log(path);
        self
    }

    /// Starts it; the child is killed when dropped (also when a test panics).
    pub fn spawn(&self) -> tokio::process::Child {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args).envs(self.env.iter().cloned());
        match &self.output {
            Output::Log(path) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("log file opens");
                command
                    .stdout(log.try_clone().expect("log file clones"))
                    .stderr(log);
            }
            Output::ErrorsOnly => {
                command.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
        }
        command
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.program.to_string_lossy()))
    }
}

/// A loopback port nothing listens on right now, never handed out before in this test
/// process and never one of the local cluster's own (the webhook port, which is unbound
/// between the tests that take turns serving it): many tests pick ports at once (audit F8).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Option<std::collections::HashSet<u16>>> =
        std::sync::Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().expect("lock");
    let taken = handed_out.get_or_insert_with(|| {
        ["ATO_VERIFIER_PORT", "ATO_API_PORT"]
            .iter()
            .filter_map(|name| std::env::var(name).ok()?.parse().ok())
            .collect()
    });
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback binds");
        let port = listener.local_addr().expect("bound address").port();
        if taken.insert(port) {
            return port;
        }
    }
}

/// A process's resident memory, in MiB, from `/proc/<pid>/status`: now and at its peak.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS`.
    pub rss: f64,
    /// `VmHWM`, the peak resident set since the process started.
    pub peak: f64,
    /// `RssAnon`: the resident set but the mapped files (the binary's code among them).
    pub anon: f64,
}

impl Memory {
    /// The memory of process `pid` (zeros if it is gone).
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mib = |field: &str| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        Memory {
            rss: mib("VmRSS:"),
            peak: mib("VmHWM:"),
            anon: mib("RssAnon:"),
        }
    }
}
