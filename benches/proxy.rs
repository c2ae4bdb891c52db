//! `make bench-proxy`: the authenticating proxy against the direct path, on one control
//! plane in one run. Direct: kube-apiserver authenticates the same access token through its
//! webhook (the verifier on `ATO_VERIFIER_PORT`). Through the proxy: the proxy authenticates
//! it in process and forwards with impersonation. Same token, same identity, same RBAC,
//! same HTTPS client. Measures GET p50/p99, a LIST of 1,000 objects, watch event delay,
//! throughput with 32 clients, and the proxy's RSS holding 1,000 open watches; writes its
//! results into BENCHMARKS.md.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, api::PostParams};
use serde_json::{Value, json};

#[path = "../tests/support/mod.rs"]
mod support;

use support::{
    Launch, bench_client, create_all, create_namespace, free_port, poll_every, proxy_kubeconfig,
    tls_verifier_on, write_benchmarks_section,
};

use access_token_operator::api::{AccessToken, Organization};

const NAMESPACE: &str = "bench-proxy";
const GETS: usize = 400;
const LISTS: usize = 20;
const LIST_OBJECTS: usize = 1_000;
const WATCH_EVENTS: usize = 30;
const CLIENTS: usize = 32;
const RUN_FOR: Duration = Duration::from_secs(8);
const WATCHES: usize = 1_000;

/// The two ways to kube-apiserver with the same token.
struct Paths {
    http: reqwest::Client,
    direct: String,
    proxied: String,
    token: String,
}

impl Paths {
    fn url(&self, proxied: bool, path: &str) -> String {
        let base = if proxied { &self.proxied } else { &self.direct };
        format!("{base}{path}")
    }

    async fn get(&self, http: &reqwest::Client, proxied: bool, path: &str) -> reqwest::Response {
        http.get(self.url(proxied, path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("the request is answered")
    }
}

#[tokio::main]
async fn main() {
    let Some(client) = bench_client().await else {
        return;
    };
    let token = issue_token(&client).await;
    let binary = env!("CARGO_BIN_EXE_access-token-operator");
    let webhook_port: u16 = env("ATO_VERIFIER_PORT").parse().unwrap();
    let _verifier = tls_verifier_on(webhook_port).quiet().spawn();
    let proxy_port = free_port();
    // As the proxy runs when installed: its own ServiceAccount, with the shipped RBAC (it
    // may impersonate the shards the operator keeps, nothing more).
    let proxy_kubeconfig = proxy_kubeconfig().await;
    let proxy = Launch::binary_at(
        binary,
        &[
            "proxy",
            "--proxy-bind",
            &format!("127.0.0.1:{proxy_port}"),
            "--tls-cert-file",
            &env("ATO_VERIFIER_CERT"),
            "--tls-key-file",
            &env("ATO_VERIFIER_KEY"),
        ],
    )
    .kubeconfig(&proxy_kubeconfig)
    .quiet()
    .spawn();
    let proxy_pid = proxy.id().expect("the proxy runs");
    let paths = Paths {
        http: https_client(false),
        direct: kube::Config::infer()
            .await
            .unwrap()
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string(),
        proxied: format!("https://127.0.0.1:{proxy_port}"),
        token,
    };
    let configmaps = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    let api = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE);
    create_configmaps(&api, "list", LIST_OBJECTS).await;
    for proxied in [false, true] {
        poll_every(
            Duration::from_millis(50),
            Duration::from_secs(120),
            "both paths serve the ConfigMap",
            || async {
                let response = paths
                    .get(&paths.http, proxied, &format!("{configmaps}/list-0"))
                    .await;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }
    let gets = time_gets(&paths, &format!("{configmaps}/list-0")).await;
    let lists = time_lists(&paths, &format!("{configmaps}?labelSelector=set%3Dlist")).await;
    let watch = watch_delays(&paths, &api, &configmaps).await;
    let throughput = [
        throughput(&paths, false, &format!("{configmaps}/list-0"), proxy_pid).await,
        throughput(&paths, true, &format!("{configmaps}/list-0"), proxy_pid).await,
    ];
    let rss = rss_with_watches(&paths, proxy_pid, &configmaps).await;
    let report = report(&gets, &lists, &watch, throughput, rss);
    print!("{report}");
    write_benchmarks_section("bench-proxy", &report);
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} unset: run through make bench-proxy"))
}

/// An Organization, a namespace, one AccessToken whose groups may read ConfigMaps there;
/// returns the token from its Secret.
async fn issue_token(client: &Client) -> String {
    create_namespace(client, NAMESPACE).await;
    let org: Organization = serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "Organization",
        "metadata": {"name": NAMESPACE}, "spec": {"tokenNamespaces": [NAMESPACE]}
    }))
    .unwrap();
    Api::<Organization>::all(client.clone())
        .create(&PostParams::default(), &org)
        .await
        .expect("organization");
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "bench-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": format!("accesstoken:org:{NAMESPACE}")}],
    }))
    .unwrap();
    Api::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    // The operator runs for the rest of the bench (lastUsedAt, like a real installation).
    std::mem::forget(
        Launch::operator_binary(&[
            "run",
            "--namespace",
            NAMESPACE,
            "--impersonation-role-shards=16",
        ])
        .quiet()
        .spawn(),
    );
    let token: AccessToken = serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
        "metadata": {"name": "bench", "namespace": NAMESPACE}, "spec": {"organization": NAMESPACE}
    }))
    .unwrap();
    Api::<AccessToken>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &token)
        .await
        .expect("token");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    poll_every(
        Duration::from_millis(50),
        Duration::from_secs(120),
        "the token's Secret",
        || async {
            let secret = secrets.get_opt("bench").await.ok()??;
            String::from_utf8(secret.data?.get("token")?.0.clone()).ok()
        },
    )
    .await
}

