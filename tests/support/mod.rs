//! The test-support layer of every test binary and of the benches, included with
//! `#[path = "../support/mod.rs"] mod support;` (benches: `../tests/support/mod.rs`):
//! the local control plane and the one CRD installer (`cluster`), admission policies a test
//! puts in a tenant's way (`admission`), waiting with deadlines
//! (`wait`), the one process launcher (`process`) with the operator and verifier on top
//! (`operator`, `verifier`), the one command runner (`kubectl`), tenants and their tokens
//! (`tenant`), forged tokens (`forgery`), the no-leak check (`leaks`), the RBAC tests grant people (`rbac`), a TCP proxy a test can cut (`proxy`), the benches' results file
//! (`benchmarks`), and the documented metric names (`metrics`).
// Each binary uses the part it needs.
#![allow(dead_code, unused_imports)]

mod admission;
mod benchmarks;
mod cluster;
mod forgery;
mod kubectl;
mod leaks;
mod metrics;
mod operator;
mod process;
mod proxy;
mod rbac;
mod tenant;
mod verifier;
mod wait;

pub use admission::*;
pub use benchmarks::*;
pub use cluster::*;
pub use forgery::*;
pub use kubectl::*;
pub use leaks::*;
pub use metrics::*;
pub use operator::*;
pub use process::*;
pub use proxy::*;
pub use rbac::*;
pub use tenant::*;
pub use verifier::*;
pub use wait::*;
