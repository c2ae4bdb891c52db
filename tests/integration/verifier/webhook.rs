//! The verifier, end to end: kube-apiserver configured with
//! `--authentication-token-webhook-config-file` asks it about bearer tokens, so `kubectl
//! --token <token from the Secret>` shows and uses the token's identity.

use k8s_openapi::jiff::{SignedDuration, Timestamp, Unit};
use serde_json::{Value, json};

use access_token_operator::{api::Phase, token::Token};

use crate::support::{
    Operator, Run, Tenant, VerifierProcess, assert_no_token_in, eventually, kubectl, strings,
    verifier_on,
};

/// `kubectl <args> --token <token>`: (success, stdout, stderr).
async fn kubectl_as(token: &str, args: &[&str]) -> (bool, String, String) {
    kubectl(args).token(token).outcome().await
}

/// The user info kube-apiserver sees for `token`, or `None` if the verifier denies it.
/// kube-apiserver answers 401 both for a denial and when the webhook could not check (an
/// `error`): after a 401 the verifier on the webhook port is asked directly, and a "could
/// not check" is retried, never taken for a denial.
pub(crate) async fn whoami(token: &str) -> Option<Value> {
    eventually("kube-apiserver to decide on the token", || async {
        match kubectl::<&str>(&[]).token(token).user_info().await {
            Some(info) => Some(Some(info)),
            None => (!webhook_could_not_check(token).await).then_some(None),
        }
    })
    .await
}

/// Whether the verifier serving kube-apiserver's webhook port answers "could not check" for
/// `token` (false when it denies it, accepts it, or does not run).
async fn webhook_could_not_check(token: &str) -> bool {
    let port = crate::support::cluster_env("ATO_VERIFIER_PORT");
    let endpoint = format!("https://127.0.0.1:{port}/tokenreviews");
    crate::support::token_review(&VerifierProcess::test_client(), &endpoint, token)
        .await
        .is_some_and(|status| status["error"].is_string())
}

#[tokio::test]
async fn kube_apiserver_authenticates_tokens_through_the_verifier() {
    let tenant = Tenant::new("whoami").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let verifier = VerifierProcess::start(&tenant.namespace).await;
    let (org, group, ns) = (&tenant.organization, &tenant.group, &tenant.namespace);
    tenant
        .create_token("admin", json!({"organization": org, "admin": true}))
        .await;
    tenant
        .create_token("user", json!({"organization": org}))
        .await;
    tenant.create_token("grp", json!({"group": group})).await;
    for name in ["admin", "user", "grp"] {
        tenant.wait_for_phase(name, Phase::Active).await;
    }
    let admin = tenant.token_in_secret("admin").await;
    let user = tenant.token_in_secret("user").await;
    let grp = tenant.token_in_secret("grp").await;

    // The verifier's watches follow the operator's writes within moments.
    let info = eventually("the admin token to authenticate", || {
        whoami(admin.expose_secret())
    })
    .await;
    assert_eq!(info["username"], format!("accesstoken:{ns}:admin"));
    let groups = strings(&info["groups"]);
    assert!(
        groups.contains(&format!("accesstoken:org:{org}")),
        "{groups:?}"
    );
    assert!(
        groups.contains(&format!("accesstoken:org:{org}:admin")),
        "{groups:?}"
    );
    let user_uid = tenant
        .users()
        .get("admin")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(info["uid"], user_uid, "uid is the TechnicalUser's");
    assert_eq!(
        strings(&info["extra"]["iam.accesstoken.io/organization"]),
        [org.as_str()]
    );
    assert_eq!(
        strings(&info["extra"]["iam.accesstoken.io/role"]),
        ["OrganizationAdmin"]
    );
    assert_eq!(
        strings(&info["extra"]["iam.accesstoken.io/token-id"]),
        [admin.id().to_string()]
    );

    let info = whoami(grp.expose_secret())
        .await
        .expect("the group token authenticates");
    let groups = strings(&info["groups"]);
    assert!(
        groups.contains(&format!("accesstoken:group:{group}:user")),
        "{groups:?}"
    );
    assert_eq!(
        strings(&info["extra"]["iam.accesstoken.io/group"]),
        [group.as_str()]
    );

    // RBAC on the groups the verifier reports: org admins may list ConfigMaps, users may not.
    let (ok, _, stderr) = kubectl_as(
        &crate::support::cluster_env("ATO_UNPRIVILEGED_TOKEN"),
        &["get", "configmaps", "-n", ns],
    )
    .await;
    assert!(!ok && stderr.contains("forbidden"), "{stderr}");
    let group_flag = format!("--group=accesstoken:org:{org}:admin");
    let setup = [
        vec![
            "create",
            "role",
            "cm-reader",
            "-n",
            ns,
            "--verb=list",
            "--resource=configmaps",
        ],
        vec![
            "create",
            "rolebinding",
            "cm-reader",
            "-n",
            ns,
            "--role=cm-reader",
            &group_flag,
        ],
    ];
    for args in setup {
        kubectl(&args).succeed().await;
    }
    eventually("the admin token to list ConfigMaps", || async {
        kubectl_as(admin.expose_secret(), &["get", "configmaps", "-n", ns])
            .await
            .0
            .then_some(())
    })
    .await;
    let (ok, _, stderr) = kubectl_as(user.expose_secret(), &["get", "configmaps", "-n", ns]).await;
    assert!(
        !ok && stderr.contains("forbidden"),
        "a user token is authenticated but not allowed: {stderr}"
    );
    assert!(
        stderr.contains(&format!("accesstoken:{ns}:user")),
        "{stderr}"
    );

    // Malformed and unknown tokens are denied.
    assert!(whoami("atk_not-a-token").await.is_none());
    assert!(
        whoami(Token::generate().expose_secret()).await.is_none(),
        "well-formed but never issued"
    );
    let mut tampered = admin.expose_secret().to_string();
    tampered.replace_range(20..21, if &tampered[20..21] == "a" { "b" } else { "a" });
    assert!(
        whoami(&tampered).await.is_none(),
        "one changed character fails the checksum"
    );

    // The verifier never logs a token.
    let logs = verifier.logs();
    assert_no_token_in(&logs, &[&admin, &user, &grp], "verifier's log");
    assert!(
        logs.contains("token accepted"),
        "sanity: the verifier logged its decisions"
    );
}

