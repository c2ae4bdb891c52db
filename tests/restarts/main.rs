//! kube-apiserver and etcd restarted under a running operator and verifier: nothing is
//! duplicated or lost, the operator resumes on its own, and the verifier answers "could
//! not check" while it cannot know and is ready again after. A test binary of its own:
//! cargo runs test binaries one at a time, so no other test sees the outage.

#[path = "../support/mod.rs"]
mod support;

use std::time::Duration;

use kube::api::ListParams;
use serde_json::json;

use access_token_operator::{api::Phase, token::verify_token};

use support::Tenant;
use support::{
    DEADLINE, LoopbackVerifier, Operator, cluster_env, eventually, operator_kubeconfig, within,
};

/// Asks the launcher (hack/local-cluster.sh) to stop `component` for `down` and start it
/// again, and waits until it reports the component ready.
async fn restart(component: &str, down: Duration) {
    let dir = std::path::PathBuf::from(cluster_env("ATO_CLUSTER_DIR"));
    let done = || {
        std::fs::read_to_string(dir.join("restarts"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = done();
    std::fs::write(
        dir.join("restart-request"),
        format!("{component} {}", down.as_secs()),
    )
    .expect("the request is written");
    let launcher = std::fs::read_to_string(dir.join("launcher.pid")).expect("launcher pid");
    let sent = tokio::process::Command::new("kill")
        .args(["-USR1", launcher.trim()])
        .status()
        .await
        .expect("kill runs");
    assert!(sent.success(), "the launcher got the request");
    within(DEADLINE * 2, async {
        while done() == before {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn restarts_of_kube_apiserver_and_etcd_lose_and_duplicate_nothing() {
    let tenant = Tenant::new("restarts").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let issued = tenant
        .issue("before", json!({"organization": tenant.organization}))
        .await;
    tenant
        .issue("group-token", json!({"group": tenant.group}))
        .await;

    // A verifier of its own on a private port, with a short staleness bound.
    let kubeconfig = operator_kubeconfig().await;
    let verifier = LoopbackVerifier::start(
        &tenant.namespace,
        &kubeconfig,
        &["--max-staleness-seconds", "2"],
    );
    let ready = || verifier.ready_status();
    let secret = issued.expose_secret().to_string();
    eventually("the verifier to authenticate the token", || async {
        (verifier.review(&secret).await?["authenticated"] == true).then_some(())
    })
    .await;

    // kube-apiserver down for 6 s: past the staleness bound, the verifier cannot know.
    let restarting = tokio::spawn(restart("kube-apiserver", Duration::from_secs(6)));
    // An answer given while the verifier was not ready both before and after it (kube-apiserver
    // may be back a moment after the first 503: audit F6).
    let status = eventually("an answer while the verifier is not ready", || async {
        if ready().await != Some(503) {
            return None;
        }
        let status = verifier.review(&secret).await?;
        (ready().await == Some(503)).then_some(status)
    })
    .await;
    assert_ne!(status["authenticated"], true, "no answer from stale state");
    assert!(
        status["error"].as_str().is_some_and(|e| !e.is_empty()),
        "could not check, not a denial: {status}"
    );
    restarting.await.expect("the restart completes");
    eventually("the verifier to be ready again", || async {
        (ready().await == Some(200)).then_some(())
    })
    .await;
    eventually("the verifier to authenticate again", || async {
        (verifier.review(&secret).await?["authenticated"] == true).then_some(())
    })
    .await;
    // A restarted kube-apiserver resolves the group-token create policy's parameter kind (the
    // Group CRD) through its API discovery, which it refreshes within about 30 s: until then
    // it refuses new AccessTokens, failing closed (kubernetes/kubernetes#124237;
    // docs/operations/high-availability.md). Only that refusal is waited out, how long it
    // lasted is shown, and while it lasts a change of a group token (checked without a
    // parameter) must pass.
    let back = std::time::Instant::now();
    let probe = support::access_token(
        &tenant.namespace,
        "admission-probe",
        json!({"organization": tenant.organization}),
    );
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    let revoke = kube::api::Patch::Merge(json!({"spec": {"revoked": true}}));
    let dry_revoke = kube::api::PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let refused = std::sync::atomic::AtomicU32::new(0);
    eventually("kube-apiserver to admit new AccessTokens again", || async {
        match tenant.tokens().create(&dry_run, &probe).await {
            Ok(_) => Some(()),
            Err(e)
                if e.to_string()
                    .contains("failed to find resource referenced by paramKind") =>
            {
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = tenant
                    .tokens()
                    .patch("group-token", &dry_revoke, &revoke)
                    .await
                {
                    panic!("a group token's revoke is refused while new tokens wait: {e}");
                }
                None
            }
            Err(e) => panic!("only the unresolved parameter kind may refuse a token: {e}"),
        }
    })
    .await;
    eprintln!(
        "new AccessTokens admitted again {:?} after the verifier authenticated ({} refusals)",
        back.elapsed(),
        refused.into_inner()
    );
    // The operator resumes on its own: a token created after the restart is issued.
    tenant
        .create_token(
            "after-apiserver",
            json!({"organization": tenant.organization}),
        )
        .await;
    tenant
        .wait_for_phase("after-apiserver", Phase::Active)
        .await;

    // etcd down for 4 s under the same processes.
    restart("etcd", Duration::from_secs(4)).await;
    tenant
        .create_token("after-etcd", json!({"organization": tenant.organization}))
        .await;
    tenant.wait_for_phase("after-etcd", Phase::Active).await;
    eventually("the verifier to be ready after etcd returns", || async {
        (ready().await == Some(200)).then_some(())
    })
    .await;
    eventually(
        "the verifier to authenticate after etcd returns",
        || async { (verifier.review(&secret).await?["authenticated"] == true).then_some(()) },
    )
    .await;

    // Nothing duplicated or lost: one Secret and one credential per token, the first token
    // unchanged, no reissue.
    let managed =
        ListParams::default().labels("app.kubernetes.io/managed-by=access-token-operator");
    assert_eq!(
        tenant.secrets().list(&managed).await.unwrap().items.len(),
        4
    );
    assert_eq!(
        tenant.token_in_secret("before").await.expose_secret(),
        issued.expose_secret(),
        "the token issued before the restarts is unchanged"
    );
    for name in ["before", "group-token", "after-apiserver", "after-etcd"] {
        let value = tenant.token_in_secret(name).await;
        let user = eventually("one credential", || async {
            let user = tenant.users().get(name).await.ok()?;
            (user.spec.credentials.len() == 1).then_some(user)
        })
        .await;
        assert!(
            verify_token(&value, &user.spec.credentials[0].hash),
            "{name}"
        );
        assert!(
            !tenant.has_event(name, "TokenReissued").await,
            "{name}: no reissue"
        );
    }
}
