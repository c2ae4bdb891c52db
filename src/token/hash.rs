//! Argon2id hashing of tokens, stored as PHC strings.
//!
//! Tokens carry ~190 bits of entropy, so a fast hash would do cryptographically; Argon2id
//! is used anyway so that a leaked hash store stays useless even if token generation is
//! ever weakened, and because PHC strings record their own parameters and salt.

use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};

use super::Token;

/// Upper bound on memory cost (64 MiB), for hashing and verifying: a few concurrent
/// verifications must fit a small pod.
///
/// Stored PHC strings are read back from the cluster; without a bound, anyone able to
/// edit one could make the verifier allocate gigabytes or run for hours.
pub const MAX_MEMORY_KIB: u32 = 64 * 1024;
/// Upper bound on the iteration count, for the same reason as [`MAX_MEMORY_KIB`].
pub const MAX_ITERATIONS: u32 = 64;

/// Argon2id cost parameters.
///
/// The default (m=19456 KiB, t=2, p=1) is the argon2 crate default and OWASP's
/// recommended minimum for Argon2id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory cost in KiB (`m`).
    pub memory_kib: u32,
    /// Number of passes over memory (`t`).
    pub iterations: u32,
    /// Degree of parallelism / lanes (`p`).
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

impl HashParams {
    /// Checks the parameters and builds an Argon2id (v0x13) hasher from them.
    pub fn to_argon2(&self) -> Result<Argon2<'static>, HashError> {
        check_limits(self.memory_kib, self.iterations)?;
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(HashError::InvalidParams)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Checks the parameters without hashing anything (e.g. at startup).
    pub fn validate(&self) -> Result<(), HashError> {
        self.to_argon2().map(drop)
    }
}

/// Why a token could not be hashed. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The Argon2 parameters are out of range.
    #[error("invalid argon2 parameters: {0}")]
    InvalidParams(argon2::Error),
    /// The parameters exceed this crate's safety limits.
    #[error(
        "argon2 parameters too large (limits: memory {MAX_MEMORY_KIB} KiB, {MAX_ITERATIONS} iterations)"
    )]
    ParamsTooLarge,
    /// Hashing itself failed (salt generation, out of memory, ...).
    #[error("argon2 hashing failed: {0}")]
    Hashing(argon2::password_hash::Error),
}

fn check_limits(memory_kib: u32, iterations: u32) -> Result<(), HashError> {
    if memory_kib > MAX_MEMORY_KIB || iterations > MAX_ITERATIONS {
        return Err(HashError::ParamsTooLarge);
    }
    Ok(())
}

/// Hashes the full token string with a fresh random salt; returns a PHC string
/// (`$argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>`).
pub fn hash_token(token: &Token, params: &HashParams) -> Result<String, HashError> {
    let argon2 = params.to_argon2()?;
    let hash = argon2
        .hash_password(token.expose_secret_part().as_bytes())
        .map_err(HashError::Hashing)?;
    Ok(hash.to_string())
}

/// Checks a token against a PHC string, using the parameters recorded in it.
///
/// Anything malformed, unsupported or above the safety limits yields `false`.
pub fn verify_token(token: &Token, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    if check_limits(params.m_cost(), params.t_cost()).is_err() {
        return false;
    }
    // Algorithm, version and params come from `parsed`, not from this instance;
    // the output comparison inside is constant time.
    Argon2::default()
        .verify_password(token.expose_secret_part().as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: HashParams = HashParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn hash_then_verify() {
        let t = Token::generate();
        let phc = hash_token(&t, &FAST).unwrap();
        assert!(verify_token(&t, &phc));
        // Re-parsed token (a fresh value from the wire) verifies too.
        assert!(verify_token(
            &Token::parse(t.expose_secret()).unwrap(),
            &phc
        ));
        assert!(!phc.contains(t.expose_secret()));
    }

    #[test]
    fn other_token_does_not_verify() {
        let phc = hash_token(&Token::generate(), &FAST).unwrap();
        assert!(!verify_token(&Token::generate(), &phc));
    }

    #[test]
    fn salts_differ() {
        let t = Token::generate();
        assert_ne!(
            hash_token(&t, &FAST).unwrap(),
            hash_token(&t, &FAST).unwrap()
        );
    }

    #[test]
    fn malformed_phc_is_false() {
        let t = Token::generate();
        let good = hash_token(&t, &FAST).unwrap();
        let truncated = &good[..good.len() - 5];
        let no_hash = good.rsplit_once('$').unwrap().0;
        let huge_m = good.replace("m=1024", "m=4000000000");
        let huge_t = good.replace("t=1", "t=4000000000");
        let zero_m = good.replace("m=1024", "m=0");
        let bad = [
            "",
            "$",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=1024,t=1,p=1$",
            "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA",
            "$argon2id$v=99$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            truncated,
            no_hash,
            &huge_m,
            &huge_t,
            &zero_m,
        ];
        for phc in bad {
            assert!(!verify_token(&t, phc), "{phc}");
        }
    }

    #[test]
    fn default_params_in_phc() {
        let t = Token::generate();
        let phc = hash_token(&t, &HashParams::default()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_token(&t, &phc));
    }

    #[test]
    fn custom_params_in_phc() {
        let t = Token::generate();
        let params = HashParams {
            memory_kib: 2048,
            iterations: 3,
            parallelism: 2,
        };
        let phc = hash_token(&t, &params).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=2048,t=3,p=2$"), "{phc}");
        assert!(verify_token(&t, &phc));
    }

    #[test]
    fn invalid_params_are_errors() {
        let t = Token::generate();
        for params in [
            HashParams {
                memory_kib: 0,
                ..FAST
            },
            HashParams {
                iterations: 0,
                ..FAST
            },
            HashParams {
                parallelism: 0,
                ..FAST
            },
            HashParams {
                memory_kib: MAX_MEMORY_KIB + 1,
                ..FAST
            },
            HashParams {
                iterations: MAX_ITERATIONS + 1,
                ..FAST
            },
        ] {
            assert!(params.validate().is_err(), "{params:?}");
            assert!(hash_token(&t, &params).is_err(), "{params:?}");
        }
        assert!(HashParams::default().validate().is_ok());
    }

    #[test]
    fn error_messages_do_not_contain_token() {
        let t = Token::generate();
        let err = hash_token(
            &t,
            &HashParams {
                memory_kib: 0,
                ..FAST
            },
        )
        .unwrap_err();
        assert!(!err.to_string().contains(t.expose_secret()));
        assert!(!format!("{err:?}").contains(t.expose_secret()));
    }

    #[test]
    fn the_hash_covers_the_secret_part_as_the_design_says() {
        let t = Token::generate();
        let phc = hash_token(
            &t,
            &HashParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
        )
        .unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(
            Argon2::default()
                .verify_password(t.expose_secret_part().as_bytes(), &parsed)
                .is_ok()
        );
        assert_eq!(t.expose_secret_part().len(), crate::token::SECRET_LEN);
    }
}
