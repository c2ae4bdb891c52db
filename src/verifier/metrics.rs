//! The verifier's metric families (TokenReviews, the argon2 cache and timeouts, connections,
//! TLS reloads), registered into the process's registry by whoever assembles the process:
//! a controller-only process serves them too, at zero, so dashboards and alerts always find
//! them.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::Verdict;
use crate::observability::metrics::registered;

/// Labels of the TokenReview counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// How it was answered: `authenticated`, `unavailable`, or a denial's fixed label
    /// (`Denial::as_str`).
    pub outcome: &'static str,
}

impl From<&Verdict> for ReviewLabels {
    fn from(verdict: &Verdict) -> Self {
        let outcome = match verdict {
            Verdict::Authenticated(_) => "authenticated",
            Verdict::Unavailable(_) => "unavailable",
            Verdict::Denied(denial) => denial.as_str(),
        };
        Self { outcome }
    }
}

/// Whether an argon2 result came from the cache.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum CacheResult {
    /// Answered from the cache.
    Hit,
    /// argon2 ran.
    Miss,
}

/// Labels of the cache counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// Hit or miss.
    pub result: CacheResult,
}

/// What an argon2id verification found.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Argon2Result {
    /// The secret matched the hash.
    Match,
    /// It did not (a wrong or forged secret).
    Mismatch,
}

/// Labels of the argon2 verification counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Argon2Labels {
    /// Match or mismatch.
    pub result: Argon2Result,
}

pub use crate::listener::{ReloadLabels, ReloadResult};

/// The verifier's families.
pub struct VerifierMetrics {
    /// TokenReviews answered, by outcome.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Time to answer a TokenReview.
    pub review_seconds: Histogram,
    /// argon2 cache lookups.
    pub cache: Family<CacheLabels, Counter>,
    /// argon2id verifications run (the verifier's real hashing work), by result.
    pub argon2_verifications: Family<Argon2Labels, Counter>,
    /// Requests answered "could not check" because their argon2 check could not finish in time.
    pub argon2_timeouts: Counter,
    /// Connections the verifier's server holds open (bounded by its connection cap).
    pub verifier_connections: Gauge,
    /// Reloads of the verifier's TLS files after they changed, by result.
    pub tls_reloads: Family<ReloadLabels, Counter>,
}

impl VerifierMetrics {
    /// Registers the families into `registry`, each fixed series at 0 from the start (a
    /// rate over a counter that appears with its first increment would miss that increment).
    pub fn register(registry: &mut Registry) -> Self {
        let reviews = registered(
            registry,
            "tokenreviews",
            "TokenReviews answered, by outcome",
            Family::<ReviewLabels, Counter>::default(),
        );
        // 100 µs to ~3 s: cached answers are sub-millisecond, argon2 tens of milliseconds.
        let review_seconds = registered(
            registry,
            "tokenreview_duration_seconds",
            "Time to answer a TokenReview",
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 3.0, 10,
            )),
        );
        let cache = registered(
            registry,
            "argon2_cache_lookups",
            "argon2 result cache lookups",
            Family::<CacheLabels, Counter>::default(),
        );
        let argon2_verifications = registered(
            registry,
            "argon2_verifications",
            "argon2id verifications run, by result",
            Family::<Argon2Labels, Counter>::default(),
        );
        let argon2_timeouts = registered(
            registry,
            "argon2_timeouts",
            "Requests answered 'could not check' because their argon2 check (queue included) did not finish in time",
            Counter::default(),
        );
        let verifier_connections = registered(
            registry,
            "verifier_connections",
            "Connections the verifier's server holds open",
            Gauge::default(),
        );
        let tls_reloads = registered(
            registry,
            "verifier_tls_reloads",
            "Reloads of the verifier's TLS files after they changed, by result",
            Family::<ReloadLabels, Counter>::default(),
        );
        let metrics = Self {
            reviews,
            review_seconds,
            cache,
            argon2_verifications,
            argon2_timeouts,
            verifier_connections,
            tls_reloads,
        };
        metrics.create_fixed_series();
        metrics
    }

    /// The fixed series, at 0.
    fn create_fixed_series(&self) {
        for outcome in ["authenticated", "unavailable"] {
            let _ = self.reviews.get_or_create(&ReviewLabels { outcome });
        }
        for result in [CacheResult::Hit, CacheResult::Miss] {
            let _ = self.cache.get_or_create(&CacheLabels { result });
        }
        for result in [Argon2Result::Match, Argon2Result::Mismatch] {
            let _ = self
                .argon2_verifications
                .get_or_create(&Argon2Labels { result });
        }
        for result in [ReloadResult::Success, ReloadResult::Failure] {
            let _ = self.tls_reloads.get_or_create(&ReloadLabels { result });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{observability::metrics::Metrics, verifier::Denial};

    #[test]
    fn outcomes_are_counted_under_fixed_labels() {
        let metrics = Metrics::new();
        let verifier = metrics.register(VerifierMetrics::register);
        verifier
            .reviews
            .get_or_create(&(&Verdict::Denied(Denial::Revoked)).into())
            .inc();
        verifier
            .argon2_verifications
            .get_or_create(&Argon2Labels {
                result: Argon2Result::Mismatch,
            })
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"access_token_operator_argon2_verifications_total{result="Mismatch"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"access_token_operator_tokenreviews_total{outcome="revoked"} 1"#),
            "{text}"
        );
    }
}
