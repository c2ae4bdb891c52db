//! Token lifetimes: parsing `spec.lifetime` and computing the effective expiry. No Kubernetes here.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// How long a token lives when its spec sets neither `expiresAt` nor `lifetime`.
pub const DEFAULT_LIFETIME: SignedDuration = SignedDuration::from_hours(90 * 24);

/// Why a lifetime or expiry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLifetime {
    /// Not a whole number followed by m, h, d or w.
    #[error("lifetime {0:?} is not a whole number followed by m, h, d or w (for example 90d)")]
    Format(String),
    /// So long that the expiry would fall outside the representable range of dates.
    #[error("lifetime {0:?} reaches past the latest representable date")]
    TooLong(String),
    /// Asks for an expiry past what the scope's `tokenPolicy.maxLifetime` allows.
    #[error(
        "the token asks to live until {asked}, past the scope's tokenPolicy.maxLifetime (at most until {allowed}); ask for less, or have the platform admins raise the policy"
    )]
    PolicyViolation {
        /// The expiry the spec asks for.
        asked: Timestamp,
        /// The latest expiry the policy allows.
        allowed: Timestamp,
    },
}

impl InvalidLifetime {
    /// The condition and Event reason for a token whose expiry is refused.
    pub fn reason(&self) -> crate::api::Reason {
        match self {
            Self::PolicyViolation { .. } => crate::api::Reason::PolicyViolation,
            Self::Format(_) | Self::TooLong(_) => crate::api::Reason::InvalidSpec,
        }
    }
}

/// Parses a lifetime such as `30m`, `12h`, `90d` or `4w`.
pub fn parse_lifetime(text: &str) -> Result<SignedDuration, InvalidLifetime> {
    let format_error = || InvalidLifetime::Format(text.to_string());
    let split = text.len().checked_sub(1).ok_or_else(format_error)?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || number.starts_with('0') {
        return Err(format_error());
    }
    let count: i64 = number.parse().map_err(|_| format_error())?;
    let seconds_per_unit: i64 = match unit {
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format_error()),
    };
    count
        .checked_mul(seconds_per_unit)
        .map(SignedDuration::from_secs)
        .ok_or_else(|| InvalidLifetime::TooLong(text.to_string()))
}

/// The instant a token stops working: `expires_at` if set, else creation plus `lifetime`,
/// else creation plus [`DEFAULT_LIFETIME`].
pub fn effective_expiry(
    created: Timestamp,
    expires_at: Option<Timestamp>,
    lifetime: Option<&str>,
) -> Result<Timestamp, InvalidLifetime> {
    if let Some(at) = expires_at {
        return Ok(at);
    }
    let duration = match lifetime {
        Some(text) => parse_lifetime(text)?,
        None => DEFAULT_LIFETIME,
    };
    created
        .checked_add(duration)
        .map_err(|_| InvalidLifetime::TooLong(lifetime.unwrap_or_default().to_string()))
}

/// When an AccessToken was created (not yet known, as before its first write: `now`).
pub fn created(token: &crate::api::AccessToken, now: Timestamp) -> Timestamp {
    token
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_lifetime("30m"), Ok(SignedDuration::from_mins(30)));
        assert_eq!(parse_lifetime("12h"), Ok(SignedDuration::from_hours(12)));
        assert_eq!(
            parse_lifetime("90d"),
            Ok(SignedDuration::from_hours(90 * 24))
        );
        assert_eq!(
            parse_lifetime("2w"),
            Ok(SignedDuration::from_hours(14 * 24))
        );
    }

    #[test]
    fn rejects_malformed_lifetimes() {
        for bad in [
            "", "d", "0d", "01d", "1.5d", "-1d", "10y", "10 d", "10D", "d10",
        ] {
            assert!(
                matches!(parse_lifetime(bad), Err(InvalidLifetime::Format(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn expiry_prefers_expires_at_then_lifetime_then_default() {
        let created: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let fixed: Timestamp = "2027-06-30T00:00:00Z".parse().unwrap();
        assert_eq!(effective_expiry(created, Some(fixed), None), Ok(fixed));
        assert_eq!(
            effective_expiry(created, None, Some("1w")),
            Ok("2026-01-08T00:00:00Z".parse().unwrap())
        );
        assert_eq!(
            effective_expiry(created, None, None),
            Ok("2026-04-01T00:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn absurd_lifetimes_are_an_error_not_a_panic() {
        let created: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(matches!(
            effective_expiry(created, None, Some("999999w")),
            Err(InvalidLifetime::TooLong(_))
        ));
    }
}
