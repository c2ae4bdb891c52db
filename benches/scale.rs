//! `make bench-scale`: N AccessTokens (1,000 by default, `BENCH_SCALE_TOKENS` to change; in
//! one namespace, or spread over `BENCH_SCALE_NAMESPACES` of them) to all Active, against a floor measured in the same run (the contract's minimal write set,
//! five writes per token, raw, the best of 4 and 16 clients, plus N argon2id hashes at the
//! default cost on 2 threads; the operator writes exactly this set), and against kube-controller-manager's legacy ServiceAccount
//! token controller filling N `kubernetes.io/service-account-token` Secrets; then the
//! operator's CPU time and RSS after N tokens, after 10,000 unrelated Secrets and after a
//! restart, the Organization's status writes while issuing, and the verifier's RSS with N
//! tokens indexed. Needs the local control plane (the
//! make target starts it) and writes its results into BENCHMARKS.md.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Secret, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, PostParams},
};
use serde_json::json;

#[path = "../tests/support/mod.rs"]
mod support;

use support::{Launch, bench_client, create_namespace, free_port, tls_verifier_on};

use access_token_operator::{
    api::{AccessToken, Organization, Phase, TechnicalUser},
    token::{HashParams, Token, hash_token},
};

/// Parallel writers, as in issue 8's measurement (4 `kubectl create` clients).
const CLIENTS: usize = 4;
/// The floor's writers: it is the better of these two (issue 22).
const FLOOR_CLIENTS: [usize; 2] = [4, 16];
/// Unrelated Secrets created to show the operator's memory does not follow them.
const UNRELATED: usize = 10_000;
const ORG: &str = "scale";
const TOKENS_NS: &str = "scale-tokens";
/// Namespaces an Organization lists at most in this bench (its schema allows 256).
const ORG_NAMESPACES: usize = 250;
const FLOOR_NS: &str = "scale-floor";
const PEER_NS: &str = "scale-peer";
const UNRELATED_NS: &str = "scale-unrelated";

