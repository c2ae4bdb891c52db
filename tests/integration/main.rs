//! Integration tests against a real local control plane (etcd, kube-apiserver,
//! kube-controller-manager) and the operator binary running as a process. Run them with
//! `make test`, which starts the control plane, points KUBECONFIG at it and tears it down.
//!
//! All namespace-level tests live in this one test binary so that they share one control
//! plane and one build; each test works in a namespace and cluster-scoped names of its own,
//! with an operator process watching only that namespace. Tests that need a cluster-wide
//! operator live in `tests/cluster_wide`; cargo runs test binaries one at a time.

#[path = "../support/mod.rs"]
mod support;

mod access_tokens;
mod argocd_health;
mod authenticating_proxy;
mod bad_manifests;
mod browser;
mod console;
mod control_plane;
mod crash_safety;
mod edge_cases;
mod hostile_authz;
mod hostile_controller;
mod hostile_partition;
mod hostile_verifier;
mod impersonation_roles;
mod leader;
mod leaks;
mod lifecycle;
mod observability;
mod padding;
mod plugin;
mod plugin_create;
mod plugin_flags;
mod rbac;
mod secret_kubeconfig;
mod verified_record;
mod verifier;
mod verifier_server;
