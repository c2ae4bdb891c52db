//! Argon2id hashing of tokens, stored as PHC strings.
//!
//! Tokens carry ~190 bits of entropy, so a fast hash would do cryptographically; Argon2id
//! is used anyway because PHC strings record their own parameters and salt, so the cost can
//! change without a migration. Key stretching buys nothing against a 190-bit secret (nobody
//! can search that space, however cheap each guess), so the default cost is the smallest
//! that still makes a full argon2id pass: a password-grade cost would only buy CPU on the
//! login path, for the verifier and for whoever makes it hash.

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
/// The default (m=256 KiB, t=1, p=1) is chosen for 190-bit random secrets, not passwords:
/// about 0.08 ms per hash where the OWASP password cost (m=19456 KiB, t=2, p=1, the
/// previous default) takes about 21 ms (see BENCHMARKS.md).
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
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
        }
    }
}

impl HashParams {
    /// The previous default, OWASP's minimum for passwords: still accepted by the verifier's
    /// default limits, so credentials made with it keep working.
    pub const PASSWORD_GRADE: HashParams = HashParams {
        memory_kib: 19456,
        iterations: 2,
        parallelism: 1,
    };
}

/// The largest argon2id parameters the verifier accepts in a stored PHC string. A
/// credential above them is refused without hashing: whoever can write a PHC string must not
/// be able to choose how long each verification takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    /// Largest memory cost in KiB (`m`).
    pub memory_kib: u32,
    /// Largest number of passes (`t`).
    pub iterations: u32,
    /// Largest number of lanes (`p`).
    pub parallelism: u32,
}

impl Default for HashLimits {
    /// Admits the current default and the previous (password-grade) one, nothing costlier.
    fn default() -> Self {
        let (new, old) = (HashParams::default(), HashParams::PASSWORD_GRADE);
        HashLimits {
            memory_kib: new.memory_kib.max(old.memory_kib),
            iterations: new.iterations.max(old.iterations),
            parallelism: new.parallelism.max(old.parallelism),
        }
    }
}

impl HashLimits {
    /// The crate's hard bounds alone: what a PHC string the operator itself wrote may carry.
    pub const HARD: HashLimits = HashLimits {
        memory_kib: MAX_MEMORY_KIB,
        iterations: MAX_ITERATIONS,
        parallelism: u32::MAX,
    };

    /// Whether parameters are within these limits (and the crate's own hard bounds).
    pub fn admits(&self, params: &HashParams) -> bool {
        params.memory_kib <= self.memory_kib.min(MAX_MEMORY_KIB)
            && params.iterations <= self.iterations.min(MAX_ITERATIONS)
            && params.parallelism <= self.parallelism
    }
}

/// The parameters a PHC string records, if it is a well-formed argon2id (v0x13) hash.
/// Parses only: no hashing.
pub fn phc_params(phc: &str) -> Option<HashParams> {
    let parsed = PasswordHash::new(phc).ok()?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT
        || parsed.version != Some(Version::V0x13.into())
        || parsed.hash.is_none()
    {
        return None;
    }
    let params = Params::try_from(&parsed).ok()?;
    Some(HashParams {
        memory_kib: params.m_cost(),
        iterations: params.t_cost(),
        parallelism: params.p_cost(),
    })
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
    /// A hashing thread could not be started.
    #[error("could not start a hashing thread: {0}")]
    Thread(std::io::Error),
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
/// Anything malformed, unsupported or above the crate's hard bounds yields `false`.
pub fn verify_token(token: &Token, phc: &str) -> bool {
    verify_token_within(token, phc, &HashLimits::HARD)
}

/// Checks a token against a PHC string whose parameters are within `limits`; `false`
/// without hashing for anything malformed, not argon2id v0x13, or above the limits.
pub fn verify_token_within(token: &Token, phc: &str, limits: &HashLimits) -> bool {
    if !phc_params(phc).is_some_and(|params| limits.admits(&params)) {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // Algorithm, version and params come from `parsed`, not from this instance;
    // the output comparison inside is constant time.
    Argon2::default()
        .verify_password(token.expose_secret_part().as_bytes(), &parsed)
        .is_ok()
}

/// argon2's working memory, kept by one hashing thread and reused by each hash it runs
/// (see `crate::runtime::hash_pool`): allocated once at the largest cost seen, instead of once per hash.
#[derive(Default)]
pub struct Workspace(Vec<argon2::Block>);

impl Workspace {
    fn blocks(&mut self, params: &Params) -> &mut [argon2::Block] {
        let count = params.block_count();
        if self.0.len() < count {
            self.0.resize(count, argon2::Block::new());
        }
        &mut self.0[..count]
    }

    /// argon2id (v0x13) of `secret` with `salt` and `params` into `out`, in this memory.
    fn argon2id(
        &mut self,
        params: &Params,
        secret: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        argon2.hash_password_into_with_memory(secret, salt, out, self.blocks(params))
    }
}

/// [`hash_token`] in a reused [`Workspace`].
pub fn hash_token_in(
    token: &Token,
    params: &HashParams,
    workspace: &mut Workspace,
) -> Result<String, HashError> {
    use argon2::password_hash::phc::{Output, ParamsString, Salt};
    check_limits(params.memory_kib, params.iterations)?;
    let argon2_params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(HashError::InvalidParams)?;
    let salt = Salt::generate();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let secret = token.expose_secret_part().as_bytes();
    workspace
        .argon2id(&argon2_params, secret, salt.as_ref(), &mut out)
        .map_err(|e| HashError::Hashing(e.into()))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&argon2_params).map_err(HashError::Hashing)?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|e| HashError::Hashing(e.into()))?),
    };
    Ok(phc.to_string())
}

