//! Integration tests against a real local control plane (etcd, kube-apiserver,
//! kube-controller-manager) and the operator binary running as a process. Run them with
//! `make test`, which starts the control plane, points KUBECONFIG at it and tears it down.
//!
//! All integration tests live in this one test binary so that they share one control plane
//! and one build; each test works in a namespace and cluster-scoped names of its own, with
//! an operator process watching only that namespace.

mod access_tokens;
mod control_plane;
mod fixtures;
mod harness;
