//! The benches' results file.

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in BENCHMARKS.md
/// with `report` (the markers are added at the end the first time).
pub fn write_benchmarks_section(name: &str, report: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let current = std::fs::read_to_string(path).expect("BENCHMARKS.md exists");
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let updated = match (current.find(&start), current.find(&end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{start}\n{report}{}", &current[..a], &current[b..])
        }
        _ => format!("{current}\n{start}\n{report}{end}\n"),
    };
    std::fs::write(path, updated).expect("BENCHMARKS.md is writable");
}

/// The control plane's client with the CRDs installed, when this bench binary runs as a
/// bench. `cargo test --benches` runs it in test mode, without `--bench`: None, nothing to do.
pub async fn bench_client() -> Option<kube::Client> {
    if !std::env::args().any(|a| a == "--bench") {
        return None;
    }
    let client = kube::Client::try_default()
        .await
        .expect("KUBECONFIG points at the local control plane");
    super::apply_crds(&client).await;
    Some(client)
}
