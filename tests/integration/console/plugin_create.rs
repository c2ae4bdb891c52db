//! `kubectl atk create` against the real control plane and operator: the value alone on
//! stdout once Active, and it authenticates with the verifier; every flag reaches the spec;
//! `-o json|yaml` parses.

use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};
use kube::ResourceExt as _;

use access_token_operator::{
    api::{AccessToken, Phase},
    token::Token,
};

use crate::{
    console::plugin::{kubectl_atk, ok},
    support::{LoopbackVerifier, Operator, Tenant, eventually, operator_kubeconfig, text},
};

/// The value a successful `create` printed: exactly one line, a well-formed token.
#[track_caller]
fn printed_value(output: &std::process::Output) -> Token {
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "create failed: {stderr}");
    let value = stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("one line on stdout: {stdout:?}"));
    assert!(!value.contains('\n'), "nothing but the value on stdout");
    let token = Token::parse(value).expect("stdout is the token");
    assert!(
        !stderr.contains(value),
        "the value never on stderr: {stderr}"
    );
    token
}

#[tokio::test]
async fn create_prints_only_the_value_and_it_authenticates() {
    let tenant = Tenant::new("atk-create").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let ns = tenant.namespace.as_str();
    let org = tenant.organization.as_str();

    // Waiting is the default: no --wait needed.
    let output = kubectl_atk(&["create", "ci", "--organization", org, "-n", ns], None).await;
    let token = printed_value(&output);
    let stored = tenant.tokens().get("ci").await.expect("created");
    let status = stored.status.clone().expect("status");
    assert_eq!(status.phase, Some(Phase::Active));
    assert_eq!(status.token_id.as_deref(), Some(token.id().as_str()));
    assert_eq!(stored.spec.organization.as_deref(), Some(org));
    assert!(!stored.spec.admin);
    let managers: Vec<_> = stored
        .managed_fields()
        .iter()
        .filter_map(|f| f.manager.clone())
        .collect();
    assert!(
        managers.contains(&"kubectl-atk".to_string()),
        "{managers:?}"
    );

    // The value authenticates with the verifier (asked straight, and read from stdin).
    let direct = LoopbackVerifier::start(
        &format!("{ns}-atk-create"),
        &operator_kubeconfig().await,
        &[],
    );
    let url = direct.url();
    let whoami = || async {
        kubectl_atk(
            &["whoami", "--verifier", &url, "-o", "json"],
            Some(token.expose_secret()),
        )
        .await
    };
    let answer = eventually("the verifier to accept the created token", || async {
        let output = whoami().await;
        output.status.success().then_some(output)
    })
    .await;
    let review: serde_json::Value =
        serde_json::from_slice(&answer.stdout).expect("whoami -o json parses");
    assert_eq!(review["authenticated"], true, "{review}");
    assert_eq!(
        review["user"]["username"],
        format!("accesstoken:{ns}:ci"),
        "{review}"
    );

    // The same name again: refused by the API server (exit 4), nothing on stdout.
    let again = kubectl_atk(&["create", "ci", "--organization", org, "-n", ns], None).await;
    assert_eq!(again.status.code(), Some(4), "{}", text(&again.stderr));
    assert!(again.stdout.is_empty());
    assert!(
        text(&again.stderr).contains("AlreadyExists"),
        "{}",
        text(&again.stderr)
    );

    // A Secret name someone else holds: the token ends Failed; exit 4 with the reason. It
    // stays for the user to fix.
    tenant.create_foreign_secret("taken").await;
    let stuck = kubectl_atk(
        &[
            "create",
            "clash",
            "--organization",
            org,
            "--secret-name",
            "taken",
            "-n",
            ns,
        ],
        None,
    )
    .await;
    let said = text(&stuck.stderr);
    assert_eq!(stuck.status.code(), Some(4), "{said}");
    assert!(stuck.stdout.is_empty());
    assert!(said.contains("SecretConflict"), "{said}");
    tenant.tokens().get("clash").await.expect("it stays");

    // One that cannot become Active before --timeout (its Organization does not exist):
    // "could not finish", exit 3.
    let nowhere = format!("{org}-missing");
    let late = kubectl_atk(
        &[
            "create",
            "lost",
            "--organization",
            &nowhere,
            "-n",
            ns,
            "--timeout",
            "1s",
        ],
        None,
    )
    .await;
    let said = text(&late.stderr);
    assert_eq!(late.status.code(), Some(3), "{said}");
    assert!(late.stdout.is_empty());
    assert!(said.contains("is not Active after 1s"), "{said}");
}

