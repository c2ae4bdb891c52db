//! Scope token policy (docs/concepts/lifecycle.md#token-policy): the effective policy of
//! a token from its Organization's and Group's `tokenPolicy`, and the expiry it allows. Pure,
//! shared by the controller and the verifier so both apply the same cap.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::expiry::{DEFAULT_LIFETIME, InvalidLifetime, effective_expiry, parse_lifetime};
use crate::api::{AccessToken, AccessTokenSpec, Group, Organization, TokenPolicy};

/// How long before expiry a token is ExpiringSoon when no policy says otherwise.
pub const DEFAULT_EXPIRY_WARNING: SignedDuration = SignedDuration::from_hours(7 * 24);

/// The policy that applies to one token: its organization's, tightened by its group's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectivePolicy {
    /// No token lives longer than this from its creation.
    pub max_lifetime: Option<SignedDuration>,
    /// Lifetime of a token that sets neither `expiresAt` nor `lifetime`.
    pub default_lifetime: SignedDuration,
    /// ExpiringSoon turns True this long before expiry.
    pub expiry_warning: SignedDuration,
    /// Unused this long: suspended.
    pub idle_timeout: Option<SignedDuration>,
}

impl Default for EffectivePolicy {
    fn default() -> Self {
        Self {
            max_lifetime: None,
            default_lifetime: DEFAULT_LIFETIME,
            expiry_warning: DEFAULT_EXPIRY_WARNING,
            idle_timeout: None,
        }
    }
}

fn parsed(text: Option<&String>) -> Option<SignedDuration> {
    // The schema refuses malformed values; one that slipped in (an object stored before the
    // rule) counts as unset rather than stopping every token of the scope.
    text.and_then(|t| parse_lifetime(t).ok())
}

fn shorter(a: Option<SignedDuration>, b: Option<SignedDuration>) -> Option<SignedDuration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The tighter of an organization's and a group's policy: the shorter `maxLifetime`,
/// `defaultLifetime` and `idleTimeout`, the longer `expiryWarning` (an earlier warning).
/// The default lifetime never exceeds the maximum.
pub fn combine(organization: Option<&TokenPolicy>, group: Option<&TokenPolicy>) -> EffectivePolicy {
    let field = |get: Getter| {
        (
            parsed(organization.and_then(get)),
            parsed(group.and_then(get)),
        )
    };
    let (org_max, grp_max) = field(|p| p.max_lifetime.as_ref());
    let (org_default, grp_default) = field(|p| p.default_lifetime.as_ref());
    let (org_warning, grp_warning) = field(|p| p.expiry_warning.as_ref());
    let (org_idle, grp_idle) = field(|p| p.idle_timeout.as_ref());
    let max_lifetime = shorter(org_max, grp_max);
    let default_lifetime = shorter(org_default, grp_default).unwrap_or(DEFAULT_LIFETIME);
    EffectivePolicy {
        max_lifetime,
        default_lifetime: max_lifetime.map_or(default_lifetime, |max| default_lifetime.min(max)),
        expiry_warning: match (org_warning, grp_warning) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b).unwrap_or(DEFAULT_EXPIRY_WARNING),
        },
        idle_timeout: shorter(org_idle, grp_idle),
    }
}

/// Reads one duration field of a policy.
type Getter = fn(&TokenPolicy) -> Option<&String>;

/// The fields of a group's policy that are looser than its organization's and so have no
/// effect (a group can only tighten): reported in the Group's status.
pub fn looser_fields(
    organization: Option<&TokenPolicy>,
    group: Option<&TokenPolicy>,
) -> Vec<&'static str> {
    let (Some(org), Some(grp)) = (organization, group) else {
        return Vec::new();
    };
    let fields: [(&str, Getter, bool); 4] = [
        ("maxLifetime", |p| p.max_lifetime.as_ref(), true),
        ("defaultLifetime", |p| p.default_lifetime.as_ref(), true),
        ("expiryWarning", |p| p.expiry_warning.as_ref(), false),
        ("idleTimeout", |p| p.idle_timeout.as_ref(), true),
    ];
    fields
        .into_iter()
        .filter(
            |(_, get, longer_is_looser)| match (parsed(get(org)), parsed(get(grp))) {
                (Some(o), Some(g)) => {
                    if *longer_is_looser {
                        g > o
                    } else {
                        g < o
                    }
                }
                _ => false,
            },
        )
        .map(|(name, _, _)| name)
        .collect()
}

/// The effective policy of a token with `spec`, from the scope objects it names (for a
/// group token, the group and the group's organization). Missing objects contribute nothing.
pub fn of_scope(
    spec: &AccessTokenSpec,
    organization: impl Fn(&str) -> Option<std::sync::Arc<Organization>>,
    group: impl Fn(&str) -> Option<std::sync::Arc<Group>>,
) -> EffectivePolicy {
    let grp = spec.group.as_deref().and_then(&group);
    let org_name = spec
        .organization
        .clone()
        .or_else(|| grp.as_ref().map(|g| g.spec.organization.clone()));
    let org = org_name.as_deref().and_then(organization);
    combine(
        org.as_ref().and_then(|o| o.spec.token_policy.as_ref()),
        grp.as_ref().and_then(|g| g.spec.token_policy.as_ref()),
    )
}

/// A token's expiry under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyExpiry {
    /// The expiry that applies: what the spec asks, capped at creation plus `maxLifetime`.
    pub expires_at: Timestamp,
    /// What the spec asks for, if the cap moved it earlier.
    pub capped_from: Option<Timestamp>,
}

