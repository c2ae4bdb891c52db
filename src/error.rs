//! The crate-wide error type.

/// Everything that can go wrong in the operator. Messages never contain a token value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
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