async fn create_configmaps(api: &Api<ConfigMap>, set: &str, count: usize) {
    let object = |i: usize| -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{set}-{i}"), "labels": {"set": set}},
            "data": {"key": "a value of some thirty-two bytes"}}))
        .unwrap()
    };
    create_all(api, (0..count).map(object)).await;
}

/// Sequential GETs, alternating the paths so both see the same moment of the machine.
async fn time_gets(paths: &Paths, path: &str) -> [Vec<Duration>; 2] {
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..GETS {
        for proxied in [false, true] {
            let started = Instant::now();
            let response = paths.get(&paths.http, proxied, path).await;
            assert!(response.status().is_success());
            response.bytes().await.unwrap();
            times[usize::from(proxied)].push(started.elapsed());
        }
    }
    times.iter_mut().for_each(|t| t.sort());
    times
}

async fn time_lists(paths: &Paths, path: &str) -> [Vec<Duration>; 2] {
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..LISTS {
        for proxied in [false, true] {
            let started = Instant::now();
            let list: Value = paths
                .get(&paths.http, proxied, path)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(list["items"].as_array().map(Vec::len), Some(LIST_OBJECTS));
            times[usize::from(proxied)].push(started.elapsed());
        }
    }
    times.iter_mut().for_each(|t| t.sort());
    times
}

/// From the create returning to the event arriving, on a watch of each path open at once.
async fn watch_delays(paths: &Paths, api: &Api<ConfigMap>, configmaps: &str) -> [Vec<Duration>; 2] {
    let (sender, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<(bool, String, Instant)>();
    for proxied in [false, true] {
        let path = format!("{configmaps}?watch=true&labelSelector=set%3Dwatch");
        let mut response = paths.get(&paths.http, proxied, &path).await;
        assert!(response.status().is_success());
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut pending = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                let at = Instant::now();
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    let event: Value = serde_json::from_str(&line).unwrap_or_default();
                    let name = event["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default();
                    let _ = sender.send((proxied, name.to_string(), at));
                }
            }
        });
    }
    let mut delays = [Vec::new(), Vec::new()];
    for i in 0..WATCH_EVENTS {
        let name = format!("watch-{i}");
        let object: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"set": "watch"}}}))
                .unwrap();
        api.create(&PostParams::default(), &object).await.unwrap();
        let created = Instant::now();
        let mut seen = [false, false];
        while seen != [true, true] {
            let (proxied, event, at) = arrivals.recv().await.expect("watches stay open");
            if event == name {
                seen[usize::from(proxied)] = true;
                delays[usize::from(proxied)].push(at.saturating_duration_since(created));
            }
        }
    }
    delays.iter_mut().for_each(|d| d.sort());
    delays
}

/// One throughput run: successful GETs a second, and the CPU each process spent per GET.
struct Throughput {
    rate: f64,
    /// CPU µs per GET: kube-apiserver, the proxy, this benchmark's clients.
    cpu_us: [f64; 3],
}

/// Successful GETs a second from `CLIENTS` concurrent keep-alive HTTP/1.1 clients, and
/// the CPU kube-apiserver, the proxy (`proxy_pid`) and the clients spent per GET.
async fn throughput(paths: &Paths, proxied: bool, path: &str, proxy_pid: u32) -> Throughput {
    let api_port = paths
        .direct
        .rsplit(':')
        .next()
        .expect("the API server URL has a port");
    let pids = [api_server_pid(api_port), proxy_pid, std::process::id()];
    let cpu_before = pids.map(cpu_seconds);
    let http = https_client(true);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (http, url, token, done) = (
                http.clone(),
                paths.url(proxied, path),
                paths.token.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                while started.elapsed() < RUN_FOR {
                    let response = http.get(&url).bearer_auth(&token).send().await;
                    if let Ok(response) = response
                        && response.status().is_success()
                        && response.bytes().await.is_ok()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let gets = done.load(Ordering::Relaxed) as f64;
    let cpu_after = pids.map(cpu_seconds);
    Throughput {
        rate: gets / started.elapsed().as_secs_f64(),
        cpu_us: std::array::from_fn(|i| (cpu_after[i] - cpu_before[i]) / gets * 1e6),
    }
}

/// CPU seconds (user and system) `pid` has used, from /proc (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The kube-apiserver of this control plane (the one serving `port`).
fn api_server_pid(port: &str) -> u32 {
    let port = format!("--secure-port={port}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"kube-apiserver"))
                    && args.contains(&port.as_bytes())
            })
        })
        .expect("kube-apiserver of this control plane runs")
}

