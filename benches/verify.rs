//! `make bench-verify`: the verifier's TokenReview throughput and latency (warm and cold
//! argon2 cache) against kube-apiserver's own TokenReview of a ServiceAccount token,
//! measured in the same run on the same machine, how long `revoked: true` takes to
//! reach the verifier, a fresh token's first verification with and without a flood of
//! forged secrets for a known token id, and the cost of one argon2id hash. Needs the local
//! control plane (the make target starts it) and writes its results into BENCHMARKS.md.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Secret, ServiceAccount},
};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

#[path = "../tests/support/mod.rs"]
mod support;

use support::{Launch, bench_client, create_namespace, free_port, poll_every, tls_verifier_on};

use access_token_operator::{
    api::{AccessToken, Organization},
    token::{HashParams, Token, hash_token, verify_token},
};

const TOKENS: usize = 64;
const CONCURRENCY: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(6);
const REVOCATIONS: usize = 40;
/// Fresh tokens (never presented before) timed on their first verification, per phase.
const FRESH: usize = 10;
/// Concurrent clients sending forged secrets for one known token id.
const FLOOD_CLIENTS: usize = 128;
/// Each flood client stops after this many requests or `FLOOD_FOR`, whichever comes first.
const FLOOD_MAX_PER_CLIENT: usize = 5_000;
const FLOOD_FOR: Duration = Duration::from_secs(30);
/// Forged secrets the verifier must have hashed for a flooded id before its owner is timed:
/// the flood is in full swing, well past any per-id allowance.
const FLOOD_WARMUP_MISSES: u64 = 2 * FLOOD_CLIENTS as u64;