#[tokio::main]
async fn main() {
    let Some(client) = bench_client().await else {
        return;
    };
    let n: usize = std::env::var("BENCH_SCALE_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    // BENCH_SCALE_NAMESPACES spreads the tokens over that many namespaces (issue 22: 1,000).
    let layout = Layout::new(
        std::env::var("BENCH_SCALE_NAMESPACES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    );
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    for ns in [FLOOR_NS, PEER_NS, UNRELATED_NS] {
        create_namespace(&client, ns).await;
    }
    layout.create(&client).await;

    // The binary is copied so that a rebuild during the run cannot change what restarts.
    let binary = std::env::temp_dir().join(format!("ato-bench-scale-{}", std::process::id()));
    // BENCH_SCALE_BINARY measures another build of the operator (the image's static binary, say).
    let built = std::env::var("BENCH_SCALE_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_access-token-operator").to_string());
    std::fs::copy(&built, &binary).expect("binary copies");
    let binary = binary.to_string_lossy().into_owned();

    // BENCH_SCALE_FLOOR=0 skips the floor (about 35 minutes at 100,000, with the cleanup
    // between its two runs): the report then has no ratios.
    let mut raw = Vec::new();
    let mut hashes = Duration::ZERO;
    if std::env::var("BENCH_SCALE_FLOOR").as_deref() != Ok("0") {
        for clients in FLOOR_CLIENTS {
            eprintln!("floor: the minimal write set of {n} tokens, raw, by {clients} clients");
            raw.push((clients, minimal_write_set(&client, n, clients).await));
        }
        eprintln!("floor: {n} argon2id hashes on 2 threads");
        hashes = hashes_on_two_threads(n);
    }
    // BENCH_SCALE_PEER=0 skips the peer (about 100 s for 1,000 on this machine) while iterating.
    let peer = if std::env::var("BENCH_SCALE_PEER").as_deref() == Ok("0") {
        Duration::ZERO
    } else {
        eprintln!("peer: {n} legacy ServiceAccount token Secrets");
        legacy_sa_tokens(&client, n).await
    };

    eprintln!("operator: {n} AccessTokens");
    let probe = Probe::new();
    let mut operator = Launch::binary_at(&binary, &probe.args()).quiet().spawn();
    let pid = operator.id().expect("operator runs");
    let _ = quiescent(pid, Duration::from_secs(30)).await;
    let idle = Sample::of(pid);
    let issuing_cpu_before = cpu_seconds(pid);
    let scope_writes = ScopeWrites::count(&client).await;
    let requests_before = ApiRequests::read(&client).await;
    let issue = issue_tokens(&client, &layout, n).await;
    // Let the status writes that follow the last Active settle before reading the figures.
    let _ = quiescent(pid, Duration::from_secs(30)).await;
    let scope_writes = scope_writes.stop();
    let issuing_requests = ApiRequests::read(&client).await.since(&requests_before);
    let after_issue = Sample::of(pid);
    let issuing_cpu = after_issue.cpu - issuing_cpu_before;
    let issuing_reconciles = probe.token_reconciles().await;
    let issuing_breakdown = probe.token_breakdown(n).await;

    eprintln!("operator: {UNRELATED} unrelated Secrets");
    unrelated_secrets(&client, UNRELATED).await;
    let _ = quiescent(pid, Duration::from_secs(30)).await;
    let after_unrelated = Sample::of(pid);

    eprintln!("operator: restart");
    terminate(&mut operator).await;
    let probe = Probe::new();
    let requests_before = ApiRequests::read(&client).await;
    // BENCH_SCALE_RESTART_WRAPPER (e.g. "heaptrack -o /tmp/heap") runs the restarted operator
    // under a profiler; its CPU and RSS figures are then the wrapper's, for diagnosis only.
    let mut operator = match std::env::var("BENCH_SCALE_RESTART_WRAPPER") {
        Ok(wrapper) => {
            let mut words: Vec<&str> = wrapper.split_whitespace().collect();
            let program = words.remove(0);
            words.push(&binary);
            words.extend(probe.args());
            Launch::binary_at(program, &words).quiet().spawn()
        }
        Err(_) => Launch::binary_at(&binary, &probe.args()).quiet().spawn(),
    };
    let pid = operator.id().expect("operator runs");
    // Idle is not done: at 100,000 the restarted operator waits minutes on its paged first
    // lists using next to no CPU. Done is every token reconciled once, then idle.
    let restarted = Instant::now();
    let _ = tokio::time::timeout(deadline_for(n, Duration::from_millis(5)), async {
        while probe.token_reconciles().await < n as f64 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let _ = quiescent(pid, Duration::from_secs(120)).await;
    let restart_wall = restarted.elapsed().saturating_sub(Duration::from_secs(3));
    let after_restart = Sample::of(pid);
    let restart_requests = ApiRequests::read(&client).await.since(&requests_before);
    let restart_reconciles = probe.token_reconciles().await;
    let restart_breakdown = probe.token_breakdown(n).await;
    let still_active = count_active(&Api::all(client.clone())).await;
    let etcd = etcd_size();
    terminate(&mut operator).await;

    eprintln!("verifier: {n} tokens indexed");
    let verifier = verifier_rss(&binary).await;
    let _ = std::fs::remove_file(&binary);

    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let report = Report {
        n,
        layout,
        etcd,
        raw,
        hashes,
        peer,
        issue,
        scope_writes,
        issuing_cpu,
        issuing_reconciles,
        issuing_breakdown,
        issuing_requests,
        restart_reconciles,
        restart_breakdown,
        restart_requests,
        idle,
        after_issue,
        after_unrelated,
        restart_wall,
        after_restart,
        still_active,
        verifier,
        load: (first3(&load_before), first3(&load_after)),
    }
    .render();
    println!("{report}");
    support::write_benchmarks_section("bench-scale", &report);
}

/// Where the operator's tokens go: `namespaces` namespaces (token i in namespace i mod their
/// number), listed by Organizations of at most ORG_NAMESPACES each. One namespace is
/// `scale-tokens` of Organization `scale`, as in the earlier rounds.
struct Layout {
    namespaces: Vec<String>,
    organizations: Vec<String>,
}

impl Layout {
    fn new(namespaces: usize) -> Self {
        let namespaces: Vec<String> = match namespaces.max(1) {
            1 => vec![TOKENS_NS.to_string()],
            m => (0..m).map(|j| format!("{TOKENS_NS}-{j}")).collect(),
        };
        let organizations = (0..namespaces.len().div_ceil(ORG_NAMESPACES))
            .map(|k| match k {
                0 => ORG.to_string(),
                k => format!("{ORG}-{k}"),
            })
            .collect();
        Self {
            namespaces,
            organizations,
        }
    }

    /// Token i's namespace and Organization.
    fn of(&self, i: usize) -> (&str, &str) {
        let j = i % self.namespaces.len();
        (&self.namespaces[j], &self.organizations[j / ORG_NAMESPACES])
    }

    /// Creates the namespaces and the Organizations that list them.
    async fn create(&self, client: &Client) {
        for namespace in &self.namespaces {
            create_namespace(client, namespace).await;
        }
        for (k, name) in self.organizations.iter().enumerate() {
            let listed: Vec<&String> = (self.namespaces.iter())
                .skip(k * ORG_NAMESPACES)
                .take(ORG_NAMESPACES)
                .collect();
            let org: Organization = serde_json::from_value(json!({
                "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "Organization",
                "metadata": {"name": name}, "spec": {"tokenNamespaces": listed}
            }))
            .unwrap();
            Api::<Organization>::all(client.clone())
                .create(&PostParams::default(), &org)
                .await
                .expect("organization");
        }
    }
}

/// How long the bench waits for something that takes about `per_token` per token: 15 minutes
/// and that (10,000 tokens fit in the 15 minutes; 100,000 do not).
fn deadline_for(n: usize, per_token: Duration) -> Duration {
    Duration::from_secs(900) + per_token * n as u32
}

/// The etcd database file's size in MiB (what etcd holds, with the history it has not
/// compacted or defragmented yet), if the control plane is local.
fn etcd_size() -> Option<f64> {
    let dir = std::env::var("ATO_CLUSTER_DIR").ok()?;
    let db = std::fs::metadata(format!("{dir}/etcd/member/snap/db")).ok()?;
    Some(db.len() as f64 / 1024.0 / 1024.0)
}

/// The floor's API part: the contract's minimal write set (DESIGN.md, issue 22), raw, by
/// `clients` parallel writers doing each token's writes in order: the user's AccessToken
/// create, a TechnicalUser create that already holds the credential's hash, the Secret, one
/// Event and one status write; five writes per token. The AccessTokens are deleted again
/// (they carry no finalizer) before the operator starts.
async fn minimal_write_set(client: &Client, n: usize, clients: usize) -> Duration {
    use kube::api::{DeleteParams, Patch, PatchParams};
    let tokens: Api<AccessToken> = Api::namespaced(client.clone(), FLOOR_NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), FLOOR_NS);
    let users: Api<TechnicalUser> = Api::namespaced(client.clone(), FLOOR_NS);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), FLOOR_NS);
    let hash = hash_token(&Token::generate(), &HashParams::default()).unwrap();
    let started = Instant::now();
    parallel_by(clients, n, |i| {
        let (tokens, secrets, users, events) = (
            tokens.clone(),
            secrets.clone(),
            users.clone(),
            events.clone(),
        );
        let hash = hash.clone();
        async move {
            let name = format!("c{clients}-t{i}");
            tokens
                .create(&PostParams::default(), &an_access_token(&name))
                .await
                .expect("AccessToken");
            let value = Token::generate();
            users
                .create(
                    &PostParams::default(),
                    &a_technical_user(&name, &value, &hash),
                )
                .await
                .expect("TechnicalUser");
            secrets
                .create(
                    &PostParams::default(),
                    &a_token_secret(FLOOR_NS, &name, &value),
                )
                .await
                .expect("Secret");
            events
                .create(
                    &PostParams::default(),
                    &an_issued_event(FLOOR_NS, &name, &value),
                )
                .await
                .expect("Event");
            let status = json!({"status": {"phase": "Active", "tokenId": value.id().as_str()}});
            tokens
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("status");
        }
    })
    .await;
    let elapsed = started.elapsed();
    delete_all(&tokens).await;
    // The rest goes too, so that a 100,000-token run stays well inside etcd's 2 GiB quota.
    let all = (&DeleteParams::default(), &ListParams::default());
    let _ = users.delete_collection(all.0, all.1).await;
    let _ = secrets.delete_collection(all.0, all.1).await;
    let _ = events.delete_collection(all.0, all.1).await;
    elapsed
}

/// An AccessToken of the bench's organization, as a client creates it.
fn an_access_token(name: &str) -> AccessToken {
    serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
        "metadata": {"name": name},
        "spec": {"organization": ORG, "lifetime": "30d"}
    }))
    .unwrap()
}

