//! The verifier against a hostile client who knows token ids (they are public): forged
//! secrets for a known id buy bounded argon2 work, never an identity, and do not keep a
//! legitimate token from authenticating.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use access_token_operator::{api::Phase, token::Token};

use crate::support::{Operator, Tenant, VerifierProcess, eventually};

/// Concurrent forging clients (loopback, bounded).
const FLOOD_CLIENTS: usize = 64;
/// Most forged requests one client sends, so a flood stops by itself even if a test fails.
const FLOOD_MAX_PER_CLIENT: u64 = 2_000;
/// The verifier's default `--verify-miss-budget` / `--verify-miss-window-seconds`.
const MISS_BUDGET: u64 = 5;
const MISS_WINDOW: Duration = Duration::from_secs(60);

/// A well-formed token for `id` with a random secret and a valid checksum: what anyone who
/// has seen the id can make.
fn forged(id: &str) -> String {
    let secret = &Token::generate().expose_secret_part().to_string();
    let body = format!("atk_{id}_{secret}");
    let mut crc = crc32fast::hash(body.as_bytes());
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut check = [b'0'; 6];
    for digit in check.iter_mut().rev() {
        *digit = alphabet[(crc % 62) as usize];
        crc /= 62;
    }
    let forged = format!("{body}{}", String::from_utf8_lossy(&check));
    assert!(
        Token::parse(&forged).is_ok(),
        "forgery passes the format check"
    );
    forged
}

/// One TokenReview straight to the verifier: (authenticated, error).
async fn review(http: &reqwest::Client, url: &str, token: &str) -> (bool, Option<String>) {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let answer: Value = http
        .post(format!("{url}/tokenreviews"))
        .json(&body)
        .send()
        .await
        .expect("the verifier answers")
        .json()
        .await
        .expect("JSON");
    (
        answer["status"]["authenticated"] == true,
        answer["status"]["error"].as_str().map(String::from),
    )
}

/// A counter's value from the verifier's /metrics (0 if not yet present).
async fn metric(http: &reqwest::Client, url: &str, series: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{series} ")))
        .map(|value| value.trim().parse::<f64>().expect("a number") as u64)
        .unwrap_or(0)
}

const MISMATCHES: &str = r#"access_token_operator_argon2_verifications_total{result="Mismatch"}"#;
const REFUSALS: &str = "access_token_operator_argon2_budget_refusals_total";

/// What a flood saw.
#[derive(Default)]
struct FloodTally {
    sent: AtomicU64,
    authenticated: AtomicU64,
    errors: AtomicU64,
}

/// Forged secrets for `id` from `FLOOD_CLIENTS` concurrent clients until `stop` is raised or
/// each has sent `max_per_client`.
fn flood(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    max_per_client: u64,
    stop: Arc<AtomicBool>,
    tally: Arc<FloodTally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..FLOOD_CLIENTS)
        .map(|_| {
            let (http, url, id, stop, tally) = (
                http.clone(),
                url.to_string(),
                id.to_string(),
                stop.clone(),
                tally.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..max_per_client {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (authenticated, error) = review(&http, &url, &forged(&id)).await;
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    if authenticated {
                        tally.authenticated.fetch_add(1, Ordering::Relaxed);
                    }
                    if error.is_some() {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn forged_secrets_for_a_known_id_cost_bounded_argon2_and_spare_a_fresh_token() {
    let tenant = Tenant::new("forge").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let verifier = VerifierProcess::start(&tenant.namespace).await;
    let (http, url) = (verifier.http(), verifier.url.clone());
    let org = &tenant.organization;

    // A victim whose token has never been presented: its id is public, its secret unproven.
    let victim = tenant
        .issue("victim", json!({"organization": org, "admin": true}))
        .await;
    let id = victim.id().to_string();
    eventually("the verifier to know the victim's id", || async {
        // A wrong secret for a known id costs one argon2 (counted); for an unknown id, none.
        let (authenticated, _) = review(&http, &url, &forged(&id)).await;
        assert!(!authenticated);
        (metric(&http, &url, MISMATCHES).await >= 1).then_some(())
    })
    .await;

    // Flood the victim's id; meanwhile a fresh token is issued and presented.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(FloodTally::default());
    let started = Instant::now();
    let clients = flood(
        &http,
        &url,
        &id,
        FLOOD_MAX_PER_CLIENT,
        stop.clone(),
        tally.clone(),
    );
    eventually("the flood to exhaust the id's budget", || async {
        (metric(&http, &url, REFUSALS).await > 0).then_some(())
    })
    .await;
    tenant
        .create_token("fresh", json!({"organization": org}))
        .await;
    tenant.wait_for_phase("fresh", Phase::Active).await;
    let fresh = tenant.token_in_secret("fresh").await;
    let (authenticated, error) = eventually("the fresh token's first verification", || async {
        let (authenticated, error) = review(&http, &url, fresh.expose_secret()).await;
        // Until the verifier's watch delivers the new credential the id is unknown: a plain
        // denial. Never "could not check": the flood must not take the hashing pool.
        (authenticated || error.is_some()).then_some((authenticated, error))
    })
    .await;
    let flooding = clients.iter().any(|c| !c.is_finished());
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("flood client ends");
    }
    let elapsed = started.elapsed();
    assert_eq!(error, None, "the fresh token is checked, not turned away");
    assert!(
        authenticated,
        "the fresh token authenticates under the flood"
    );
    assert!(flooding, "sanity: the flood was still running");
    assert_eq!(
        tally.authenticated.load(Ordering::Relaxed),
        0,
        "no forged secret ever authenticates"
    );
    let sent = tally.sent.load(Ordering::Relaxed);
    let mismatches = metric(&http, &url, MISMATCHES).await;
    let windows = 1 + elapsed.as_secs() / MISS_WINDOW.as_secs();
    assert!(
        mismatches <= MISS_BUDGET * windows,
        "{mismatches} argon2 checks for {sent} forged secrets: over the per-id budget"
    );
    assert!(
        tally.errors.load(Ordering::Relaxed) > 0,
        "beyond the budget forged secrets are answered 'could not check' (an error), not denied"
    );

    // Once a token's secret is proven, wrong secrets for its id cost no argon2 at all: they
    // are refused by a digest compare, as plain denials.
    let before = metric(&http, &url, MISMATCHES).await;
    let tally = Arc::new(FloodTally::default());
    for client in flood(
        &http,
        &url,
        fresh.id().as_str(),
        20,
        Arc::new(AtomicBool::new(false)),
        tally.clone(),
    ) {
        client.await.expect("flood client ends");
    }
    assert_eq!(
        tally.sent.load(Ordering::Relaxed),
        20 * FLOOD_CLIENTS as u64
    );
    assert_eq!(tally.authenticated.load(Ordering::Relaxed), 0);
    assert_eq!(
        tally.errors.load(Ordering::Relaxed),
        0,
        "plain denials: no budget is involved"
    );
    assert_eq!(
        metric(&http, &url, MISMATCHES).await,
        before,
        "no argon2 for wrong secrets of a proven credential"
    );
    let (authenticated, error) = review(&http, &url, fresh.expose_secret()).await;
    assert!(
        authenticated && error.is_none(),
        "the real token still works"
    );

    // The flood never put a token in the verifier's logs.
    let logs = verifier.logs();
    assert!(!logs.contains(victim.expose_secret_part()));
    assert!(!logs.contains(fresh.expose_secret_part()));
}