#[tokio::main]
async fn main() {
    let Some(client) = bench_client().await else {
        return;
    };
    let namespace = "bench";
    create_namespace(&client, namespace).await;
    let org: Organization = serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "Organization",
        "metadata": {"name": "bench"}, "spec": {"tokenNamespaces": [namespace]}
    }))
    .unwrap();
    Api::<Organization>::all(client.clone())
        .create(&PostParams::default(), &org)
        .await
        .expect("organization");

    let operator_bin = env!("CARGO_BIN_EXE_access-token-operator");
    let _operator = Launch::binary_at(operator_bin, &["run", "--namespace", namespace])
        .quiet()
        .spawn();
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), namespace);
    // t0.. load, then revocations, then 2×FRESH fresh tokens.
    let names: Vec<String> = (0..TOKENS + REVOCATIONS + 2 * FRESH)
        .map(|i| format!("t{i}"))
        .collect();
    for name in &names {
        let token: AccessToken = serde_json::from_value(json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"organization": "bench"}
        }))
        .unwrap();
        tokens
            .create(&PostParams::default(), &token)
            .await
            .expect("AccessToken");
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut values = Vec::new();
    for name in &names {
        let value = wait_for(|| async {
            let secret = secrets.get_opt(name).await.ok()??;
            String::from_utf8(secret.data?.get("token")?.0.clone()).ok()
        })
        .await;
        values.push(value);
    }
    let (load_tokens, rest) = values.split_at(TOKENS);
    let (revoke_tokens, rest) = rest.split_at(REVOCATIONS);
    let fresh_tokens = rest;

    let http = https_client();
    let ca_port = |port: u16| format!("https://127.0.0.1:{port}/tokenreviews");

    // Baseline: kube-apiserver reviewing a ServiceAccount token, same client, same TLS.
    let baseline = {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        accounts
            .create(
                &PostParams::default(),
                &ServiceAccount {
                    metadata: ObjectMeta {
                        name: Some("bench".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .expect("service account");
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sa_token = accounts
            .create_token_request("bench", &PostParams::default(), &request)
            .await
            .unwrap()
            .status
            .unwrap()
            .token
            .unwrap();
        let kubeconfig: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap()).unwrap(),
        )
        .unwrap();
        let server = kubeconfig["clusters"][0]["cluster"]["server"]
            .as_str()
            .unwrap()
            .to_string();
        let admin = kubeconfig["users"][0]["user"]["token"]
            .as_str()
            .unwrap()
            .to_string();
        let url = format!("{server}/apis/authentication.k8s.io/v1/tokenreviews");
        load(&http, &url, Some(&admin), &[sa_token]).await
    };

    // The verifier, release build, over TLS like the baseline.
    let port = free_port();
    let warm = {
        let _verifier = start_verifier(port, &[]);
        wait_ready(&http, port).await;
        wait_all_accepted(&http, &ca_port(port), load_tokens).await; // also warms the cache
        load(&http, &ca_port(port), None, load_tokens).await
    };
    let port = free_port();
    let cold = {
        let _verifier = start_verifier(port, &["--verify-cache-capacity", "0"]);
        wait_ready(&http, port).await;
        wait_all_accepted(&http, &ca_port(port), load_tokens).await;
        load(&http, &ca_port(port), None, load_tokens).await
    };

    // Revocation: from the API server accepting `revoked: true` to the verifier denying.
    let port = free_port();
    let mut revocations = Vec::new();
    {
        let _verifier = start_verifier(port, &[]);
        wait_ready(&http, port).await;
        let url = ca_port(port);
        wait_all_accepted(&http, &url, revoke_tokens).await;
        for (i, value) in revoke_tokens.iter().enumerate() {
            let name = format!("t{}", TOKENS + i);
            tokens
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"revoked": true}})),
                )
                .await
                .unwrap();
            let accepted = Instant::now();
            while review(&http, &url, None, value).await.0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                assert!(
                    accepted.elapsed() < Duration::from_secs(30),
                    "revocation never took effect"
                );
            }
            revocations.push(accepted.elapsed());
        }
    }
    revocations.sort();

    // A fresh token's first verification (one argon2), unflooded; then each of FRESH more
    // tokens, never presented, while FLOOD_CLIENTS clients send forged secrets for its own id
    // (the lockout attempt of issue 21 N1: the owner must still get in, promptly).
    let port = free_port();
    let flood_report = {
        let _verifier = start_verifier(port, &[]);
        wait_ready(&http, port).await;
        let url = ca_port(port);
        let (unflooded, flooded) = fresh_tokens.split_at(FRESH);
        let quiet = first_verifications(&http, &url, unflooded).await;
        let flood_http = reqwest::Client::builder()
            .add_root_certificate(cluster_ca())
            .pool_max_idle_per_host(FLOOD_CLIENTS)
            .build()
            .unwrap();
        let metrics_url = format!("https://127.0.0.1:{port}/metrics");
        let mismatches = || {
            metric(
                &http,
                &metrics_url,
                r#"access_token_operator_argon2_verifications_total{result="Mismatch"}"#,
            )
        };
        let mut under_flood = Vec::new();
        let mut floods = Vec::new();
        for token in flooded {
            let id = Token::parse(token).unwrap().id().to_string();
            let before = mismatches().await;
            let flood = Flood::start(&flood_http, &url, &id);
            // Time the owner once the flood for its id is in full swing.
            wait_for(|| async {
                (mismatches().await >= before + FLOOD_WARMUP_MISSES).then_some(())
            })
            .await;
            under_flood.extend(first_verifications(&http, &url, std::slice::from_ref(token)).await);
            floods.push(flood.stop().await);
        }
        under_flood.sort();
        FloodReport {
            quiet,
            under_flood,
            flood: FloodTally::sum(floods),
            argon2_mismatches: mismatches().await,
        }
    };
    let hash_costs = [HashParams::default(), HashParams::PASSWORD_GRADE].map(|params| {
        let token = Token::generate();
        let phc = hash_token(&token, &params).unwrap();
        let rounds = 50;
        let started = Instant::now();
        for _ in 0..rounds {
            assert!(verify_token(&token, &phc));
        }
        (params, started.elapsed() / rounds)
    });

    let report = render(
        &baseline,
        &warm,
        &cold,
        &revocations,
        &flood_report,
        &hash_costs,
    );
    println!("{report}");
    support::write_benchmarks_section("bench-verify", &report);
}

/// Each token's first TokenReview, one at a time: latencies, sorted. Every one must authenticate.
async fn first_verifications(
    http: &reqwest::Client,
    url: &str,
    tokens: &[String],
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for token in tokens {
        let sent = Instant::now();
        let (ok, error) = review(http, url, None, token).await;
        latencies.push(sent.elapsed());
        assert!(ok, "a fresh token was refused on first use: {error:?}");
    }
    latencies.sort();
    latencies
}

