//! The liveness rule of every process with controllers.
//!
//! A controller is wedged when its watches keep failing (it cannot list or watch, e.g. its
//! RBAC was taken away) with no finished reconcile in between, for longer than the stall
//! limit; or when one reconcile has been running for longer than that while no other
//! reconcile of that controller finished meanwhile (a long queue for the hasher, with
//! reconciles finishing, is progress). A restart is then the kubelet's remedy. A controller
//! that is merely idle is live.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::metrics::ControllerKind;

/// Default for how long a controller may fail to make progress before `/healthz` fails.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(120);

/// Failed watch attempts further apart than this are not one unbroken failure: the
/// controllers' watch backoff retries at least every 5 s, so a longer gap means a list or
/// watch went through in between.
const FAILURE_GAP: Duration = Duration::from_secs(30);

/// A run of failed watch attempts with no progress in between.
#[derive(Clone, Copy, Debug)]
struct Streak {
    since: Instant,
    last: Instant,
}

/// Whether the controllers of this process are making progress.
#[derive(Debug)]
pub struct Progress {
    stall_limit: Mutex<Duration>,
    failing: Mutex<HashMap<ControllerKind, Streak>>,
    running: Mutex<HashMap<u64, (ControllerKind, Instant)>>,
    finished: Mutex<HashMap<ControllerKind, Instant>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            stall_limit: Mutex::new(DEFAULT_STALL_LIMIT),
            failing: Mutex::default(),
            running: Mutex::default(),
            finished: Mutex::default(),
            next_id: Default::default(),
        }
    }
}

impl Progress {
    /// Sets how long a controller may go without progress before it counts as stalled.
    pub fn set_stall_limit(&self, limit: Duration) {
        *self.stall_limit.lock().expect("lock") = limit;
    }

    /// A watch (list or watch request) of `controller` failed at `now`.
    pub fn watch_failed(&self, controller: ControllerKind, now: Instant) {
        let mut failing = self.failing.lock().expect("lock");
        let streak = failing.entry(controller).or_insert(Streak {
            since: now,
            last: now,
        });
        if now.saturating_duration_since(streak.last) > FAILURE_GAP {
            streak.since = now;
        }
        streak.last = now;
    }

    /// `controller` finished a reconcile (successful or not: it could read its objects).
    pub fn progressed(&self, controller: ControllerKind, now: Instant) {
        self.failing.lock().expect("lock").remove(&controller);
        self.finished.lock().expect("lock").insert(controller, now);
    }

    /// Marks a reconcile of `controller` as running until the returned guard is dropped.
    pub fn reconcile_started(self: &Arc<Self>, controller: ControllerKind) -> Running {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.running
            .lock()
            .expect("lock")
            .insert(id, (controller, Instant::now()));
        Running {
            progress: self.clone(),
            id,
        }
    }

    /// Why the controllers count as stalled at `now`, if they do.
    pub fn stalled(&self, now: Instant) -> Option<String> {
        let limit = *self.stall_limit.lock().expect("lock");
        let failing = self.failing.lock().expect("lock");
        for (controller, streak) in failing.iter() {
            let unbroken = now.saturating_duration_since(streak.last) <= FAILURE_GAP;
            let failing_for = now.saturating_duration_since(streak.since);
            if unbroken && failing_for > limit {
                return Some(format!(
                    "the {controller:?} controller's watches have failed for {}s without progress",
                    failing_for.as_secs()
                ));
            }
        }
        drop(failing);
        let finished = self.finished.lock().expect("lock");
        let running = self.running.lock().expect("lock");
        running.values().find_map(|(controller, started)| {
            let running_for = now.saturating_duration_since(*started);
            let finished_lately = finished
                .get(controller)
                .is_some_and(|at| now.saturating_duration_since(*at) <= limit);
            (running_for > limit && !finished_lately).then(|| {
                format!(
                    "a {controller:?} reconcile has been running for {}s",
                    running_for.as_secs()
                )
            })
        })
    }
}

/// A reconcile in progress (see [`Progress::reconcile_started`]).
pub struct Running {
    progress: Arc<Progress>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.progress.running.lock().expect("lock").remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbroken_run_of_watch_failures_longer_than_the_limit_stalls() {
        let progress = Progress::default();
        progress.set_stall_limit(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(progress.stalled(t0).is_none(), "idle is live");
        for s in (0..=12).step_by(4) {
            progress.watch_failed(ControllerKind::AccessToken, at(s));
        }
        let why = progress.stalled(at(12)).expect("failing for 12 s");
        assert!(why.contains("AccessToken"), "{why}");
        // A reconcile that finishes proves the controller can read again.
        progress.progressed(ControllerKind::AccessToken, at(12));
        assert!(progress.stalled(at(12)).is_none());
    }

    #[test]
    fn failures_far_apart_or_long_ago_do_not_stall() {
        let progress = Progress::default();
        progress.set_stall_limit(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // One failure every 40 s: the watch went through in between each time.
        for s in [0, 40, 80] {
            progress.watch_failed(ControllerKind::Group, at(s));
        }
        assert!(progress.stalled(at(80)).is_none());
        // A long streak that stopped failing more than FAILURE_GAP ago: recovered.
        for s in (100..=130).step_by(5) {
            progress.watch_failed(ControllerKind::Group, at(s));
        }
        assert!(progress.stalled(at(130)).is_some());
        assert!(progress.stalled(at(161)).is_none());
    }

    #[test]
    fn a_reconcile_running_past_the_limit_stalls_until_it_ends() {
        let progress = Arc::new(Progress::default());
        progress.set_stall_limit(Duration::from_secs(10));
        let running = progress.reconcile_started(ControllerKind::Organization);
        let now = Instant::now();
        assert!(progress.stalled(now).is_none());
        let why = progress
            .stalled(now + Duration::from_secs(11))
            .expect("stuck");
        assert!(why.contains("Organization"), "{why}");
        drop(running);
        assert!(progress.stalled(now + Duration::from_secs(11)).is_none());
    }

    #[test]
    fn a_long_reconcile_is_no_stall_while_others_of_its_controller_finish() {
        let progress = Arc::new(Progress::default());
        progress.set_stall_limit(Duration::from_secs(10));
        let now = Instant::now();
        let _queued = progress.reconcile_started(ControllerKind::AccessToken);
        // Others finish (a queue for the hasher drains): progress.
        progress.progressed(ControllerKind::AccessToken, now + Duration::from_secs(9));
        assert!(progress.stalled(now + Duration::from_secs(15)).is_none());
        // Nothing finished for longer than the limit: stalled.
        assert!(progress.stalled(now + Duration::from_secs(20)).is_some());
    }
}
