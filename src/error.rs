//! The crate-wide error type.

use crate::token::HashError;

/// Everything that can go wrong in the operator. Messages never contain a token value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer, or the reconcile it wraps, failed.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A namespaced object came without a namespace.
    #[error("object has no namespace")]
    MissingNamespace,
    /// An object read from the API server came without a uid.
    #[error("object has no uid")]
    MissingUid,
    /// The watch caches never became ready (the operator is shutting down).
    #[error("watch caches are not ready")]
    StoreNotReady,
    /// The operating system's random generator failed.
    #[error("the operating system's random number generator failed")]
    Randomness,
    /// argon2id hashing failed.
    #[error("hashing failed: {0}")]
    Hash(#[from] HashError),
    /// Serializing a resource failed.
    #[error("serialization error: {0}")]
    Serialization(#[from] serde_json::Error),
    /// Rendering YAML failed.
    #[error("YAML error: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// Reading or writing a local file failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