/// A counter's value from /metrics (0 if absent).
async fn metric(http: &reqwest::Client, url: &str, series: &str) -> u64 {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    support::series_value(&text, series).unwrap_or(0.0) as u64
}

/// Forged secrets for one id from `FLOOD_CLIENTS` clients, bounded in count and time.
struct Flood {
    stop: Arc<std::sync::atomic::AtomicBool>,
    started: Instant,
    clients: Vec<tokio::task::JoinHandle<(usize, usize, usize)>>,
}

/// What the flood's requests got back.
struct FloodTally {
    sent: usize,
    authenticated: usize,
    errors: usize,
    elapsed: Duration,
}

impl Flood {
    fn start(http: &reqwest::Client, url: &str, id: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let clients = (0..FLOOD_CLIENTS)
            .map(|_| {
                let (http, url, id, stop) =
                    (http.clone(), url.to_string(), id.to_string(), stop.clone());
                tokio::spawn(async move {
                    let (mut sent, mut authenticated, mut errors) = (0, 0, 0);
                    while sent < FLOOD_MAX_PER_CLIENT
                        && started.elapsed() < FLOOD_FOR
                        && !stop.load(Ordering::Relaxed)
                    {
                        let (ok, error) =
                            review(&http, &url, None, &support::forged_token(&id)).await;
                        sent += 1;
                        authenticated += usize::from(ok);
                        errors += usize::from(error.is_some());
                    }
                    (sent, authenticated, errors)
                })
            })
            .collect();
        Self {
            stop,
            started,
            clients,
        }
    }

    async fn stop(self) -> FloodTally {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut tally = FloodTally {
            sent: 0,
            authenticated: 0,
            errors: 0,
            elapsed: Duration::ZERO,
        };
        for client in self.clients {
            let (sent, authenticated, errors) = client.await.unwrap();
            tally.sent += sent;
            tally.authenticated += authenticated;
            tally.errors += errors;
        }
        tally.elapsed = self.started.elapsed();
        assert_eq!(tally.authenticated, 0, "a forged secret authenticated");
        tally
    }
}

impl FloodTally {
    fn sum(tallies: Vec<FloodTally>) -> Self {
        tallies.into_iter().fold(
            FloodTally {
                sent: 0,
                authenticated: 0,
                errors: 0,
                elapsed: Duration::ZERO,
            },
            |all, one| FloodTally {
                sent: all.sent + one.sent,
                authenticated: all.authenticated + one.authenticated,
                errors: all.errors + one.errors,
                elapsed: all.elapsed + one.elapsed,
            },
        )
    }
}

struct FloodReport {
    quiet: Vec<Duration>,
    under_flood: Vec<Duration>,
    flood: FloodTally,
    argon2_mismatches: u64,
}

