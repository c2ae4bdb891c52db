//! Integration tests against a real local control plane (etcd, kube-apiserver,
//! kube-controller-manager) and the operator binary running as a process. Run them with
//! `make test`, which starts the control plane, points KUBECONFIG at it and tears it down.
//!
//! All namespace-level tests live in this one test binary so that they share one control
//! plane and one build; each test works in a namespace and cluster-scoped names of its own,
//! with an operator process watching only that namespace. Tests that need a cluster-wide
//! operator live in `tests/cluster_wide`; cargo runs test binaries one at a time.
//!
//! The folders are named after the sections of the product contract (DESIGN.md) whose
//! behaviour their tests prove; `control_plane` proves the test bench itself is real.

#[path = "../support/mod.rs"]
mod support;

mod api;
mod authorization;
mod behaviour;
mod console;
mod control_plane;
mod lifecycle;
mod never;
mod operations;
mod proxy;
mod verifier;
