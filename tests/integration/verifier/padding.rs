//! DESIGN.md, Verifier: "What a process keeps per token is bounded by the fields it needs,
//! whatever labels, annotations or other padding a tenant adds to the objects." A tenant pads
//! AccessTokens (and their Secrets) to the API server's size limit; neither the operator nor
//! the verifier grows with padded tokens by more than with the same number of plain ones,
//! and a restart's relist of the padded objects costs at most its list pages in flight.

use std::collections::BTreeMap;

use futures::{StreamExt, stream};
use kube::api::{Patch, PatchParams};
use serde_json::json;

use access_token_operator::api::{LIST_PAGE_SIZE, Phase};

use crate::support::{
    LoopbackVerifier, Memory, Operator, Tenant, eventually, eventually_for, operator_kubeconfig,
};

/// Tokens per batch: one plain, then two padded. Enough that keeping the padding (about
/// 1 MiB per token) would be tens of MiB, far above allocator noise.
const TOKENS: usize = 40;

/// Allocator noise and the other tests' tokens the (cluster-wide) verifier also learns of
/// while this test runs. (The first padded batch leaves 12 to 15 MiB behind in each process,
/// the same for 40 tokens as for 80: buffers and freed heap that grew to fit 1 MiB objects
/// and are reused after; so the second batch is the one compared.)
const NOISE_MIB: f64 = 8.0;

/// Labels and annotations of about 1 MiB, what one object can carry: etcd refuses values over
/// 1.5 MiB, and the managed fields the API server adds repeat every key.
fn padding() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let prefix = format!("{0}.{0}.{0}.{0}.example", "p".repeat(58));
    let labels = (0..1200)
        .map(|i| (format!("{prefix}/k{i:061}"), "v".repeat(63)))
        .collect();
    let annotations = (0..4)
        .map(|i| (format!("pad.example/a{i}"), "a".repeat(60_000)))
        .collect();
    (labels, annotations)
}

/// Bytes of a padded AccessToken as kube-apiserver serves it, in MiB.
async fn object_mib(tenant: &Tenant, name: &str) -> f64 {
    let token = tenant.tokens().get(name).await.expect("padded token");
    serde_json::to_vec(&token).expect("serializes").len() as f64 / (1024.0 * 1024.0)
}

/// Creates `names` with `metadata` merged in, `parallel` at a time, and waits until each is
/// Active and its token authenticates at the verifier.
async fn issue_all(
    tenant: &Tenant,
    verifier: &LoopbackVerifier,
    names: &[String],
    metadata: serde_json::Value,
) {
    stream::iter(names)
        .for_each_concurrent(4, |name| {
            let metadata = metadata.clone();
            async move {
                let mut token = json!({
                    "apiVersion": "iam.accesstoken.io/v1alpha1",
                    "kind": "AccessToken",
                    "metadata": metadata,
                    "spec": {"organization": tenant.organization},
                });
                token["metadata"]["name"] = json!(name);
                token["metadata"]["namespace"] = json!(tenant.namespace);
                let token = serde_json::from_value(token).expect("an AccessToken");
                tenant
                    .tokens()
                    .create(&Default::default(), &token)
                    .await
                    .expect("created");
                tenant.wait_for_phase(name, Phase::Active).await;
                let value = tenant.token_in_secret(name).await;
                eventually("the verifier to accept the token", || async {
                    let status = verifier.review(value.expose_secret()).await?;
                    (status["authenticated"] == true).then_some(())
                })
                .await;
            }
        })
        .await;
}

