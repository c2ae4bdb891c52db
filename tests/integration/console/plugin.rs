//! `kubectl atk`, found by kubectl itself as `kubectl-atk` on PATH (a link to the operator's
//! binary), run against the local control plane as a user would. Also runs the Argo CD
//! health check on the live objects the commands produce.

use std::process::Output;

use k8s_openapi::{
    api::core::v1::ServiceAccount,
    jiff::{SignedDuration, Timestamp, Unit},
};
use serde_json::json;

use access_token_operator::api::{AccessToken, Phase};

use crate::{
    operations::argocd_health::health,
    support::{
        LoopbackVerifier, Operator, Run, Tenant, VerifierProcess, kubeconfig_with_token, kubectl,
        operator_kubeconfig, service_account_token, test_logs_dir, text,
    },
};

/// A directory holding `kubectl-atk`, a link to the operator binary, and the
/// `kubectl_complete-atk` shim kubectl runs for `kubectl atk <TAB>`.
fn plugin_dir() -> std::path::PathBuf {
    let dir = test_logs_dir().join("plugin-bin");
    std::fs::create_dir_all(&dir).expect("dir");
    let link = dir.join("kubectl-atk");
    if std::fs::symlink_metadata(&link).is_err() {
        // Another test may create it at the same moment; either link is the same.
        let _ = std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_access-token-operator"), &link);
    }
    let shim = dir.join("kubectl_complete-atk");
    if std::fs::symlink_metadata(&shim).is_err() {
        use std::os::unix::fs::PermissionsExt as _;
        // Written aside and renamed: a test running at the same moment never sees half a file.
        let partial = dir.join(format!("kubectl_complete-atk.{}", std::process::id()));
        std::fs::write(
            &partial,
            "#!/bin/sh\nexec kubectl-atk __complete -- \"$@\"\n",
        )
        .expect("shim");
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).expect("mode");
        std::fs::rename(&partial, &shim).expect("shim in place");
    }
    dir
}

/// `kubectl <args>` as the admin of the local cluster, with the plugin on its PATH.
pub(crate) fn kubectl_with_plugin(args: &[&str]) -> Run {
    let path = format!(
        "{}:{}",
        plugin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    kubectl(args).env("PATH", path)
}

/// Runs `kubectl atk <args>` with `stdin`, as the admin of the local cluster.
pub(crate) async fn kubectl_atk(args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_atk_with(args, stdin, None).await
}

/// Runs `kubectl atk <args>` with `stdin`, with `kubeconfig` instead of the admin's.
pub(crate) async fn kubectl_atk_with(
    args: &[&str],
    stdin: Option<&str>,
    kubeconfig: Option<&std::path::Path>,
) -> Output {
    let mut run = kubectl_with_plugin(&["atk"]).args(args);
    if let Some(kubeconfig) = kubeconfig {
        run = run.kubeconfig(kubeconfig);
    }
    if let Some(text) = stdin {
        run = run.stdin(text);
    }
    run.run().await
}

/// Runs the command and returns stdout; fails the test (with stderr) unless it succeeded.
pub(crate) async fn ok(args: &[&str]) -> (String, String) {
    let output = kubectl_atk(args, None).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "kubectl atk {args:?}: {stderr}");
    (stdout, stderr)
}

#[tokio::test]
async fn help_lists_every_command() {
    let (help, _) = ok(&["--help"]).await;
    for command in [
        "create",
        "status",
        "reveal",
        "revoke",
        "unrevoke",
        "rotate",
        "whoami",
        "completion",
        "console",
    ] {
        assert!(help.contains(command), "{command} missing:\n{help}");
    }
}