/// The expiry of a token under `policy`, its life counted from its last rotation
/// (`status.rotatedAt`) or else its creation: see [`token_expiry_from`].
pub fn token_expiry(
    token: &AccessToken,
    policy: &EffectivePolicy,
    now: Timestamp,
) -> Result<PolicyExpiry, InvalidLifetime> {
    let rotated = token.status.as_ref().and_then(|s| s.rotated_at.as_ref());
    let born = rotated.map_or_else(|| super::expiry::created(token, now), |t| t.0);
    token_expiry_from(token, policy, born)
}

/// The expiry of a token born (created or last rotated) at `born` under `policy`:
/// `expiresAt`, else `born` plus `lifetime`, else `born` plus the policy's default lifetime;
/// never later than `born` plus `maxLifetime`.
pub fn token_expiry_from(
    token: &AccessToken,
    policy: &EffectivePolicy,
    born: Timestamp,
) -> Result<PolicyExpiry, InvalidLifetime> {
    let created = born;
    let asked = match (&token.spec.expires_at, &token.spec.lifetime) {
        (None, None) => created
            .checked_add(policy.default_lifetime)
            .map_err(|_| InvalidLifetime::TooLong(String::new()))?,
        (expires_at, lifetime) => effective_expiry(
            created,
            expires_at.as_ref().map(|t| t.0),
            lifetime.as_deref(),
        )?,
    };
    let cap = policy
        .max_lifetime
        .and_then(|max| created.checked_add(max).ok());
    Ok(match cap {
        Some(cap) if asked > cap => PolicyExpiry {
            expires_at: cap,
            capped_from: Some(asked),
        },
        _ => PolicyExpiry {
            expires_at: asked,
            capped_from: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn policy(max: Option<&str>, default: Option<&str>, warning: Option<&str>) -> TokenPolicy {
        TokenPolicy {
            max_lifetime: max.map(Into::into),
            default_lifetime: default.map(Into::into),
            expiry_warning: warning.map(Into::into),
            idle_timeout: None,
        }
    }

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * n)
    }

    #[test]
    fn a_group_only_tightens_its_organization() {
        let org = policy(Some("90d"), Some("30d"), Some("7d"));
        let looser = policy(Some("365d"), Some("60d"), Some("1d"));
        let p = combine(Some(&org), Some(&looser));
        assert_eq!(p.max_lifetime, Some(days(90)), "a longer max has no effect");
        assert_eq!(p.default_lifetime, days(30));
        assert_eq!(p.expiry_warning, days(7), "the earlier warning wins");
        let tighter = policy(Some("10d"), None, Some("14d"));
        let p = combine(Some(&org), Some(&tighter));
        assert_eq!(p.max_lifetime, Some(days(10)));
        assert_eq!(
            p.default_lifetime,
            days(10),
            "the default never exceeds the max"
        );
        assert_eq!(p.expiry_warning, days(14));
        assert_eq!(
            looser_fields(Some(&org), Some(&looser)),
            ["maxLifetime", "defaultLifetime", "expiryWarning"]
        );
        assert!(looser_fields(Some(&org), Some(&tighter)).is_empty());
        assert!(
            looser_fields(Some(&org), Some(&org)).is_empty(),
            "the same values are not looser"
        );
    }

    #[test]
    fn no_policy_is_the_designs_defaults() {
        assert_eq!(combine(None, None), EffectivePolicy::default());
        assert_eq!(
            EffectivePolicy::default().expiry_warning,
            days(7),
            "ExpiringSoon 7 days ahead unless a policy says otherwise (DESIGN.md)"
        );
        let p = combine(Some(&policy(Some("30d"), None, None)), None);
        assert_eq!(p.default_lifetime, days(30), "90d capped at the max");
    }

    fn token(expires_at: Option<&str>, lifetime: Option<&str>) -> AccessToken {
        let mut t = AccessToken::new(
            "t",
            AccessTokenSpec {
                expires_at: expires_at.map(|e| Time(e.parse().unwrap())),
                lifetime: lifetime.map(Into::into),
                ..Default::default()
            },
        );
        t.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        t
    }

    #[test]
    fn the_max_caps_what_the_spec_asks_and_says_from_what() {
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let p = combine(Some(&policy(Some("30d"), Some("7d"), None)), None);
        let capped = token_expiry(&token(None, Some("60d")), &p, now).unwrap();
        assert_eq!(capped.expires_at, "2026-01-31T00:00:00Z".parse().unwrap());
        assert_eq!(
            capped.capped_from,
            Some("2026-03-02T00:00:00Z".parse().unwrap())
        );
        let within = token_expiry(&token(Some("2026-01-10T00:00:00Z"), None), &p, now).unwrap();
        assert_eq!(
            (within.expires_at.to_string().as_str(), within.capped_from),
            ("2026-01-10T00:00:00Z", None)
        );
        let defaulted = token_expiry(&token(None, None), &p, now).unwrap();
        assert_eq!(
            defaulted.expires_at,
            "2026-01-08T00:00:00Z".parse().unwrap()
        );
        assert_eq!(defaulted.capped_from, None);
        let at_the_cap = token_expiry(&token(None, Some("30d")), &p, now).unwrap();
        assert_eq!(
            (at_the_cap.expires_at, at_the_cap.capped_from),
            ("2026-01-31T00:00:00Z".parse().unwrap(), None),
            "exactly the max is not capped"
        );
    }
}
