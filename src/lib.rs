//! access-token-operator: declarative API tokens for a multi-tenant platform.
//!
//! `AccessToken` manifests become a `TechnicalUser` (the account holding the token's role)
//! and a `Secret` (the token value, shown nowhere else); a verifier answers who a presented
//! token belongs to. `docs/development/architecture.md` says what each folder holds.
#![forbid(unsafe_code)]
// No function outside tests over 60 lines (clippy.toml): decisions stay small and named.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod api;
pub mod controller;
pub mod domain;
pub mod error;
pub mod impersonation;
pub mod listener;
pub mod observability;
pub mod plugin;
pub mod proxy;
pub mod runtime;
pub mod token;
pub mod verifier;

#[cfg(test)]
pub(crate) mod test_support;

pub use error::{Error, Result};
// The paths these had before they moved into folders, for code written against them.
pub use observability::{metrics, probes};
pub use runtime::{hash_pool as hasher, leader};
