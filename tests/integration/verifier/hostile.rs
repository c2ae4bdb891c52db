//! The verifier against a hostile client who knows token ids (they are public): forged
//! secrets for a known id are never authenticated, cost one argon2 check each at most (none
//! once the id's secret is proven), and, whatever their number, never turn the owner away:
//! not on a verifier that has never seen the token, not right after a rotation (DESIGN.md,
//! "Verifier": no lockout by token id).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use access_token_operator::token::Token;

use crate::{
    support::{
        Operator, Tenant, VerifierProcess, api_server_url, assert_no_token_in, eventually,
        forged_token, secret_text, series_value, token_review,
    },
    verifier::webhook::whoami,
};

/// Concurrent forging clients.
const FLOOD_CLIENTS: usize = 16;
/// How long a flood lasts at most, so that it stops by itself even if a test fails. Bounded
/// by time, not by a count: a count a fast machine sends before the owner has tried would end
/// the flood too early for the test to prove anything (audit F2).
const FLOOD_LONGEST: Duration = Duration::from_secs(120);
/// Forged secrets the verifier must have hashed for the flooded id before the owner tries:
/// far past the 5 a minute that once locked the owner out.
const IN_FULL_SWING: u64 = 100;

/// Where forged secrets are presented.
#[derive(Clone)]
enum Target {
    /// kube-apiserver, as a bearer token on a discovery request (no credentials otherwise):
    /// what any anonymous client on the network can do. It asks the verifier.
    ApiServer { http: reqwest::Client, url: String },
    /// The verifier's TokenReview endpoint, as a platform service would ask it.
    Verifier { http: reqwest::Client, url: String },
}

/// What one presented token got.
#[derive(Debug, PartialEq)]
enum Answer {
    Authenticated,
    Denied,
    /// "Could not check" from the verifier; from kube-apiserver, anything but 200 or 401.
    Other,
}

