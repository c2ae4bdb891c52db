//! Waiting on conditions with a deadline (never fixed sleeps), and the per-test watchdog.

use std::{future::Future, time::Duration};

use kube::Api;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

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
pub async fn eventually_for<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_every(Duration::from_millis(100), limit, what, check).await
}

/// Calls `check` every `every` until it gives a value; fails after `limit` with `what`.
/// The benches poll faster or slower than the tests' 100 ms, to time what they measure.
pub async fn poll_every<T, F, Fut>(every: Duration, limit: Duration, what: &str, mut check: F) -> T
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
        tokio::time::sleep(every).await;
    }
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
