//! Why a plugin command failed, how it reads on stderr and which exit code it gives.

use kube::runtime::watcher;

use super::{client::ClientError, exit::Exit};

/// Why a plugin command failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Talking to the API server failed, or it answered with an error.
    #[error("{}", describe_kube(.0))]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be loaded or no client built from it.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The API server or the token says no; the message says why.
    #[error("{0}")]
    Refused(String),
    /// Could not check or finish; the message says what is missing.
    #[error("{0}")]
    Unavailable(String),
}

impl PluginError {
    /// A watch's error, as the API call error underneath it.
    pub fn from_watch(error: watcher::Error) -> Self {
        match error {
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => Self::Kube(e),
            watcher::Error::WatchError(status) => Self::Kube(kube::Error::Api(status)),
            watcher::Error::NoResourceVersion => Self::Unavailable(error.to_string()),
        }
    }

    /// The exit code that tells scripts what kind of failure this was.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Kube(kube::Error::Api(_)) | Self::Refused(_) => Exit::Refused,
            Self::Kube(_) | Self::Client(_) | Self::Unavailable(_) => Exit::Unavailable,
        }
    }
}

/// kubectl's wording for an answer of the API server: `Error from server (Forbidden): ...`.
fn describe_kube(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!(
            "Error from server ({}): {}",
            if status.reason.is_empty() {
                status.code.to_string()
            } else {
                status.reason.clone()
            },
            status.message
        ),
        other => format!("could not reach the API server: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_the_api_server_are_refusals_the_rest_unavailable() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "accesstokens is forbidden: User \"bob\" cannot create resource"
        }))
        .expect("a Status");
        let refused = PluginError::Kube(kube::Error::Api(Box::new(status)));
        assert_eq!(refused.exit(), Exit::Refused);
        assert_eq!(
            refused.to_string(),
            "Error from server (Forbidden): accesstokens is forbidden: User \"bob\" cannot create resource"
        );
        let unreachable = PluginError::Kube(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(unreachable.exit(), Exit::Unavailable);
        assert_eq!(
            PluginError::from_watch(watcher::Error::NoResourceVersion).exit(),
            Exit::Unavailable
        );
    }
}