/// The proxy's RSS (MiB) before and while it holds `WATCHES` open watches, each on a
/// connection of its own (HTTP/1.1, as kubectl's watches are when not multiplexed).
async fn rss_with_watches(paths: &Paths, pid: u32, configmaps: &str) -> (f64, f64) {
    let before = rss_mib(pid);
    let http = https_client(true);
    let mut open = Vec::with_capacity(WATCHES);
    let path = format!("{configmaps}?watch=true&labelSelector=set%3Dnone");
    for _ in 0..WATCHES {
        let response = paths.get(&http, true, &path).await;
        assert!(response.status().is_success());
        open.push(response);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = rss_mib(pid);
    drop(open);
    (before, during)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

fn https_client(http1: bool) -> reqwest::Client {
    let ca = std::fs::read(env("ATO_CLUSTER_CA")).unwrap();
    let builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .pool_max_idle_per_host(CLIENTS);
    let builder = if http1 { builder.http1_only() } else { builder };
    builder.build().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn report(
    gets: &[Vec<Duration>; 2],
    lists: &[Vec<Duration>; 2],
    watch: &[Vec<Duration>; 2],
    throughput: [Throughput; 2],
    (rss_before, rss_watches): (f64, f64),
) -> String {
    let ratio = |direct: Duration, proxied: Duration| proxied.as_secs_f64() / direct.as_secs_f64();
    let row = |what: &str, times: &[Vec<Duration>; 2], p: f64, goal: &str| {
        let (d, x) = (percentile(&times[0], p), percentile(&times[1], p));
        format!(
            "| {what} | {} | {} | {:.2}× | {goal} |\n",
            ms(d),
            ms(x),
            ratio(d, x)
        )
    };
    let watch_extra =
        percentile(&watch[1], 0.5).as_secs_f64() - percentile(&watch[0], 0.5).as_secs_f64();
    let mut out = format!(
        "\nRun at {} UTC (build: `cargo bench`, release; timings on this shared 2-core machine are noisy, \
         compare the ratios).\n\n| measure | direct (webhook) | through the proxy | ratio | goal |\n|---|---|---|---|---|\n",
        k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M"),
    );
    out.push_str(&row(
        &format!("GET p50 ({GETS} each)"),
        gets,
        0.5,
        "≤ 1.15×",
    ));
    out.push_str(&row("GET p99", gets, 0.99, ""));
    out.push_str(&row(
        &format!("LIST of {LIST_OBJECTS} objects, p50 ({LISTS} each)"),
        lists,
        0.5,
        "",
    ));
    out.push_str(&format!(
        "| watch event delay p50 ({WATCH_EVENTS} events) | {} | {} | {:+.2} ms | ≤ +2 ms |\n",
        ms(percentile(&watch[0], 0.5)),
        ms(percentile(&watch[1], 0.5)),
        watch_extra * 1000.0,
    ));
    out.push_str(&format!(
        "| throughput, {CLIENTS} clients, {} s | {:.0}/s | {:.0}/s | {:.2}× | ≥ 0.9× |\n",
        RUN_FOR.as_secs(),
        throughput[0].rate,
        throughput[1].rate,
        throughput[1].rate / throughput[0].rate,
    ));
    out.push_str(&format!(
        "\nWatch delay through the proxy minus direct, p50: {:+.2} ms. Proxy RSS: {rss_before:.1} MiB idle, \
         {rss_watches:.1} MiB holding {WATCHES} open watches (each on its own HTTP/1.1 connection, \
         so {WATCHES} client and {WATCHES} upstream TLS connections; goal ≤ 64 MiB).\n",
        watch_extra * 1000.0,
    ));
    let [direct, proxied] = &throughput;
    out.push_str(&format!(
        "\nCPU per GET in the throughput runs (all three share the machine's 2 cores): \
         kube-apiserver {:.0} µs direct, {:.0} µs behind the proxy (its impersonation checks); \
         the proxy {:.0} µs; the benchmark's clients {:.0} µs direct, {:.0} µs to the proxy.\n",
        direct.cpu_us[0], proxied.cpu_us[0], proxied.cpu_us[1], direct.cpu_us[2], proxied.cpu_us[2],
    ));
    out
}
