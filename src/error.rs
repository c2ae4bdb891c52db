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
    Yaml(#[from] serde_saphyr::SerializeError),
    /// Leader election failed or the Lease was lost.
    #[error("leader election: {0}")]
    LeaderElection(String),
    /// A flag or setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The verifier's server failed.
    #[error(transparent)]
    Verifier(#[from] crate::verifier::server::ServeError),
    /// Reading or writing a local file failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A note for a Warning Event: the kind of failure, without the API server's message
    /// text (which could quote what an admission webhook saw). Logs keep the full error.
    pub fn event_note(&self) -> String {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Kube(kube::Error::Api(status)) => {
                format!(
                    "Kubernetes API request failed: {} {}",
                    status.code, status.reason
                )
            }
            Error::Kube(_) => "could not reach the Kubernetes API".to_string(),
            Error::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(error) | F::CleanupFailed(error) => error.event_note(),
                F::AddFinalizer(_) | F::RemoveFinalizer(_) => {
                    "could not update the finalizer".to_string()
                }
                other => other.to_string(),
            },
            other => other.to_string(),
        }
    }

    /// A write lost a race with another write (409 Conflict, or 422 from a finalizer patch
    /// whose `test` against a stale cached object failed). Retrying with fresh state is the
    /// whole fix, so it is not worth a Warning Event.
    pub fn is_write_conflict(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        let api_code = |error: &kube::Error| match error {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        };
        match self {
            Error::Kube(error) => api_code(error) == Some(409),
            Error::Finalizer(inner) => match inner.as_ref() {
                F::AddFinalizer(error) | F::RemoveFinalizer(error) => {
                    matches!(api_code(error), Some(409 | 422))
                }
                F::ApplyFailed(error) | F::CleanupFailed(error) => error.is_write_conflict(),
                _ => false,
            },
            _ => false,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
