//! DESIGN.md, "Operations": probes and metrics, leader election, the Argo CD health check.

// `health` is used by the plugin tests too.
pub(crate) mod argocd_health;
mod leader;
mod observability;