struct Load {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn load(http: &reqwest::Client, url: &str, bearer: Option<&str>, tokens: &[String]) -> Load {
    let tokens = Arc::new(tokens.to_vec());
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let (http, url, bearer, tokens) = (
                http.clone(),
                url.to_string(),
                bearer.map(String::from),
                tokens.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = worker;
                while started.elapsed() < RUN_FOR {
                    let token = &tokens[i % tokens.len()];
                    let sent = Instant::now();
                    let (ok, _) = review(&http, &url, bearer.as_deref(), token).await;
                    assert!(ok, "a valid token was refused under load");
                    latencies.push(sent.elapsed());
                    i += CONCURRENCY;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Load {
        requests: latencies.len(),
        elapsed,
        latencies,
    }
}

/// One TokenReview; (authenticated, error).
async fn review(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    token: &str,
) -> (bool, Option<String>) {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let mut request = http.post(url).json(&body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let answer: Value = request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    (
        answer["status"]["authenticated"] == true,
        answer["status"]["error"].as_str().map(String::from),
    )
}

async fn wait_all_accepted(http: &reqwest::Client, url: &str, tokens: &[String]) {
    for token in tokens {
        wait_for(|| async { review(http, url, None, token).await.0.then_some(()) }).await;
    }
}

async fn wait_ready(http: &reqwest::Client, port: u16) {
    let url = format!("https://127.0.0.1:{port}/readyz");
    wait_for(|| async {
        http.get(&url)
            .send()
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;
}

async fn wait_for<T, F, Fut>(check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_every(
        Duration::from_millis(20),
        Duration::from_secs(120),
        "the bench's condition",
        check,
    )
    .await
}

fn cluster_ca() -> reqwest::Certificate {
    let ca = std::fs::read(std::env::var("ATO_CLUSTER_CA").expect("run through make bench-verify"))
        .unwrap();
    reqwest::Certificate::from_pem(&ca).unwrap()
}

fn https_client() -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(cluster_ca())
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap()
}

/// The verifier over TLS on `port`, with extra flags.
fn start_verifier(port: u16, extra: &[&str]) -> tokio::process::Child {
    tls_verifier_on(port).args(extra).quiet().spawn()
}

fn render(
    baseline: &Load,
    warm: &Load,
    cold: &Load,
    revocations: &[Duration],
    flood: &FloodReport,
    hash_costs: &[(HashParams, Duration)],
) -> String {
    let row = |what: &str, load: &Load| {
        format!(
            "| {what} | {} | {:.0}/s | {} | {} | {:.2} |\n",
            load.requests,
            load.rate(),
            ms(percentile(&load.latencies, 0.50)),
            ms(percentile(&load.latencies, 0.99)),
            load.rate() / baseline.rate(),
        )
    };
    let mut out = String::new();
    out.push_str(&format!(
        "Measured {} on this project's machine ({} cores), release build, {CONCURRENCY} concurrent HTTPS/1.1 keep-alive clients for {}s each, {TOKENS} distinct tokens.\n\n",
        k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        RUN_FOR.as_secs()
    ));
    out.push_str("| TokenReview served by | requests | throughput | p50 | p99 | ratio to baseline |\n|---|---|---|---|---|---|\n");
    out.push_str(&row(
        "kube-apiserver, ServiceAccount token (baseline)",
        baseline,
    ));
    out.push_str(&row("verifier, warm argon2 cache", warm));
    out.push_str(&row(
        "verifier, no argon2 cache (every request hashes)",
        cold,
    ));
    out.push_str(&format!(
        "\nRevocation: from the API server accepting `revoked: true` to the verifier answering `authenticated: false`, over {} tokens: p50 {}, p99 {}, max {}.\n",
        revocations.len(),
        ms(percentile(revocations, 0.50)),
        ms(percentile(revocations, 0.99)),
        ms(*revocations.last().unwrap()),
    ));
    let tally = &flood.flood;
    out.push_str(&format!(
        "\nA fresh token's first verification (one argon2id each, {FRESH} tokens per row), with no other load, and while {FLOOD_CLIENTS} concurrent clients sent forged secrets (valid format and checksum) for that token's own id, timed once the verifier had hashed {FLOOD_WARMUP_MISSES} of them (the lockout attempt; goal: accepted, p99 under 300 ms):\n\n\
         | first verification | p50 | p99 | max |\n|---|---|---|---|\n\
         | unflooded | {} | {} | {} |\n\
         | its own id flooded | {} | {} | {} |\n\n\
         The floods: {} forged requests in {:.1} s ({:.0}/s), {} authenticated, {} answered \"could not check\", {} argon2id checks run in all.\n",
        ms(percentile(&flood.quiet, 0.5)),
        ms(percentile(&flood.quiet, 0.99)),
        ms(*flood.quiet.last().unwrap()),
        ms(percentile(&flood.under_flood, 0.5)),
        ms(percentile(&flood.under_flood, 0.99)),
        ms(*flood.under_flood.last().unwrap()),
        tally.sent,
        tally.elapsed.as_secs_f64(),
        tally.sent as f64 / tally.elapsed.as_secs_f64(),
        tally.authenticated,
        tally.errors,
        flood.argon2_mismatches,
    ));
    out.push_str("\nCost of one argon2id verification, in process, one core:\n\n| parameters | per hash |\n|---|---|\n");
    for (params, cost) in hash_costs {
        out.push_str(&format!(
            "| m={} KiB, t={}, p={}{} | {:.3} ms |\n",
            params.memory_kib,
            params.iterations,
            params.parallelism,
            if *params == HashParams::default() {
                " (default)"
            } else {
                " (previous default, OWASP password minimum)"
            },
            cost.as_secs_f64() * 1000.0,
        ));
    }
    out
}
