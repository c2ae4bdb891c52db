//! Rotation decisions (docs/concepts/lifecycle.md#rotation), pure: when a
//! rotation is due, which credentials a rotation stages, and which previous credentials a
//! TechnicalUser keeps. The TechnicalUser's credentials carry all the state a crash could
//! lose: a rotated-out credential is marked `retiredAt` and bounded by `notAfter` (the end of
//! the overlap) when it is staged, before the Secret moves on, so a crash at any step never
//! leaves a previous token working past its overlap.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};

use crate::{api::Credential, domain::expiry::parse_lifetime};

/// How long the previous token keeps working when `spec.rotation.overlap` is not set.
pub const DEFAULT_OVERLAP: SignedDuration = SignedDuration::from_hours(1);

/// Most previous credentials kept besides the current one and one staged (the schema allows 4).
const MAX_PREVIOUS: usize = 2;

/// Why a rotation happens now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `spec.rotation.trigger` differs from the value last acted on.
    Trigger,
    /// `status.renewalTime` has come (`spec.rotation.renewBefore`).
    Renewal,
}

impl Cause {
    /// Words for the Event.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Trigger => "spec.rotation.trigger changed",
            Self::Renewal => "its renewal time (spec.rotation.renewBefore) came",
        }
    }
}

/// The overlap of `spec.rotation.overlap` (the schema checked its format; a value that does
/// not parse counts as the default).
pub fn overlap(text: Option<&str>) -> SignedDuration {
    text.and_then(|t| parse_lifetime(t).ok())
        .unwrap_or(DEFAULT_OVERLAP)
}

/// When the next automatic rotation is due: `renew_before` ahead of the expiry.
pub fn renewal_time(expires_at: Timestamp, renew_before: Option<&str>) -> Option<Timestamp> {
    let before = parse_lifetime(renew_before?).ok()?;
    expires_at.checked_sub(before).ok()
}

/// Whether a rotation is due. `trigger` is the spec's, `acted_on` the one last recorded;
/// `recovered` says a rotation finished whose status was never written (a crash): its
/// trigger counts as acted on. A token whose value is past its expiry is not rotated by
/// itself (only a trigger revives it).
pub fn due(
    trigger: Option<&str>,
    acted_on: Option<&str>,
    recovered: bool,
    renewal: Option<Timestamp>,
    expires_at: Timestamp,
    now: Timestamp,
) -> Option<Cause> {
    if trigger.is_some() && trigger != acted_on && !recovered {
        return Some(Cause::Trigger);
    }
    match renewal {
        Some(at) if now >= at && now < expires_at => Some(Cause::Renewal),
        _ => None,
    }
}

/// The credentials of a rotation, to stage before the Secret gets `new`: the previous ones
/// still working, the current one retired (working until `now + overlap`, and never past its
/// own expiry), and `new`.
pub fn staged(
    credentials: &[Credential],
    current: &Credential,
    new: Credential,
    overlap: SignedDuration,
    now: Timestamp,
) -> Vec<Credential> {
    let until = now
        .checked_add(overlap)
        .unwrap_or(now)
        .min(current.not_after.0);
    let retired = Credential {
        not_after: Time(until),
        retired_at: Some(Time(now)),
        ..current.clone()
    };
    // Most recent first, as `previous` orders them, so the settle that follows finds the
    // TechnicalUser as it wants it.
    let mut kept = previous(credentials, &current.id, now);
    kept.truncate(MAX_PREVIOUS - 1);
    kept.insert(0, retired);
    kept.push(new);
    kept
}

/// The previous credentials a TechnicalUser keeps beside `current_id`: retired by a rotation
/// and still within their overlap, most recent first, at most [`MAX_PREVIOUS`]. A staged
/// credential that never reached the Secret (not retired, not current) is dropped.
pub fn previous(credentials: &[Credential], current_id: &str, now: Timestamp) -> Vec<Credential> {
    let mut kept: Vec<Credential> = credentials
        .iter()
        .filter(|c| c.id != current_id && c.retired_at.is_some() && now < c.not_after.0)
        .cloned()
        .collect();
    kept.sort_by(|a, b| {
        b.retired_at
            .as_ref()
            .map(|t| t.0)
            .cmp(&a.retired_at.as_ref().map(|t| t.0))
    });
    kept.truncate(MAX_PREVIOUS);
    kept
}

/// When the token in the Secret (`current_id`) was minted by a rotation, as the
/// TechnicalUser records it: the latest `retiredAt` of another credential. `None` if the
/// Secret still holds a retired credential's token (a rotation that crashed before the
/// Secret write: it did not happen).
pub fn rotated_at(credentials: &[Credential], current_id: &str) -> Option<Timestamp> {
    credentials
        .iter()
        .filter(|c| c.id != current_id)
        .filter_map(|c| c.retired_at.as_ref().map(|t| t.0))
        .max()
}

