//! What the processes tell the outside: Prometheus metrics, the probe server and its
//! liveness rule, the per-token series, the `process_*` collector and logging. It imports
//! neither the controller nor the verifier: they hand it what it serves.

pub mod liveness;
pub mod logging;
pub mod metrics;
pub mod probes;
pub mod process;
pub mod token_series;
