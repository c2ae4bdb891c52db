//! access-token-operator: declarative API tokens for a multi-tenant platform.
//!
//! `AccessToken` manifests become a `TechnicalUser` (the account holding the token's role)
//! and a `Secret` (the token value, shown nowhere else); a verifier answers who a presented
//! token belongs to. See README.md for the architecture and the field reference.
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod domain;
pub mod error;
pub mod hasher;
pub mod impersonation;
pub mod kubeconfig;
pub mod leader;
pub mod metrics;
pub mod plugin;
pub mod probes;
pub mod process_metrics;
pub mod proxy;
pub mod telemetry;
pub mod token;
pub mod token_metrics;
pub mod verifier;

pub use error::{Error, Result};