#[tokio::test]
async fn create_for_a_group_takes_every_flag() {
    let tenant = Tenant::new("atk-flags").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let ns = tenant.namespace.as_str();
    let group = tenant.group.as_str();

    let output = kubectl_atk(
        &[
            "-n",
            ns,
            "create",
            "bot",
            "--group",
            group,
            "--admin",
            "--lifetime",
            "30d",
            "--display-name",
            "CI bot",
            "--secret-name",
            "bot-token",
            "--wait",
            "--timeout",
            "90s",
        ],
        None,
    )
    .await;
    let token = printed_value(&output);
    let stored = tenant.tokens().get("bot").await.expect("created");
    assert_eq!(stored.spec.group.as_deref(), Some(group));
    assert!(stored.spec.admin);
    assert_eq!(stored.spec.lifetime.as_deref(), Some("30d"));
    assert_eq!(stored.spec.display_name.as_deref(), Some("CI bot"));
    assert_eq!(stored.spec.secret_name.as_deref(), Some("bot-token"));
    let role = serde_json::to_value(stored.status.as_ref().expect("status").role).expect("json");
    assert_eq!(role, "GroupAdmin");
    let in_secret = tenant.token_in_secret("bot-token").await;
    assert_eq!(in_secret.expose_secret(), token.expose_secret());

    // --expires with a date: 00:00 UTC that day.
    let date = (Timestamp::now() + SignedDuration::from_hours(24 * 40))
        .to_zoned(TimeZone::UTC)
        .date();
    let dated = kubectl_atk(
        &[
            "create",
            "dated",
            "--organization",
            &tenant.organization,
            "--expires",
            &date.to_string(),
            "-n",
            ns,
        ],
        None,
    )
    .await;
    printed_value(&dated);
    let stored = tenant.tokens().get("dated").await.expect("created");
    let expected = format!("{date}T00:00:00Z");
    assert_eq!(
        stored.spec.expires_at.as_ref().map(|t| t.0.to_string()),
        Some(expected.clone())
    );
    assert_eq!(
        stored
            .status
            .and_then(|s| s.expires_at)
            .map(|t| t.0.to_string()),
        Some(expected)
    );

    // --wait=false: created, nothing on stdout; the value comes later from reveal.
    let later = kubectl_atk(
        &[
            "create",
            "later",
            "--organization",
            &tenant.organization,
            "--wait=false",
            "-n",
            ns,
        ],
        None,
    )
    .await;
    assert!(later.status.success(), "{}", text(&later.stderr));
    assert!(later.stdout.is_empty(), "{}", text(&later.stdout));
    assert!(text(&later.stderr).contains("kubectl atk reveal later"));
    tenant.wait_for_phase("later", Phase::Active).await;
    let (revealed, _) = ok(&["reveal", "later", "-n", ns]).await;
    Token::parse(revealed.trim()).expect("reveal prints the token");

    check_output_formats(ns).await;
}

/// `status -o json|yaml` parses back to the AccessTokens the API server holds.
async fn check_output_formats(ns: &str) {
    let (json, _) = ok(&["status", "-n", ns, "-o", "json"]).await;
    let list: serde_json::Value = serde_json::from_str(&json).expect("json parses");
    assert_eq!(list["kind"], "List");
    let mut names: Vec<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            item["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["bot", "dated", "later"]);

    let (yaml, _) = ok(&["status", "bot", "-n", ns, "-o", "yaml"]).await;
    let one: AccessToken = serde_saphyr::from_str(&yaml).expect("yaml parses as an AccessToken");
    assert_eq!(one.name_any(), "bot");
    assert_eq!(one.status.and_then(|s| s.phase), Some(Phase::Active));
    assert!(!yaml.contains("managedFields"), "{yaml}");

    let (everywhere, _) = ok(&["status", "bot", "-A", "-o", "yaml"]).await;
    let list: serde_json::Value = serde_saphyr::from_str(&everywhere).expect("yaml parses");
    let items = list["items"].as_array().expect("items");
    assert!(
        items.iter().any(|i| i["metadata"]["namespace"] == ns),
        "{everywhere}"
    );
}