#[tokio::test]
async fn each_command_works_against_the_cluster() {
    let tenant = Tenant::new("plugin").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let ns = tenant.namespace.as_str();
    let token = tenant
        .issue("ci", json!({"organization": tenant.organization}))
        .await;
    let value = token.expose_secret();

    // status: the table names the token, its phase and its public id.
    let (table, _) = ok(&["status", "-n", ns]).await;
    let row = table.lines().find(|l| l.starts_with("ci ")).expect("a row");
    assert!(
        row.contains("Active") && row.contains(token.id().as_str()),
        "{table}"
    );
    let (all, _) = ok(&["status", "-A"]).await;
    assert!(all.lines().any(|l| l.starts_with(ns)), "{all}");
    assert!(!table.contains(value) && !all.contains(value));

    // reveal: the value on stdout once, a warning on stderr (which never carries it).
    let (revealed, warning) = ok(&["reveal", "ci", "-n", ns]).await;
    assert_eq!(revealed, format!("{value}\n"));
    assert!(
        warning.contains("warning") && !warning.contains(value),
        "{warning}"
    );

    // whoami through kube-apiserver (its webhook asks the verifier) and straight to a verifier.
    let webhook = VerifierProcess::start(&format!("{ns}-webhook")).await;
    let username = format!("username: accesstoken:{ns}:ci");
    let who = kubectl_atk(&["whoami"], Some(value)).await;
    let (who, warned) = (text(&who.stdout), text(&who.stderr));
    assert!(
        who.contains("authenticated: true") && who.contains(&username),
        "{who}"
    );
    assert!(
        !who.contains(value) && !warned.contains(value),
        "{who}{warned}"
    );
    // A user who may not create TokenReviews gets the answer from a SelfSubjectReview.
    let nobody = format!("{ns}-nobody");
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(tenant.client.clone(), ns);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "nobody"}})).expect("valid");
    accounts
        .create(&Default::default(), &account)
        .await
        .expect("ServiceAccount is created");
    let bearer = service_account_token(ns, "nobody").await;
    let unprivileged = kubeconfig_with_token(&nobody, &bearer);
    let output = kubectl_atk_with(&["whoami"], Some(value), Some(&unprivileged)).await;
    let (who, note) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{note}");
    assert!(
        who.contains(&username) && note.contains("SelfSubjectReview"),
        "{who}{note}"
    );
    drop(webhook);
    let kubeconfig = operator_kubeconfig().await;
    let direct = LoopbackVerifier::start(&format!("{ns}-plugin"), &kubeconfig, &[]);
    let url = direct.url();
    let whoami_direct =
        || async { kubectl_atk(&["whoami", "--verifier", &url], Some(value)).await };
    let answer = crate::support::eventually("the verifier to answer", || async {
        let output = whoami_direct().await;
        output.status.success().then_some(output)
    })
    .await;
    assert!(
        text(&answer.stdout).contains(&username),
        "{}",
        text(&answer.stdout)
    );

    // revoke / unrevoke: a spec patch the operator acts on; the verifier follows.
    ok(&["revoke", "ci", "-n", ns]).await;
    let revoked = tenant.wait_for_phase("ci", Phase::Revoked).await;
    assert!(revoked.spec.revoked);
    let denied = crate::support::eventually("the verifier to deny", || async {
        let output = whoami_direct().await;
        (output.status.code() == Some(1)).then_some(output)
    })
    .await;
    assert!(text(&denied.stdout).contains("authenticated: false"));
    check_health(&revoked, "Suspended");
    ok(&["unrevoke", "ci", "-n", ns]).await;
    let active = tenant.wait_for_phase("ci", Phase::Active).await;
    check_health(&active, "Healthy");

    // rotate: sets spec.rotation.trigger, and the operator issues a new token for it.
    let before = tenant.token_in_secret("ci").await;
    let rotated = kubectl_atk(&["rotate", "ci", "-n", ns], None).await;
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let token = tenant.tokens().get("ci").await.expect("exists");
    let trigger = token.spec.rotation.and_then(|r| r.trigger);
    assert!(trigger.is_some(), "rotate sets spec.rotation.trigger");
    crate::support::eventually("a new token after kubectl atk rotate", || async {
        let now = tenant.token_in_secret("ci").await;
        (now.id() != before.id()).then_some(())
    })
    .await;

    // A token that waits for its organization, or whose Secret name is taken, is Degraded;
    // an expired one is not.
    tenant
        .create_token(
            "elsewhere",
            json!({"organization": format!("{}-missing", tenant.organization)}),
        )
        .await;
    let pending = tenant
        .wait_for_reason("elsewhere", "OrganizationNotFound")
        .await;
    check_health(&pending, "Degraded");
    tenant.create_foreign_secret("taken").await;
    tenant
        .create_token(
            "conflict",
            json!({"organization": tenant.organization, "secretName": "taken"}),
        )
        .await;
    let failed = tenant.wait_for_reason("conflict", "SecretConflict").await;
    check_health(&failed, "Degraded");
    let soon = Timestamp::now() + SignedDuration::from_secs(5);
    let soon = soon.round(Unit::Second).expect("rounds").to_string();
    tenant
        .create_token(
            "short",
            json!({"organization": tenant.organization, "expiresAt": soon}),
        )
        .await;
    let expired = tenant.wait_for_phase("short", Phase::Expired).await;
    check_health(&expired, "Suspended");
}

/// The Argo CD health check on a live object says `status`; the object is kept under
/// target/test-logs/argocd-recorded/ for reference.
fn check_health(token: &AccessToken, status: &str) {
    let mut object = serde_json::to_value(token).expect("serializes");
    object["metadata"]
        .as_object_mut()
        .map(|m| m.remove("managedFields"));
    let dir = test_logs_dir().join("argocd-recorded");
    std::fs::create_dir_all(&dir).expect("dir");
    let phase = object["status"]["phase"]
        .as_str()
        .unwrap_or("none")
        .to_string();
    std::fs::write(
        dir.join(format!("{}.json", phase.to_lowercase())),
        serde_json::to_string_pretty(&object).expect("json"),
    )
    .expect("written");
    let got = health(&object);
    assert_eq!(got.status, status, "{got:?} for {object}");
}