/// The TechnicalUser of token `value`, its credential's hash already in it.
fn a_technical_user(name: &str, value: &Token, hash: &str) -> TechnicalUser {
    serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "TechnicalUser",
        "metadata": {"name": name},
        "spec": {
            "scope": {"kind": "Organization", "name": ORG, "organization": ORG},
            "role": "OrganizationUser", "disabled": false,
            "expiresAt": "2030-01-01T00:00:00Z",
            "credentials": [{"id": value.id().as_str(), "hash": hash, "notAfter": "2030-01-01T00:00:00Z"}]
        }
    }))
    .unwrap()
}

/// The Secret of token `value`, with the keys the operator writes.
fn a_token_secret(namespace: &str, name: &str, value: &Token) -> Secret {
    let data = BTreeMap::from(
        [
            ("token", value.expose_secret().to_string()),
            ("token-id", value.id().to_string()),
            ("username", format!("accesstoken:{namespace}:{name}")),
            ("organization", ORG.to_string()),
            ("role", "OrganizationUser".to_string()),
            ("expires-at", "2030-01-01T00:00:00Z".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes()))),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        type_: Some("iam.accesstoken.io/token".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The `TokenIssued` Event of token `value` for AccessToken `namespace/name`.
fn an_issued_event(
    namespace: &str,
    name: &str,
    value: &Token,
) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::api::core::v1::{Event, ObjectReference};
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.issued")),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("iam.accesstoken.io/v1alpha1".into()),
            kind: Some("AccessToken".into()),
            name: Some(name.to_string()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        reason: Some("TokenIssued".into()),
        message: Some(format!("Issued token {}", value.id())),
        type_: Some("Normal".into()),
        ..Default::default()
    }
}

/// Deletes every AccessToken `tokens` holds (none carries a finalizer) and waits until they are gone.
async fn delete_all(tokens: &Api<AccessToken>) {
    use kube::api::DeleteParams;
    // A collection delete ends with the API server's request timeout (a minute) when there
    // are many (100,000 take longer): it is repeated until none is left.
    poll_until(|| async {
        let all = (&DeleteParams::default(), &ListParams::default());
        let _ = tokens.delete_collection(all.0, all.1).await;
        let left = tokens.list(&ListParams::default().limit(1)).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
}

/// The floor's hashing part: N argon2id hashes at the default cost, on 2 threads (2 cores).
fn hashes_on_two_threads(n: usize) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for share in [n / 2, n - n / 2] {
            scope.spawn(move || {
                for _ in 0..share {
                    hash_token(&Token::generate(), &HashParams::default()).unwrap();
                }
            });
        }
    });
    started.elapsed()
}

