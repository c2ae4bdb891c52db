//! The one runner of command-line tools in tests: `kubectl` (as the admin, with a bearer
//! token, or with a kubeconfig of its own), or another program, with optional stdin.

use std::{ffi::OsString, path::Path, process::Output};

/// A command to run; `run` returns its output, `succeed` its stdout (or fails the test).
pub struct Run {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    current_dir: Option<std::path::PathBuf>,
    stdin: Option<String>,
}

/// `kubectl <args>` as the admin of the local cluster (`make test` puts the pinned kubectl on PATH).
pub fn kubectl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    Run::program("kubectl", args)
}

impl Run {
    /// `program <args>`.
    pub fn program<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            env: Vec::new(),
            current_dir: None,
            stdin: None,
        }
    }

    /// More arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// Authenticates with `token` (kubectl's `--token`) instead of the admin identity.
    pub fn token(mut self, token: &str) -> Self {
        self.args.push(format!("--token={token}").into());
        self
    }

    /// Uses `kubeconfig` instead of the caller's KUBECONFIG.
    pub fn kubeconfig(self, kubeconfig: &Path) -> Self {
        self.env("KUBECONFIG", kubeconfig)
    }

    /// An environment variable.
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.current_dir = Some(dir.to_path_buf());
        self
    }

    /// Writes `text` to its stdin (otherwise stdin is empty).
    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_string());
        self
    }

    /// Runs it to its end.
    pub async fn run(self) -> Output {
        use std::process::Stdio;
        use tokio::io::AsyncWriteExt as _;
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args).envs(self.env.iter().cloned());
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        let mut child = command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} runs: {e}", self.program.to_string_lossy()));
        if let (Some(text), Some(mut input)) = (&self.stdin, child.stdin.take()) {
            input
                .write_all(text.as_bytes())
                .await
                .expect("stdin writes");
        }
        child.wait_with_output().await.expect("the command ends")
    }

    /// Runs it and returns its stdout; fails the test with its output unless it succeeded.
    pub async fn succeed(self) -> String {
        let what = format!(
            "{} {}",
            self.program.to_string_lossy(),
            self.args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let output = self.run().await;
        assert!(
            output.status.success(),
            "{what} failed ({}):\n{}\n{}",
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }
}

/// Command output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
