//! Integration tests against a real local control plane (etcd, kube-apiserver,
//! kube-controller-manager). Run them with `make test`, which starts the control plane,
//! points KUBECONFIG at it and tears it down afterwards.
//!
//! All integration tests live in this one test binary so that they share one control plane
//! and one build; each test works in namespaces and cluster-scoped names of its own.

mod control_plane;
mod harness;
