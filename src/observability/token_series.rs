//! Metrics about the AccessTokens themselves, computed on each scrape from the AccessToken
//! controller's watch cache: tokens by phase, each token's phase, and each token's expiry
//! (as cert-manager exposes each certificate's). A deleted token leaves the cache, so its
//! series go with it; there is one series per token and metric, never more. Labels are
//! the token's namespace and name and its phase: never anything from its Secret.

use std::sync::{Arc, Mutex};

use kube::{ResourceExt, runtime::reflector::Store};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::gauge::ConstGauge,
};

use crate::api::{AccessToken, Phase, Trimmed};

/// Every phase a token can show; each gets a `tokens` series, zero included, so that
/// an alert on a phase has a series to compare. Later phases are counted as they come.
pub const PHASES: [&str; 6] = [
    "Pending",
    "Active",
    "Revoked",
    "Suspended",
    "Expired",
    "Failed",
];

/// The AccessToken cache of the running controller, read on each scrape; empty until the
/// controller runs (a replica that is not the leader reports no tokens).
#[derive(Clone, Debug, Default)]
pub struct TokenInventory(Arc<Mutex<Option<Store<Trimmed<AccessToken>>>>>);

impl TokenInventory {
    /// Reads tokens from `store` from now on.
    pub fn attach(&self, store: Store<Trimmed<AccessToken>>) {
        *self.0.lock().expect("lock") = Some(store);
    }

    fn tokens(&self) -> Vec<Arc<Trimmed<AccessToken>>> {
        let store = self.0.lock().expect("lock").clone();
        store.map(|s| s.state()).unwrap_or_default()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenPhaseLabels {
    namespace: String,
    name: String,
    phase: String,
}

/// The phase as written in status (`Pending` for a token with no status yet).
pub fn phase_name(phase: Option<Phase>) -> String {
    phase
        .and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "Pending".to_string())
}

/// One token's row: namespace, name, phase and expiry (Unix seconds) if issued.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRow {
    /// Namespace of the AccessToken.
    pub namespace: String,
    /// Name of the AccessToken.
    pub name: String,
    /// Phase from status.
    pub phase: String,
    /// status.expiresAt as Unix seconds.
    pub expires_at: Option<i64>,
}

/// What the metrics say about `token`.
pub fn row(token: &AccessToken) -> TokenRow {
    let status = token.status.as_ref();
    TokenRow {
        namespace: token.namespace().unwrap_or_default(),
        name: token.name_any(),
        phase: phase_name(status.and_then(|s| s.phase)),
        expires_at: status
            .and_then(|s| s.expires_at.as_ref())
            .map(|t| t.0.as_second()),
    }
}

/// Encodes the token metrics for `rows`.
pub fn encode_rows(rows: &[TokenRow], mut encoder: DescriptorEncoder) -> std::fmt::Result {
    let mut counts: Vec<(String, i64)> = PHASES.iter().map(|p| (p.to_string(), 0)).collect();
    for row in rows {
        match counts.iter_mut().find(|(phase, _)| *phase == row.phase) {
            Some((_, count)) => *count += 1,
            None => counts.push((row.phase.clone(), 1)),
        }
    }
    let example = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(
        "tokens",
        "AccessTokens by phase",
        None,
        example.metric_type(),
    )?;
    for (phase, count) in counts {
        let labels = PhaseLabels { phase };
        ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "token_phase",
        "The phase of each AccessToken (1 for its current phase)",
        None,
        example.metric_type(),
    )?;
    for row in rows {
        let labels = TokenPhaseLabels {
            namespace: row.namespace.clone(),
            name: row.name.clone(),
            phase: row.phase.clone(),
        };
        ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "token_expiration_timestamp_seconds",
        "When each issued AccessToken expires (status.expiresAt), as Unix seconds",
        None,
        example.metric_type(),
    )?;
    for row in rows {
        if let Some(expires_at) = row.expires_at {
            let labels = TokenLabels {
                namespace: row.namespace.clone(),
                name: row.name.clone(),
            };
            ConstGauge::new(expires_at).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

impl Collector for TokenInventory {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut rows: Vec<TokenRow> = self
            .tokens()
            .iter()
            .filter_map(|t| t.0.as_ref().ok().map(row))
            .collect();
        rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        encode_rows(&rows, encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Fixed(Vec<TokenRow>);

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
            encode_rows(&self.0, encoder)
        }
    }

    fn token(name: &str, status: serde_json::Value) -> AccessToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": name, "namespace": "acme"},
            "spec": {"organization": "acme"},
            "status": status,
        }))
        .expect("valid")
    }

    #[test]
    fn tokens_are_counted_by_phase_and_each_issued_token_has_its_expiry() {
        let rows = vec![
            row(&token(
                "a",
                serde_json::json!({"phase": "Active", "expiresAt": "2027-01-01T00:00:00Z"}),
            )),
            row(&token(
                "b",
                serde_json::json!({"phase": "Revoked", "expiresAt": "2027-01-02T00:00:00Z"}),
            )),
            row(&token("c", serde_json::json!({}))),
        ];
        let mut registry = Registry::with_prefix("access_token_operator");
        registry.register_collector(Box::new(Fixed(rows)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            r#"access_token_operator_tokens{phase="Active"} 1"#,
            r#"access_token_operator_tokens{phase="Revoked"} 1"#,
            r#"access_token_operator_tokens{phase="Pending"} 1"#,
            r#"access_token_operator_tokens{phase="Expired"} 0"#,
            r#"access_token_operator_token_phase{namespace="acme",name="b",phase="Revoked"} 1"#,
            r#"access_token_operator_token_expiration_timestamp_seconds{namespace="acme",name="a"} 1798761600"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(
            !text.contains(r#"token_expiration_timestamp_seconds{namespace="acme",name="c"}"#),
            "a token not issued has no expiry: {text}"
        );
    }
}
