//! What both benchmarks need: the CRDs installed, processes started, free ports, polling.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};

/// Runs `binary` with `args`, its output discarded but for errors; killed when dropped.
pub fn spawn(binary: &str, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        // Probes on any free port: several processes of a bench run side by side.
        .env("PROBE_BIND", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starts")
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Calls `check` every `every` until it gives a value; panics after `deadline`.
pub async fn poll_until<T, F, Fut>(deadline: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(every).await;
    }
}

/// Applies the CRDs from the Rust types and waits until each is Established.
pub async fn install_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in access_token_operator::api::crds() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        poll_until(
            Duration::from_secs(60),
            Duration::from_millis(20),
            || async {
                let crd = api.get(&name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
}

/// The verifier of `binary` over TLS on loopback `port` with the local control plane's
/// serving certificate, with extra flags.
pub fn start_verifier(binary: &str, port: u16, extra: &[&str]) -> tokio::process::Child {
    let cert = std::env::var("ATO_VERIFIER_CERT").expect("the bench runs inside local-cluster.sh");
    let key = std::env::var("ATO_VERIFIER_KEY").expect("set with ATO_VERIFIER_CERT");
    let bind = format!("127.0.0.1:{port}");
    let mut args = vec![
        "verifier",
        "--verifier-bind",
        &bind,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ];
    args.extend_from_slice(extra);
    spawn(binary, &args)
}

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in BENCHMARKS.md.
pub fn write_section(name: &str, report: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let current = std::fs::read_to_string(path).expect("BENCHMARKS.md exists");
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let (Some(a), Some(b)) = (current.find(&start), current.find(&end)) else {
        panic!("BENCHMARKS.md lacks the {name} markers");
    };
    let updated = format!("{}{start}\n{report}{}", &current[..a], &current[b..]);
    std::fs::write(path, updated).expect("BENCHMARKS.md is writable");
}
