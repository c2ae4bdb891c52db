//! DESIGN.md, "API group and kinds": the manifests the API server refuses, the Secret's kubeconfig.

mod bad_manifests;
mod secret_kubeconfig;