/// [`verify_token_within`] in a reused [`Workspace`]; the comparison is constant time.
pub fn verify_token_within_in(
    token: &Token,
    phc: &str,
    limits: &HashLimits,
    workspace: &mut Workspace,
) -> bool {
    use argon2::password_hash::phc::Output;
    if !phc_params(phc).is_some_and(|params| limits.admits(&params)) {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected), Ok(params)) =
        (&parsed.salt, &parsed.hash, Params::try_from(&parsed))
    else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let secret = token.expose_secret_part().as_bytes();
    if workspace
        .argon2id(&params, secret, salt.as_ref(), &mut out)
        .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant time.
    Output::new(&out).is_ok_and(|computed| &computed == expected)
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
    fn a_reused_workspace_hashes_and_verifies_as_the_allocating_path_does() {
        let mut workspace = Workspace::default();
        let (a, b) = (Token::generate(), Token::generate());
        // Larger, then smaller, then larger again: the same memory serves each cost.
        for params in [FAST, HashParams::default(), FAST] {
            let reused = hash_token_in(&a, &params, &mut workspace).unwrap();
            let allocated = hash_token(&a, &params).unwrap();
            assert_eq!(phc_params(&reused), Some(params));
            // Each path accepts the other's strings, and refuses another token.
            assert!(verify_token(&a, &reused));
            assert!(verify_token_within_in(
                &a,
                &allocated,
                &HashLimits::HARD,
                &mut workspace
            ));
            assert!(verify_token_within_in(
                &a,
                &reused,
                &HashLimits::HARD,
                &mut workspace
            ));
            assert!(!verify_token_within_in(
                &b,
                &reused,
                &HashLimits::HARD,
                &mut workspace
            ));
            assert!(!reused.contains(a.expose_secret_part()));
        }
    }

    #[test]
    fn a_reused_workspace_refuses_what_is_malformed_or_over_the_limits_without_hashing() {
        let mut workspace = Workspace::default();
        let t = Token::generate();
        let phc = hash_token(&t, &FAST).unwrap();
        let tight = HashLimits {
            memory_kib: FAST.memory_kib - 1,
            ..HashLimits::default()
        };
        assert!(!verify_token_within_in(&t, &phc, &tight, &mut workspace));
        assert!(
            workspace.0.is_empty(),
            "refused before any memory was taken"
        );
        assert!(!verify_token_within_in(
            &t,
            "not a phc string",
            &HashLimits::HARD,
            &mut workspace
        ));
        let cut = &phc[..phc.len() - 4];
        assert!(!verify_token_within_in(
            &t,
            cut,
            &HashLimits::HARD,
            &mut workspace
        ));
    }

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
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{phc}");
        assert!(verify_token(&t, &phc));
    }

    #[test]
    fn default_limits_admit_the_old_and_the_new_default_and_nothing_costlier() {
        let limits = HashLimits::default();
        assert!(limits.admits(&HashParams::default()));
        assert!(limits.admits(&HashParams::PASSWORD_GRADE));
        let old = HashParams::PASSWORD_GRADE;
        for over in [
            HashParams {
                memory_kib: old.memory_kib + 1,
                ..old
            },
            HashParams {
                iterations: old.iterations + 1,
                ..old
            },
            HashParams {
                parallelism: old.parallelism + 1,
                ..old
            },
        ] {
            assert!(!limits.admits(&over), "{over:?}");
        }
    }

    #[test]
    fn phc_parameters_over_the_limits_are_refused_without_hashing() {
        let t = Token::generate();
        let phc = hash_token(&t, &FAST).unwrap();
        assert_eq!(phc_params(&phc), Some(FAST));
        let tight = HashLimits {
            memory_kib: 512,
            iterations: 1,
            parallelism: 1,
        };
        assert!(
            !verify_token_within(&t, &phc, &tight),
            "m=1024 is over a 512 KiB limit"
        );
        assert!(verify_token_within(
            &t,
            &phc,
            &HashLimits {
                memory_kib: 1024,
                ..tight
            }
        ));
        // What an attacker would write to make each check cost seconds: parsed, never run.
        let costly = phc.replace("m=1024,t=1", "m=65536,t=64");
        assert_eq!(phc_params(&costly).map(|p| p.iterations), Some(64));
        assert!(!verify_token_within(&t, &costly, &HashLimits::default()));
        // Other argon2 variants are not what the operator writes: refused.
        let argon2i = phc.replace("$argon2id$", "$argon2i$");
        assert_eq!(phc_params(&argon2i), None);
        // Nor another argon2 version, nor a string without its hash.
        assert_eq!(phc_params(&phc.replace("$v=19$", "$v=16$")), None);
        let without_hash = &phc[..phc.rfind('$').expect("a hash part")];
        assert_eq!(phc_params(without_hash), None);
        assert!(!verify_token_within(&t, &argon2i, &HashLimits::default()));
    }

    #[test]
    fn the_hard_limits_admit_themselves_and_nothing_above() {
        assert!(check_limits(MAX_MEMORY_KIB, MAX_ITERATIONS).is_ok());
        assert!(check_limits(MAX_MEMORY_KIB + 1, 1).is_err());
        assert!(check_limits(1024, MAX_ITERATIONS + 1).is_err());
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