#[tokio::test]
async fn revoke_unrevoke_delete_and_expiry_take_effect_at_the_apiserver() {
    let tenant = Tenant::new("effect").await;
    let mut operator = Operator::start(&tenant.namespace).await;
    let _verifier = VerifierProcess::start(&tenant.namespace).await;
    let org = &tenant.organization;
    tenant.create_token("t", json!({"organization": org})).await;
    let expires = (Timestamp::now() + SignedDuration::from_secs(30))
        .round(Unit::Second)
        .unwrap();
    tenant
        .create_token(
            "short",
            json!({"organization": org, "expiresAt": expires.to_string()}),
        )
        .await;
    tenant.wait_for_phase("t", Phase::Active).await;
    tenant.wait_for_phase("short", Phase::Active).await;
    let t = tenant.token_in_secret("t").await;
    let short = tenant.token_in_secret("short").await;
    // The verifier's watches follow the operator's writes within moments.
    eventually("the token to work", || async {
        whoami(t.expose_secret()).await.map(|_| ())
    })
    .await;
    // Polled: the verifier's watch may hold `t` a moment before `short` (audit F4).
    eventually("the short-lived token to work", || async {
        whoami(short.expose_secret()).await.map(|_| ())
    })
    .await;
    assert!(Timestamp::now() < expires, "valid before its expiry");

    tenant.patch_spec("t", json!({"revoked": true})).await;
    eventually("a revoked token to be refused", || async {
        whoami(t.expose_secret()).await.is_none().then_some(())
    })
    .await;
    tenant.patch_spec("t", json!({"revoked": false})).await;
    eventually("a re-enabled token to work again", || async {
        whoami(t.expose_secret()).await.map(|_| ())
    })
    .await;

    // With the operator down, nothing disables the expired token's TechnicalUser: only the
    // verifier's own clock against spec.expiresAt can refuse it.
    operator.kill().await;
    assert!(
        !tenant.users().get("short").await.unwrap().spec.disabled,
        "the expiry window was still open when the operator stopped"
    );
    eventually("an expired token to be refused", || async {
        whoami(short.expose_secret()).await.is_none().then_some(())
    })
    .await;
    assert!(Timestamp::now() >= expires, "refused only once expired");
    assert!(
        !tenant.users().get("short").await.unwrap().spec.disabled,
        "refused by the verifier, not by a disabled TechnicalUser"
    );
    operator.restart().await;

    tenant.delete_token("t").await;
    eventually("a deleted token to be refused", || async {
        whoami(t.expose_secret()).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_verifier_speaks_the_token_review_protocol() {
    let tenant = Tenant::new("protocol").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let verifier = VerifierProcess::start(&tenant.namespace).await;
    let token = tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    let http = verifier.http();
    let endpoint = format!("{}/tokenreviews", verifier.url);
    let review = |token: &str| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});

    let body = eventually("the verifier to accept the token", || async {
        let response = http
            .post(&endpoint)
            .json(&review(token.expose_secret()))
            .send()
            .await
            .ok()?;
        assert_eq!(response.status(), 200);
        let body = response.text().await.ok()?;
        body.contains("\"authenticated\":true").then_some(body)
    })
    .await;
    assert_no_token_in(&body, &[&token], "TokenReview answer");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(answer["kind"], "TokenReview");
    assert_eq!(answer["status"]["authenticated"], true);
    assert_eq!(
        answer["status"]["user"]["username"],
        format!("accesstoken:{}:t", tenant.namespace)
    );

    // A denial is a plain `authenticated: false`, with no error, so callers may cache it.
    let answer: Value = http
        .post(&endpoint)
        .json(&review("atk_nope"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"]["authenticated"], false);
    assert!(answer["status"].get("error").is_none(), "{answer}");

    for (what, body) in [
        ("not JSON", "hello".to_string()),
        (
            "another kind",
            json!({"apiVersion": "v1", "kind": "Pod", "spec": {"token": "x"}}).to_string(),
        ),
        (
            "no token",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}})
                .to_string(),
        ),
    ] {
        let response = http.post(&endpoint).body(body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{what}");
    }
    let huge = "x".repeat(200 * 1024);
    let response = http
        .post(&endpoint)
        .json(&review(&huge))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "request bodies are bounded");
    assert_eq!(
        http.get(format!("{}/healthz", verifier.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Metrics are not served on the verifier's port, which kube-apiserver and other clients
    // reach (they name every tenant's tokens), only on its probe port.
    let on_verifier_port = http
        .get(format!("{}/metrics", verifier.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        on_verifier_port.status(),
        404,
        "no /metrics on the verifier port"
    );
    // There they count answers under fixed labels, and never carry a token.
    let metrics = verifier.metrics().await;
    let count = |outcome: &str| -> u64 {
        let prefix = format!("access_token_operator_tokenreviews_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("authenticated") >= 1, "{metrics}");
    assert!(count("malformed") >= 1, "{metrics}");
    assert!(metrics.contains("access_token_operator_tokenreview_duration_seconds_bucket"));
    assert_no_token_in(&metrics, &[&token], "metrics");

    // The use is recorded on the AccessToken, coarsely and off the request path.
    let last_used = eventually("status.lastUsedAt", || async {
        tenant.tokens().get("t").await.ok()?.status?.last_used_at
    })
    .await;
    assert_eq!(last_used.0.as_second() % 60, 0, "minute precision");
    assert!(Timestamp::now() - SignedDuration::from_mins(2) < last_used.0);
}

#[tokio::test]
async fn plain_http_is_served_on_loopback_only() {
    let refused = Run::program(
        env!("CARGO_BIN_EXE_access-token-operator"),
        &[
            "verifier",
            "--verifier-bind",
            "0.0.0.0:0",
            "--insecure-http",
        ],
    )
    .env("PROBE_BIND", "127.0.0.1:0")
    .run()
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("plain HTTP is only allowed on a loopback address"),
        "{stderr}"
    );

    let port = crate::support::free_port();
    let _child = verifier_on(port).arg("--insecure-http").spawn();
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually("plain HTTP on loopback to answer", || async {
        reqwest::get(&url)
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;
}
