//! Crash injection for the crash-safety tests: with `ATO_CRASH_AT=<point>` in the
//! environment, the process aborts the first time it reaches that point, exactly as a
//! SIGKILL or an OOM kill would end it there. Unset (always, in production) it costs one
//! comparison against a cached `None`.

use std::sync::OnceLock;

/// The named points, in the order an issue passes them, then those of a rotation.
pub const POINTS: [&str; 5] = [
    "credential-staged",
    "secret-written",
    "user-applied",
    "rotation-staged",
    "rotation-secret-written",
];

/// Aborts the process if `ATO_CRASH_AT` names `point`.
pub fn reached(point: &'static str) {
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    let crash_at = CRASH_AT.get_or_init(|| std::env::var("ATO_CRASH_AT").ok());
    if crash_at.as_deref() == Some(point) {
        debug_assert!(POINTS.contains(&point));
        eprintln!("ATO_CRASH_AT={point}: aborting on purpose");
        std::process::abort();
    }
}