/// The built-in peer: N ServiceAccounts and N legacy token Secrets, until
/// kube-controller-manager's token controller has filled every one.
async fn legacy_sa_tokens(client: &Client, n: usize) -> Duration {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), PEER_NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), PEER_NS);
    let started = Instant::now();
    let filled = until_n_match(secrets.clone(), n, |s: &Secret| {
        s.data.as_ref().is_some_and(|d| d.contains_key("token"))
    });
    let create = parallel(n, |i| {
        let (accounts, secrets) = (accounts.clone(), secrets.clone());
        async move {
            let name = format!("sa{i}");
            let account = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            accounts
                .create(&PostParams::default(), &account)
                .await
                .expect("ServiceAccount");
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    annotations: Some(BTreeMap::from([(
                        "kubernetes.io/service-account.name".to_string(),
                        name,
                    )])),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/service-account-token".into()),
                ..Default::default()
            };
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .expect("legacy token Secret");
        }
    });
    futures::join!(create, filled);
    started.elapsed()
}

/// Watches `api` until `n` of its objects match at once. A watch rather than polling LISTs,
/// so that measuring adds next to nothing to the API server's load.
async fn until_n_match<K>(api: Api<K>, n: usize, matches: impl Fn(&K) -> bool)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    use kube::{
        ResourceExt,
        runtime::{WatchStreamExt, watcher},
    };
    let mut matching = std::collections::HashSet::new();
    let mut objects = std::pin::pin!(watcher(api, watcher::Config::default()).touched_objects());
    let deadline = tokio::time::Instant::now() + deadline_for(n, Duration::from_millis(30));
    while matching.len() < n {
        let next = tokio::time::timeout_at(deadline, objects.next()).await;
        let Ok(Some(Ok(object))) = next else {
            panic!(
                "the watch ended or timed out with {} of {n}",
                matching.len()
            );
        };
        if matches(&object) {
            matching.insert(object.name_any());
        } else {
            matching.remove(&object.name_any());
        }
    }
}

