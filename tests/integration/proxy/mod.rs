//! DESIGN.md, "Every cluster: the proxy": the authenticating proxy and its impersonation rights.

mod authenticating_proxy;
mod impersonation_roles;
