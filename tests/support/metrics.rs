//! The metric names the docs promise, checked against what a process serves.

use std::collections::BTreeSet;

/// docs/operations/metrics.md, the page that lists every metric.
pub const METRICS_PAGE: &str = include_str!("../../docs/operations/metrics.md");

/// The proxy's families (served by `access-token-operator proxy` only).
pub const PROXY_PREFIX: &str = "access_token_operator_proxy_";

/// The metric names `text` mentions: words starting with the operator's prefix or
/// `process_`, except file names (`src/process_metrics.rs`).
pub fn metric_names(text: &str) -> BTreeSet<String> {
    let is_word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find(is_word) {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !is_word(c)).unwrap_or(tail.len());
        let (word, after) = tail.split_at(end);
        let metric = ["access_token_operator_", "process_"]
            .iter()
            .any(|prefix| word.starts_with(prefix) && word.len() > prefix.len());
        if metric && !after.starts_with('.') {
            names.insert(word.to_string());
        }
        rest = after;
    }
    names
}

/// Fails unless the scrape `served` declares the family of the series `name`.
pub fn assert_serves(served: &str, name: &str) {
    let family = ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    assert!(
        served.contains(&format!("# TYPE {family} ")),
        "{name} is documented but not served:\n{served}"
    );
}

/// The value of the series `series` (name and labels, as printed) in the scrape `text`;
/// `None` when the scrape does not hold it; a value that is not a number fails the test.
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map(|value| {
            value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{series} has a value that is not a number: {value}"))
        })
}