/// Counts the writes of the bench's Organizations from `count` to `stop`: while their tokens
/// are issued nothing else changes them, so each is one of the operator's status writes.
struct ScopeWrites {
    writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    watch: tokio::task::JoinHandle<()>,
}

impl ScopeWrites {
    /// Starts counting once the watch has listed the Organization.
    async fn count(client: &Client) -> Self {
        use kube::runtime::watcher;
        let orgs: Api<Organization> = Api::all(client.clone());
        let config = watcher::Config::default();
        let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (listed, on_listed) = tokio::sync::oneshot::channel();
        let counted = writes.clone();
        let watch = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(orgs, config));
            let mut listed = Some(listed);
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(listed) = listed.take() {
                            let _ = listed.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(_)) if listed.is_none() => {
                        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        on_listed.await.expect("the Organization watch lists");
        Self { writes, watch }
    }

    fn stop(self) -> usize {
        self.watch.abort();
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The operator's probe server, on a port of its own, for its reconcile counter.
struct Probe {
    bind: String,
}

impl Probe {
    fn new() -> Self {
        Self {
            bind: format!("127.0.0.1:{}", free_port()),
        }
    }

    /// The operator's flags: cluster-wide, no group index, probes on this port.
    fn args(&self) -> [&str; 5] {
        [
            "run",
            "--group-index-namespace",
            "",
            "--probe-bind",
            &self.bind,
        ]
    }

    /// The operator's metrics, as text.
    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.bind);
        match reqwest::get(&url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// AccessToken reconciles since the process started, whatever their result.
    async fn token_reconciles(&self) -> f64 {
        let text = self.metrics().await;
        series(&text, "access_token_operator_reconciles_total")
            .filter(|(labels, _)| labels.contains(r#"controller="AccessToken""#))
            .map(|(_, value)| value)
            .sum()
    }

    /// Per token since the process started: the AccessToken reconciles asked for, by what
    /// asked, and the failed ones, by the step that failed (a write conflict is a quiet retry).
    async fn token_breakdown(&self, n: usize) -> String {
        let text = self.metrics().await;
        let per_token = |name: &str, label: &str, only: &str| {
            let counts = (series(&text, name))
                .filter(|(labels, value)| labels.contains(only) && *value > 0.0)
                .map(|(labels, value)| {
                    let of = labels.split(label).nth(1).and_then(|v| v.split('"').nth(1));
                    format!("{} {:.3}", of.unwrap_or("?"), value / n as f64)
                })
                .collect::<Vec<_>>();
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            }
        };
        format!(
            "asked for by {}; failed at {}",
            per_token(
                "access_token_operator_reconcile_triggers_total",
                "source=",
                ""
            ),
            per_token(
                "access_token_operator_reconcile_failures_total",
                "step=",
                r#"controller="AccessToken""#
            ),
        )
    }
}

/// The series of counter `name` in a metrics text: their labels and values.
fn series<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines()
        .filter_map(move |line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels, value.parse().ok()?))
        })
}

/// The resources the operator reads and writes.
const OPERATOR_RESOURCES: [&str; 6] = [
    "accesstokens",
    "technicalusers",
    "secrets",
    "organizations",
    "groups",
    "events",
];

/// kube-apiserver's count of requests for the operator's resources, by verb (its
/// `apiserver_request_total`): the same counter whoever asks, so read it only while the
/// operator is the only client of these resources.
#[derive(Default)]
struct ApiRequests(BTreeMap<String, f64>);