/// The earliest end of an overlap among `previous`: when the reconcile must look again.
pub fn next_overlap_end(previous: &[Credential]) -> Option<Timestamp> {
    previous.iter().map(|c| c.not_after.0).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlap_is_the_specs_or_an_hour() {
        assert_eq!(overlap(Some("2h")), SignedDuration::from_hours(2));
        assert_eq!(overlap(None), DEFAULT_OVERLAP);
        assert_eq!(DEFAULT_OVERLAP, SignedDuration::from_hours(1));
    }

    #[test]
    fn the_rotation_event_names_the_field_that_caused_it() {
        // The TokenRotated Event says why, in the words of the spec a user would look at.
        assert!(Cause::Trigger.describe().contains("spec.rotation.trigger"));
        assert!(
            Cause::Renewal
                .describe()
                .contains("spec.rotation.renewBefore")
        );
    }

    fn at(minutes: i64) -> Timestamp {
        crate::test_support::now() + SignedDuration::from_mins(minutes)
    }

    fn credential(id: &str, not_after: i64, retired: Option<i64>) -> Credential {
        Credential {
            retired_at: retired.map(|m| Time(at(m))),
            ..crate::test_support::credential(id, at(not_after))
        }
    }

    #[test]
    fn a_trigger_change_or_the_renewal_time_makes_a_rotation_due() {
        let (renewal, expiry) = (Some(at(50)), at(60));
        assert_eq!(
            due(Some("b"), Some("a"), false, renewal, expiry, at(0)),
            Some(Cause::Trigger)
        );
        assert_eq!(
            due(Some("a"), Some("a"), false, renewal, expiry, at(0)),
            None
        );
        assert_eq!(
            due(None, Some("a"), false, None, expiry, at(0)),
            None,
            "removing the trigger"
        );
        assert_eq!(
            due(Some("b"), Some("a"), true, renewal, expiry, at(0)),
            None,
            "already done before a crash"
        );
        assert_eq!(
            due(None, None, false, renewal, expiry, at(50)),
            Some(Cause::Renewal)
        );
        assert_eq!(due(None, None, false, renewal, expiry, at(49)), None);
        assert_eq!(
            due(None, None, false, renewal, expiry, at(60)),
            None,
            "expired: not revived by itself"
        );
        assert_eq!(renewal_time(at(60), Some("10m")), Some(at(50)));
        assert_eq!(renewal_time(at(60), None), None);
    }

    #[test]
    fn staging_retires_the_current_credential_within_its_overlap_and_bounds_the_list() {
        let current = credential("cur", 60, None);
        let new = credential("new", 120, None);
        let older = [
            credential("p1", 30, Some(0)),
            credential("p2", 40, Some(5)),
            current.clone(),
        ];
        let staged = staged(&older, &current, new, SignedDuration::from_mins(15), at(10));
        let ids: Vec<_> = staged.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["cur", "p2", "new"],
            "the retired one, the most recent previous, the new"
        );
        assert_eq!(staged[0].not_after, Time(at(25)), "overlap from now");
        assert_eq!(staged[0].retired_at, Some(Time(at(10))));
        assert!(staged.len() <= 4, "within the schema's bound");

        let short = staged_overlap_past_expiry();
        assert_eq!(
            short.not_after,
            Time(at(60)),
            "never past the current token's own expiry"
        );
    }

    fn staged_overlap_past_expiry() -> Credential {
        let current = credential("cur", 60, None);
        staged(
            &[],
            &current,
            credential("new", 60, None),
            SignedDuration::from_hours(5),
            at(50),
        )[0]
        .clone()
    }

    #[test]
    fn only_retired_credentials_within_their_overlap_are_kept_as_previous() {
        let creds = [
            credential("cur", 120, None),
            credential("staged-never-written", 120, None),
            credential("prev", 30, Some(10)),
            credential("gone", 20, Some(0)),
        ];
        let kept = previous(&creds, "cur", at(25));
        assert_eq!(
            kept.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["prev"]
        );
        assert_eq!(next_overlap_end(&kept), Some(at(30)));
        assert!(
            previous(&creds, "cur", at(30)).is_empty(),
            "not after its overlap"
        );
    }

    #[test]
    fn the_rotation_time_is_recovered_only_once_the_secret_moved_on() {
        let creds = [
            credential("old", 30, Some(10)),
            credential("new", 120, None),
        ];
        assert_eq!(
            rotated_at(&creds, "new"),
            Some(at(10)),
            "the Secret holds the new token"
        );
        assert_eq!(
            rotated_at(&creds, "old"),
            None,
            "crashed before the Secret write"
        );
    }
}