/// Restarts the operator and a verifier and returns each one's peak memory once it has
/// listed everything: the verifier ready, the operator through a token created after it.
async fn restarted_peaks(
    tenant: &Tenant,
    operator: &mut Operator,
    marker: &str,
) -> (Memory, Memory) {
    operator.restart().await;
    let verifier = LoopbackVerifier::start(
        &format!("{}-{marker}", tenant.namespace),
        &operator_kubeconfig().await,
        &[],
    );
    // Listed by name: a token named after all others is reconciled once the list is through.
    tenant
        .create_token(marker, json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase(marker, Phase::Active).await;
    eventually_for(
        std::time::Duration::from_secs(120),
        "the verifier to be ready",
        || async { (verifier.ready_status().await == Some(200)).then_some(()) },
    )
    .await;
    (Memory::of(operator.pid()), Memory::of(verifier.pid()))
}

#[tokio::test]
async fn padded_tokens_cost_the_operator_and_the_verifier_no_more_than_plain_ones() {
    let tenant = Tenant::new("padding").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    let verifier = LoopbackVerifier::start(
        &format!("{}-first", tenant.namespace),
        &operator_kubeconfig().await,
        &[],
    );
    eventually("the verifier to be ready", || async {
        (verifier.ready_status().await == Some(200)).then_some(())
    })
    .await;
    let (labels, annotations) = padding();
    let names =
        |kind: &str| -> Vec<String> { (0..TOKENS).map(|i| format!("{kind}-{i:03}")).collect() };

    // Warm both processes up with one token, so first-use allocations are not counted.
    issue_all(&tenant, &verifier, &["a-warm".to_string()], json!({})).await;
    let before = (Memory::of(operator.pid()), Memory::of(verifier.pid()));
    issue_all(&tenant, &verifier, &names("b-plain"), json!({})).await;
    let plain = (Memory::of(operator.pid()), Memory::of(verifier.pid()));
    let mut padded = Vec::new();
    for batch in ["c-padded", "d-padded"] {
        let padded_names = names(batch);
        let metadata = json!({"labels": labels, "annotations": annotations});
        issue_all(&tenant, &verifier, &padded_names, metadata).await;
        // Their Secrets too: the operator watches the metadata of the Secrets it writes.
        for name in &padded_names {
            let patch = json!({"metadata": {"labels": labels}});
            tenant
                .secrets()
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .expect("tenant pads its Secret");
        }
        // A plain token after them, issued and authenticated: both processes are past the batch.
        issue_all(&tenant, &verifier, &[format!("{batch}-z")], json!({})).await;
        padded.push((Memory::of(operator.pid()), Memory::of(verifier.pid())));
    }
    let object = object_mib(&tenant, "d-padded-000").await;
    assert!(
        object > 0.9,
        "each padded token is about 1 MiB ({object:.2} MiB)"
    );

    let (first, second) = (padded[0], padded[1]);
    for (process, before, plain, first, second) in [
        ("operator", before.0, plain.0, first.0, second.0),
        ("verifier", before.1, plain.1, first.1, second.1),
    ] {
        let plain_growth = plain.rss - before.rss;
        let padded_growth = second.rss - first.rss;
        eprintln!(
            "{process}: {TOKENS} plain tokens +{plain_growth:.1} MiB; {TOKENS} padded ({object:.2} MiB each) +{:.1} MiB, {TOKENS} more +{padded_growth:.1} MiB",
            first.rss - plain.rss
        );
        assert!(
            padded_growth <= plain_growth.max(0.0) + NOISE_MIB,
            "{process}: {TOKENS} padded tokens grew it by {padded_growth:.1} MiB, \
             {TOKENS} plain ones by {plain_growth:.1} MiB"
        );
    }
    let padded = second;

    // A restart lists everything again: the padding costs the list pages in flight, not a
    // copy per token, so the new process peaks at most a few pages above what the old one
    // held (which the assertions above found free of padding).
    let (operator_peak, verifier_peak) = restarted_peaks(&tenant, &mut operator, "e-restart").await;
    // The operator lists AccessTokens in three watches (its controller and the two scope
    // status controllers), the verifier in one. A page is held as received, as one
    // contiguous copy, in the TLS and HTTP buffers it passed through, and the heap fragments
    // between pages: up to about four times its size (measured 2.7 to 3.4 for the verifier
    // over 80 padded tokens, five pages). Keeping the padding would cost 80 MiB and more.
    let page = f64::from(LIST_PAGE_SIZE) * object * 4.0;
    for (process, peak, running, watches) in [
        ("operator", operator_peak.peak, padded.0.rss, 3.0),
        ("verifier", verifier_peak.peak, padded.1.rss, 1.0),
    ] {
        eprintln!(
            "{process} restarted with {TOKENS} padded tokens: peak {peak:.1} MiB (running before: {running:.1} MiB)"
        );
        assert!(
            peak <= running + watches * page + 2.0 * NOISE_MIB,
            "{process}: a restart peaked at {peak:.1} MiB, {running:.1} MiB before it, \
             more than {watches} list pages of {page:.1} MiB"
        );
    }
}