impl ApiRequests {
    async fn read(client: &Client) -> Self {
        let request = hyper::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = client
            .request_text(request)
            .await
            .expect("kube-apiserver /metrics");
        let mut by_verb = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
        {
            let label = |name: &str| {
                // Labels are sorted and `code` comes first: every other one follows a comma.
                let start = line.find(&format!(",{name}=\""))? + name.len() + 3;
                let end = line[start..].find('"')?;
                Some(line[start..start + end].to_string())
            };
            let (Some(resource), Some(verb)) = (label("resource"), label("verb")) else {
                continue;
            };
            let value = line
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok());
            if OPERATOR_RESOURCES.contains(&resource.as_str()) {
                *by_verb.entry(verb).or_insert(0.0) += value.unwrap_or(0.0);
            }
        }
        Self(by_verb)
    }

    /// The requests made since `before`, by verb.
    fn since(&self, before: &Self) -> Self {
        let verbs = self.0.iter().map(|(verb, now)| {
            let then = before.0.get(verb).copied().unwrap_or(0.0);
            (verb.clone(), now - then)
        });
        Self(verbs.filter(|(_, count)| *count > 0.0).collect())
    }

    /// Requests with a verb `counted` accepts.
    fn count(&self, counted: impl Fn(&str) -> bool) -> f64 {
        (self.0.iter())
            .filter(|(verb, _)| counted(verb))
            .map(|(_, count)| count)
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0
    }

    /// Requests that change something (every verb but GET, LIST and WATCH).
    fn writes(&self) -> f64 {
        self.count(|verb| !["GET", "LIST", "WATCH"].contains(&verb))
    }

    fn describe(&self) -> String {
        let verbs: Vec<String> = (self.0.iter())
            .map(|(verb, count)| format!("{verb} {count:.0}"))
            .collect();
        if verbs.is_empty() {
            "none".into()
        } else {
            verbs.join(", ")
        }
    }
}

/// Creates N AccessTokens from CLIENTS parallel writers, spread as `layout` says; the time
/// until all are Active.
async fn issue_tokens(client: &Client, layout: &Layout, n: usize) -> Duration {
    let started = Instant::now();
    let active = until_n_match(Api::<AccessToken>::all(client.clone()), n, |t| {
        t.status.as_ref().and_then(|s| s.phase) == Some(Phase::Active)
    });
    let create = parallel(n, |i| {
        let (namespace, org) = layout.of(i);
        let tokens: Api<AccessToken> = Api::namespaced(client.clone(), namespace);
        let token: AccessToken = serde_json::from_value(json!({
            "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "AccessToken",
            "metadata": {"name": format!("t{i}")},
            "spec": {"organization": org, "lifetime": "30d"}
        }))
        .unwrap();
        async move {
            tokens
                .create(&PostParams::default(), &token)
                .await
                .expect("AccessToken");
        }
    });
    futures::join!(create, active);
    started.elapsed()
}

async fn count_active(tokens: &Api<AccessToken>) -> usize {
    let Ok(list) = tokens.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|t| t.status.as_ref().and_then(|s| s.phase) == Some(Phase::Active))
        .count()
}

async fn unrelated_secrets(client: &Client, n: usize) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), UNRELATED_NS);
    parallel(n, |i| {
        let secrets = secrets.clone();
        async move {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(format!("unrelated-{i}")),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "blob".to_string(),
                    ByteString(vec![b'x'; 1024]),
                )])),
                ..Default::default()
            };
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .expect("unrelated Secret");
        }
    })
    .await;
}