impl Target {
    async fn present(&self, token: &str) -> Answer {
        match self {
            Target::ApiServer { http, url } => {
                let status = http
                    .get(format!("{url}/api"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("kube-apiserver answers")
                    .status();
                match status.as_u16() {
                    200 => Answer::Authenticated,
                    401 => Answer::Denied,
                    _ => Answer::Other,
                }
            }
            Target::Verifier { http, url } => {
                let status = token_review(http, &format!("{url}/tokenreviews"), token)
                    .await
                    .expect("the verifier answers with JSON");
                match (&status["authenticated"], &status["error"]) {
                    (Value::Bool(true), _) => Answer::Authenticated,
                    (_, Value::String(_)) => Answer::Other,
                    _ => Answer::Denied,
                }
            }
        }
    }
}

/// A counter's value from the verifier's metrics, on its probe port (0 if not yet present).
async fn metric(verifier: &VerifierProcess, series: &str) -> u64 {
    let text = verifier.metrics().await;
    assert!(!text.is_empty(), "the verifier's probe port serves metrics");
    series_value(&text, series).unwrap_or(0.0) as u64
}

const MISMATCHES: &str = r#"access_token_operator_argon2_verifications_total{result="Mismatch"}"#;

/// What a flood saw.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    authenticated: AtomicU64,
    other: AtomicU64,
}

/// Forged secrets for one id from `FLOOD_CLIENTS` concurrent clients, as fast as each gets
/// answers, until stopped, each has sent `max_per_client`, or `FLOOD_LONGEST` has passed.
struct Flood {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Flood {
    fn start(target: &Target, id: &str, max_per_client: u64) -> Self {
        let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
        let clients = (0..FLOOD_CLIENTS)
            .map(|_| {
                let (target, id, stop, tally) =
                    (target.clone(), id.to_string(), stop.clone(), tally.clone());
                let until = Instant::now() + FLOOD_LONGEST;
                tokio::spawn(async move {
                    for _ in 0..max_per_client {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= until {
                            break;
                        }
                        let answer = target.present(&forged_token(&id)).await;
                        tally.sent.fetch_add(1, Ordering::Relaxed);
                        match answer {
                            Answer::Authenticated => {
                                tally.authenticated.fetch_add(1, Ordering::Relaxed);
                            }
                            Answer::Other => {
                                tally.other.fetch_add(1, Ordering::Relaxed);
                            }
                            Answer::Denied => {}
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            tally,
            clients,
        }
    }

    /// Whether some client is still sending.
    fn running(&self) -> bool {
        self.clients.iter().any(|client| !client.is_finished())
    }

    /// Stops the clients and returns what they saw: (sent, authenticated, other answers).
    async fn stop(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.finish().await
    }

    /// Waits for every client to have sent its share, and returns what they saw.
    async fn finish(self) -> (u64, u64, u64) {
        for client in self.clients {
            client.await.expect("flood client ends");
        }
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        (
            read(&self.tally.sent),
            read(&self.tally.authenticated),
            read(&self.tally.other),
        )
    }
}

/// Floods `id` through `target` until the verifier has hashed `IN_FULL_SWING` forgeries for
/// it, then presents the owner's `token` once at kube-apiserver: it must be accepted on
/// that one try. Returns the flood's tally after stopping it.
async fn owner_gets_in_under_a_flood(
    verifier: &VerifierProcess,
    target: &Target,
    token: &Token,
    expected_user: &str,
) -> (u64, u64, u64) {
    let before = metric(verifier, MISMATCHES).await;
    let flood = Flood::start(target, token.id().as_str(), u64::MAX);
    eventually(
        "the flood to reach the verifier's argon2 for the id",
        || async { (metric(verifier, MISMATCHES).await >= before + IN_FULL_SWING).then_some(()) },
    )
    .await;
    let sent = Instant::now();
    let info = whoami(token.expose_secret()).await;
    let took = sent.elapsed();
    let flooding = flood.running();
    let tally = flood.stop().await;
    assert_eq!(
        info.as_ref().map(|info| info["username"].clone()),
        Some(json!(expected_user)),
        "the owner's token is accepted at its first try, while its id is flooded"
    );
    assert!(flooding, "sanity: the flood was still running");
    eprintln!(
        "owner accepted in {took:?} under a flood of {} forged secrets",
        tally.0
    );
    tally
}

#[tokio::test]
async fn forged_secrets_through_kube_apiserver_never_lock_out_a_fresh_or_rotated_token() {
    let tenant = Tenant::new("forge").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let org = &tenant.organization;
    let username = format!("accesstoken:{}:victim", tenant.namespace);
    // Issued before the verifier starts: a verifier that has never seen its secret.
    let spec = json!({"organization": org, "admin": true,
        "rotation": {"trigger": "1", "overlap": "1m"}});
    let victim = tenant.issue("victim", spec).await;
    let verifier = VerifierProcess::start(&tenant.namespace).await;
    let api_server = Target::ApiServer {
        http: VerifierProcess::http_builder()
            .build()
            .expect("client builds"),
        url: api_server_url().await,
    };

    let mut floods =
        vec![owner_gets_in_under_a_flood(&verifier, &api_server, &victim, &username).await];

    // Rotated: the new token's id is public at once (status, Events), its secret unproven.
    tenant
        .patch_spec("victim", json!({"rotation": {"trigger": "2"}}))
        .await;
    let rotated = eventually("the rotated token in the Secret", || async {
        let secret = tenant.secrets().get("victim").await.ok()?;
        let value = Token::parse(&secret_text(&secret, "token")).ok()?;
        (value.id() != victim.id()).then_some(value)
    })
    .await;
    floods.push(owner_gets_in_under_a_flood(&verifier, &api_server, &rotated, &username).await);
    for (sent, authenticated, _) in &floods {
        assert_eq!(
            *authenticated, 0,
            "none of {sent} forged secrets authenticated"
        );
    }

    // Once its secret is proven, wrong secrets for the id cost no argon2 at all: they are
    // refused by a digest compare, as plain denials (asked of the verifier directly).
    let direct = Target::Verifier {
        http: verifier.http(),
        url: verifier.url.clone(),
    };
    let before = metric(&verifier, MISMATCHES).await;
    let (sent, authenticated, other) = Flood::start(&direct, rotated.id().as_str(), 20)
        .finish()
        .await;
    assert_eq!(sent, 20 * FLOOD_CLIENTS as u64);
    assert_eq!(authenticated, 0);
    assert_eq!(other, 0, "plain denials, never 'could not check'");
    assert_eq!(
        metric(&verifier, MISMATCHES).await,
        before,
        "no argon2 for wrong secrets of a proven credential"
    );
    assert_eq!(
        direct.present(rotated.expose_secret()).await,
        Answer::Authenticated,
        "the real token still works"
    );

    // The floods never put a token in the verifier's logs.
    let logs = verifier.logs();
    assert_no_token_in(&logs, &[&victim, &rotated], "verifier's log");
}
