//! The crate-wide error type.

use crate::token::HashError;

/// Everything that can go wrong in the operator. Messages never contain a token value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed (outside a reconcile step).
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// A reconcile step's call to the Kubernetes API failed.
    #[error("{step:?} failed: {source}")]
    Api {
        /// The step.
        step: Step,
        /// The API error (logged; Events carry only its code and reason).
        #[source]
        source: kube::Error,
    },
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
    /// The verifier's server failed (boxed: `error` names nothing above it).
    #[error(transparent)]
    Verifier(Box<dyn std::error::Error + Send + Sync>),
    /// Reading or writing a local file failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The step of a reconcile that failed: each has one Event reason and one metric label, so
/// a Warning says what could not be done instead of a generic `ReconcileError`.
#[derive(
    Clone, Copy, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
pub enum Step {
    /// Reading the Organization or Group a token names.
    ReadScope,
    /// Reading the TechnicalUser.
    ReadTechnicalUser,
    /// Reading the Secret.
    ReadSecret,
    /// Listing the tokens of an Organization or Group.
    ListTokens,
    /// Applying the TechnicalUser.
    WriteTechnicalUser,
    /// Creating or replacing the Secret.
    WriteSecret,
    /// Writing status.
    WriteStatus,
    /// Deleting a child on cleanup.
    DeleteChild,
    /// Adding or removing the finalizer.
    Finalizer,
    /// Minting or hashing a token.
    Hash,
    /// Restarting, or reading the rollout of, a rotation's restart target.
    RestartTarget,
    /// Anything else.
    Other,
}

impl Step {
    /// The Warning Event reason for a failure of this step.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ReadScope => "ReadScopeFailed",
            Self::ReadTechnicalUser => "ReadTechnicalUserFailed",
            Self::ReadSecret => "ReadSecretFailed",
            Self::ListTokens => "ListTokensFailed",
            Self::WriteTechnicalUser => "WriteTechnicalUserFailed",
            Self::WriteSecret => "WriteSecretFailed",
            Self::WriteStatus => "WriteStatusFailed",
            Self::DeleteChild => "DeleteChildFailed",
            Self::Finalizer => "FinalizerFailed",
            Self::Hash => "HashFailed",
            Self::RestartTarget => "RestartTargetFailed",
            Self::Other => "ReconcileError",
        }
    }
}

/// Tags a Kubernetes API result with the reconcile step it belongs to.
pub trait AtStep<T> {
    /// The result, its error tagged with `step`.
    fn at(self, step: Step) -> Result<T>;
}

impl<T> AtStep<T> for std::result::Result<T, kube::Error> {
    fn at(self, step: Step) -> Result<T> {
        self.map_err(|source| Error::Api { step, source })
    }
}

impl Error {
    /// The step that failed (its Event reason and metric label).
    pub fn step(&self) -> Step {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Api { step, .. } => *step,
            Error::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(error) | F::CleanupFailed(error) => error.step(),
                _ => Step::Finalizer,
            },
            Error::Hash(_) | Error::Randomness => Step::Hash,
            _ => Step::Other,
        }
    }

    /// A note for a Warning Event: the kind of failure, without the API server's message
    /// text (which could quote what an admission webhook saw). Logs keep the full error.
    pub fn event_note(&self) -> String {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Kube(kube::Error::Api(status))
            | Error::Api {
                source: kube::Error::Api(status),
                ..
            } => {
                format!(
                    "Kubernetes API request failed: {} {}",
                    status.code, status.reason
                )
            }
            Error::Kube(_) | Error::Api { .. } => "could not reach the Kubernetes API".to_string(),
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
            Error::Kube(error) | Error::Api { source: error, .. } => api_code(error) == Some(409),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Forbidden")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn a_failed_step_names_its_reason_and_never_quotes_the_api_message() {
        let error: Result<()> =
            Err(api_error(403, "denied: atk_secretvalue")).at(Step::WriteSecret);
        let error = error.unwrap_err();
        assert_eq!(error.step(), Step::WriteSecret);
        assert_eq!(error.step().reason(), "WriteSecretFailed");
        let note = error.event_note();
        assert!(note.contains("403") && !note.contains("atk_"), "{note}");
        assert!(!error.is_write_conflict());
        let conflict: Result<()> = Err(api_error(409, "stale")).at(Step::WriteStatus);
        assert!(conflict.unwrap_err().is_write_conflict());
    }

    #[test]
    fn a_step_inside_the_finalizer_keeps_its_reason() {
        let inner = Error::Api {
            step: Step::DeleteChild,
            source: api_error(500, "boom"),
        };
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::CleanupFailed(
            inner,
        )));
        assert_eq!(wrapped.step(), Step::DeleteChild);
        assert_eq!(Error::Randomness.step().reason(), "HashFailed");
    }
}
