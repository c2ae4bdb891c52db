//! The plugin's exit codes: a script tells "the token is not valid" from "it could not be
//! checked" from "the command line is wrong" from "the API server said no".
//! `docs/usage/kubectl-atk.md` has the same table; keep them together.

use std::process::ExitCode;

/// Why `kubectl atk` stopped, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done; for `whoami`, the token is valid.
    Ok = 0,
    /// `whoami`: the token is not valid (revoked, expired, suspended, deleted, unknown, malformed).
    NotValid = 1,
    /// The command line is wrong (unknown flag, bad value, missing argument): clap's own code.
    Usage = 2,
    /// Could not check or finish: kubeconfig unusable, API server or verifier unreachable or
    /// erroring, a verifier's TokenReview error, `create` still not Active at `--timeout`.
    Unavailable = 3,
    /// The API server answered no (forbidden, not found, already exists, rejected by
    /// validation or admission), or the token cannot be used (e.g. `create` ended Failed).
    Refused = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_usage_is_clap_s() {
        let codes = [
            Exit::Ok,
            Exit::NotValid,
            Exit::Usage,
            Exit::Unavailable,
            Exit::Refused,
        ]
        .map(|e| e as u8);
        assert_eq!(codes, [0, 1, 2, 3, 4]);
        // clap exits with 2 on a usage error; Exit::Usage must say the same.
        let error = clap::Error::new(clap::error::ErrorKind::UnknownArgument);
        assert_eq!(error.exit_code(), Exit::Usage as i32);
    }
}
