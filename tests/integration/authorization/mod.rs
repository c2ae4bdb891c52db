//! DESIGN.md, "Who may do what (authorization)": the admission policies and RBAC as shipped.

mod hostile_authz;
mod rbac;