/// The verifier's RSS once it is ready (its index of every token loaded).
async fn verifier_rss(binary: &str) -> Sample {
    let port = free_port();
    let mut verifier = tls_verifier_on(port).binary(binary).quiet().spawn();
    let pid = verifier.id().expect("verifier runs");
    let ca = std::fs::read(std::env::var("ATO_CLUSTER_CA").expect("cluster CA")).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/readyz");
    poll_until(|| async {
        let response = http.get(&url).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    let _ = quiescent(pid, Duration::from_secs(30)).await;
    let sample = Sample::of(pid);
    terminate(&mut verifier).await;
    sample
}

/// Runs `make(i)` for i in 0..n with CLIENTS of them in flight at a time.
async fn parallel<F, Fut>(n: usize, make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    parallel_by(CLIENTS, n, make).await;
}

/// Runs `make(i)` for i in 0..n with `clients` of them in flight at a time.
async fn parallel_by<F, Fut>(clients: usize, n: usize, make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    stream::iter(0..n)
        .map(make)
        .buffer_unordered(clients)
        .collect::<Vec<()>>()
        .await;
}

/// CPU time and memory of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// User + system CPU seconds since it started.
    cpu: f64,
    /// Resident set, MiB.
    rss: f64,
    /// Peak resident set, MiB.
    hwm: f64,
    /// Resident set but mapped files (the binary's code), MiB.
    anon: f64,
}

impl Sample {
    fn of(pid: u32) -> Self {
        let memory = support::Memory::of(pid);
        Sample {
            cpu: cpu_seconds(pid),
            rss: memory.rss,
            hwm: memory.peak,
            anon: memory.anon,
        }
    }
}

/// utime + stime of a process, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // Fields 14 and 15 of stat(5); after the name, state is index 0, so utime is 11.
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

/// Waits until the process has used under 0.05 CPU seconds over 3 seconds (or `at_most`
/// passed); returns how long that took.
async fn quiescent(pid: u32, at_most: Duration) -> Duration {
    let started = Instant::now();
    let mut window = std::collections::VecDeque::from([cpu_seconds(pid)]);
    while started.elapsed() < at_most {
        tokio::time::sleep(Duration::from_secs(1)).await;
        window.push_back(cpu_seconds(pid));
        if window.len() > 4 {
            window.pop_front();
        }
        if window.len() == 4 && window[3] - window[0] < 0.05 {
            return started.elapsed().saturating_sub(Duration::from_secs(3));
        }
    }
    started.elapsed()
}

/// Polls every 250 ms for up to 15 minutes (10,000 tokens take a while).
async fn poll_until<T, F, Fut>(check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    support::poll_every(
        Duration::from_millis(250),
        Duration::from_secs(900),
        "the bench's condition",
        check,
    )
    .await
}

async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn first3(loadavg: &str) -> String {
    loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Report {
    n: usize,
    layout: Layout,
    /// etcd's database file at the end, MiB.
    etcd: Option<f64>,
    /// The minimal write set's time by the number of clients that wrote it.
    raw: Vec<(usize, Duration)>,
    hashes: Duration,
    peer: Duration,
    issue: Duration,
    scope_writes: usize,
    issuing_cpu: f64,
    issuing_reconciles: f64,
    issuing_breakdown: String,
    /// kube-apiserver's requests for the operator's resources while issuing (the bench's own
    /// creates and watch included).
    issuing_requests: ApiRequests,
    restart_reconciles: f64,
    restart_breakdown: String,
    restart_requests: ApiRequests,
    idle: Sample,
    after_issue: Sample,
    after_unrelated: Sample,
    restart_wall: Duration,
    after_restart: Sample,
    still_active: usize,
    verifier: Sample,
    load: (String, String),
}

impl Report {
    fn render(&self) -> String {
        let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
        let best = self.raw.iter().map(|(_, d)| *d).min().unwrap_or_default();
        let floor = best + self.hashes;
        let ratio = |d: Duration| match floor.is_zero() {
            true => "no floor measured".to_string(),
            false => format!("{:.2}", d.as_secs_f64() / floor.as_secs_f64()),
        };
        let mib = |v: f64| format!("{v:.1} MiB");
        let n = self.n;
        let grew = (self.after_unrelated.rss / self.after_issue.rss - 1.0) * 100.0;
        let concurrency = match std::env::var("RECONCILE_CONCURRENCY") {
            Ok(value) => format!("RECONCILE_CONCURRENCY={value}"),
            Err(_) => "default reconcile concurrency".to_string(),
        };
        let build = match std::env::var("BENCH_SCALE_BINARY") {
            Ok(path) => format!("the operator binary `{path}`"),
            Err(_) if cfg!(debug_assertions) => {
                "debug build with optimised dependencies (as `make run`)".to_string()
            }
            Err(_) => "optimised build (`BENCH_SCALE_PROFILE=release`)".to_string(),
        };
        let now = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let mut out = format!(
            "Measured {now} on this project's machine (2 cores, shared; load average {} before, {} after), \
             {build}, operator cluster-wide ({concurrency}), \
             {n} AccessTokens (lifetime 30d) in {}, created by {CLIENTS} parallel clients.\n\n",
            self.load.0,
            self.load.1,
            self.layout.describe()
        );
        out += "| figure | value | ratio to the floor |\n|---|---|---|\n";
        for (clients, took) in &self.raw {
            out += &format!(
                "| floor: the minimal write set of {n} tokens (AccessToken, TechnicalUser with its hash, Secret, Event, status: {} writes) raw by {clients} clients | {} | |\n",
                5 * n,
                s(*took)
            );
        }
        if !floor.is_zero() {
            out += &format!(
                "| floor: {n} argon2id hashes at the default cost on 2 threads | {} | |\n",
                s(self.hashes)
            );
            out += &format!(
                "| **floor** (the better write set and the hashes) | **{}** | 1.00 |\n",
                s(floor)
            );
        }
        out += &format!(
            "| **operator: {n} AccessTokens to all Active** | **{}** | **{}** |\n",
            s(self.issue),
            ratio(self.issue)
        );
        // BENCH_SCALE_PEER=0 skipped the peer: no row rather than a zero.
        if !self.peer.is_zero() {
            out += &format!(
                "| peer: kube-controller-manager fills {n} legacy ServiceAccount token Secrets | {} | {} |\n",
                s(self.peer),
                ratio(self.peer)
            );
        }
        let orgs = self.layout.organizations.len();
        out += &format!(
            "\nThe {orgs} Organization(s)' status was written {} times while their {n} tokens were \
             issued and settled ({:.1} per Organization per second of the burst; the count throttle allows 1).\n",
            self.scope_writes,
            self.scope_writes as f64 / orgs as f64 / self.issue.as_secs_f64()
        );
        out += &format!(
            "\nkube-apiserver requests for the operator's resources while issuing (the bench's \
             creates and watch included): {} ({:.2} GETs per token).\n",
            self.issuing_requests.describe(),
            self.issuing_requests.count(|verb| verb == "GET") / n as f64,
        );
        out += &format!(
            "\nAccessToken reconciles per token: {:.2} while issuing, {:.2} after the restart. \
             kube-apiserver requests for the operator's resources during the restart: {} \
             ({:.0} writes; {:.1} GETs per token).\n",
            self.issuing_reconciles / n as f64,
            self.restart_reconciles / n as f64,
            self.restart_requests.describe(),
            self.restart_requests.writes(),
            self.restart_requests.count(|verb| verb == "GET") / n as f64,
        );
        out += &format!(
            "\nPer token while issuing, reconciles {}. After the restart, {}.\n",
            self.issuing_breakdown, self.restart_breakdown
        );
        out += "\n| operator process | CPU | RSS | anonymous RSS (without the mapped binary) | peak RSS |\n|---|---|---|---|---|\n";
        out += &format!(
            "| started, idle, no tokens | {:.1} s | {} | {} | {} |\n",
            self.idle.cpu,
            mib(self.idle.rss),
            mib(self.idle.anon),
            mib(self.idle.hwm)
        );
        out += &format!(
            "| after issuing {n} tokens (CPU of the issue only; RSS {:.1} KiB per token over idle) | {:.1} s | {} | {} | {} |\n",
            (self.after_issue.rss - self.idle.rss) * 1024.0 / n as f64,
            self.issuing_cpu,
            mib(self.after_issue.rss),
            mib(self.after_issue.anon),
            mib(self.after_issue.hwm)
        );
        out += &format!(
            "| after {UNRELATED} unrelated 1 KiB Secrets (RSS {grew:+.1} %) | {:.1} s in all | {} | {} | {} |\n",
            self.after_unrelated.cpu,
            mib(self.after_unrelated.rss),
            mib(self.after_unrelated.anon),
            mib(self.after_unrelated.hwm)
        );
        out += &format!(
            "| restarted with {n} tokens (CPU until idle, {} to idle; {} of {n} still Active) | **{:.2} s** | {} | {} | {} |\n",
            s(self.restart_wall),
            self.still_active,
            self.after_restart.cpu,
            mib(self.after_restart.rss),
            mib(self.after_restart.anon),
            mib(self.after_restart.hwm)
        );
        out += &format!(
            "| verifier (own process) with {n} tokens indexed | {:.2} s | {} | {} | {} |\n",
            self.verifier.cpu,
            mib(self.verifier.rss),
            mib(self.verifier.anon),
            mib(self.verifier.hwm)
        );
        if let Some(etcd) = self.etcd {
            out += &format!(
                "\netcd's database file at the end: {} (the tokens, their children, {UNRELATED} unrelated \
                 Secrets, the floor's deleted objects until etcd compacts them, and the control plane's own).\n",
                mib(etcd)
            );
        }
        out
    }
}

impl Layout {
    fn describe(&self) -> String {
        match (self.namespaces.len(), self.organizations.len()) {
            (1, 1) => "one namespace of one organization".to_string(),
            (m, k) => {
                format!("{m} namespaces of {k} organizations (at most {ORG_NAMESPACES} each)")
            }
        }
    }
}
