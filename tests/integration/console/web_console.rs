//! `kubectl atk console` as a person uses it: the operator's binary serves the console with
//! an impersonating kubeconfig (`as:`), a real headless Chromium clicks through it, and the
//! API server, the admission policies and the verifier decide as for kubectl. Screenshots of
//! the seed's five screens land in target/screenshots/ (copied to docs/images/).

use std::{path::PathBuf, sync::Arc};

use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};
use kube::{
    Api,
    api::{Patch, PatchParams},
    config::Kubeconfig,
};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

use access_token_operator::api::{AccessToken, Group, Organization, Phase};

use crate::{
    console::browser::Browser,
    support::{
        LoopbackVerifier, Operator, Tenant, bind_edit, eventually, grant_on_scope,
        operator_kubeconfig, test_logs_dir, test_namespace, unique_name,
    },
};

/// `kubectl atk console --no-browser` running as `user`; killed when dropped.
struct Console {
    _child: tokio::process::Child,
    /// The login URL it printed.
    login: String,
    /// `http://127.0.0.1:PORT`.
    origin: String,
    log_path: PathBuf,
    stdout: Arc<std::sync::Mutex<String>>,
}

/// The local cluster's kubeconfig with `as: user`: the admin impersonates a person.
fn kubeconfig_as(user: &str) -> PathBuf {
    let path = std::env::var("KUBECONFIG").expect("KUBECONFIG is set");
    let mut kubeconfig = Kubeconfig::read_from(path).expect("KUBECONFIG is readable");
    for named in &mut kubeconfig.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(user.to_string());
        }
    }
    let path = test_logs_dir().join(format!("{user}.kubeconfig"));
    std::fs::write(
        &path,
        serde_saphyr::to_string(&kubeconfig).expect("serializes"),
    )
    .expect("written");
    path
}

impl Console {
    async fn start(user: &str, namespace: &str) -> Self {
        let log_path = test_logs_dir().join(format!("{user}-console.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_access-token-operator"))
            .args(["atk", "console", "--no-browser", "-n", namespace])
            .env("KUBECONFIG", kubeconfig_as(user))
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the console starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let login = crate::support::within(crate::support::DEADLINE, lines.next_line())
            .await
            .expect("stdout reads")
            .expect("the console prints its URL");
        let stdout = Arc::new(std::sync::Mutex::new(login.clone()));
        let rest = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                rest.lock().expect("lock").push_str(&line);
            }
        });
        let origin = login.split("/login").next().expect("a URL").to_string();
        assert!(
            origin.starts_with("http://127.0.0.1:"),
            "loopback by default: {login}"
        );
        Self {
            _child: child,
            login,
            origin,
            log_path,
            stdout,
        }
    }

    /// Everything the console wrote (stdout after the URL, and stderr).
    fn logs(&self) -> String {
        let stderr = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        format!("{}\n{stderr}", self.stdout.lock().expect("lock"))
    }
}

/// Gives the tenant's Organization a display name, a token policy and a second namespace
/// (so the Create dialog offers a choice); returns that namespace.
async fn furnish(tenant: &Tenant, display_name: &str) -> String {
    let second = test_namespace(&tenant.client, "console-ci").await;
    let patch = json!({"spec": {
        "displayName": display_name,
        "tokenNamespaces": [tenant.namespace, second],
        "tokenPolicy": {"maxLifetime": "90d", "defaultLifetime": "30d"},
    }});
    merge_into::<Organization>(tenant, &tenant.organization, patch).await;
    second
}

/// Merge-patches a cluster-scoped Organization or Group, as a platform admin would.
async fn merge_into<K>(tenant: &Tenant, name: &str, patch: serde_json::Value)
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::all(tenant.client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the scope is patched");
}

fn screenshot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/screenshots")
        .join(name)
}

/// A date `days` from now, as the Expiration Date field holds it.
fn date_in(days: i64) -> String {
    (Timestamp::now() + SignedDuration::from_hours(24 * days))
        .to_zoned(TimeZone::UTC)
        .date()
        .to_string()
}

/// Whether the verifier accepts `value` now.
async fn accepted(verifier: &LoopbackVerifier, value: &str) -> Option<bool> {
    let status = verifier.review(value).await?;
    Some(status["authenticated"].as_bool() == Some(true))
}

/// Fills and submits the Create dialog; returns the value the copy dialog shows.
async fn create_in_dialog(
    browser: &Browser,
    name: &str,
    expires_on: &str,
    admin: bool,
    shot: bool,
) -> String {
    browser.click("#create-open").await;
    browser.wait_for("#create-dialog[open]").await;
    browser.type_into("#token-name", name).await;
    let set_date = "const e = document.getElementById('token-expires'); e.value = arguments[0]; \
                    e.dispatchEvent(new Event('input', {bubbles: true})); return e.value;";
    assert_eq!(
        browser.script(set_date, json!([expires_on])).await,
        json!(expires_on)
    );
    if admin {
        browser.click("label[for=token-admin]").await;
    }
    if shot {
        browser
            .screenshot(&screenshot("access-token-create-dialog.png"))
            .await;
    }
    browser.click("#create-submit").await;
    browser.wait_for("#copy-dialog[open]").await;
    let value = browser
        .script(
            "return document.getElementById('token-value').value;",
            json!([]),
        )
        .await;
    value.as_str().expect("a value").to_string()
}

/// Which scope a flow runs on: its page, and how its tokens name it.
struct ScopePage<'a> {
    path: String,
    organization: Option<&'a str>,
    group: Option<&'a str>,
}

impl ScopePage<'_> {
    fn assert_named_by(&self, token: &AccessToken) {
        assert_eq!(
            token.spec.organization.as_deref(),
            self.organization,
            "scoped as the page"
        );
        assert_eq!(
            token.spec.group.as_deref(),
            self.group,
            "scoped as the page"
        );
    }
}

/// Opens the Status menu of `name` and clicks `action` in it.
async fn status_action(browser: &Browser, namespace: &str, name: &str, action: &str) {
    browser
        .click(&format!(
            "tr[data-token='{namespace}/{name}'] .status-button"
        ))
        .await;
    browser
        .click(&format!(
            "tr[data-token='{namespace}/{name}'] [data-action={action}]"
        ))
        .await;
}

/// The page's whole flow for a scope admin on the scope's page (already open): create with
/// each field, the value once, revoke, re-enable, rotate, delete after confirming.
async fn whole_flow(
    browser: &Browser,
    console: &Console,
    tenant: &Tenant,
    scope: ScopePage<'_>,
    shots: bool,
) {
    let verifier = LoopbackVerifier::start(
        &format!("{}-console", tenant.namespace),
        &operator_kubeconfig().await,
        &[],
    );
    let name = unique_name("deploy");
    let expires_on = date_in(30);
    let value = create_in_dialog(browser, &name, &expires_on, true, shots).await;
    assert!(value.starts_with("atk_"), "the copy dialog shows the token");
    assert!(
        browser
            .text("#copy-dialog")
            .await
            .contains("You will not be able to view the token again")
    );
    if shots {
        browser
            .screenshot(&screenshot("access-token-copy-dialog.png"))
            .await;
    }
    // Created as the user with each field; the value authenticates.
    let token = tenant.tokens().get(&name).await.expect("created");
    assert!(token.spec.admin, "Admin Role");
    assert_eq!(
        token
            .spec
            .expires_at
            .as_ref()
            .expect("Expiration Date")
            .0
            .to_string(),
        format!("{expires_on}T00:00:00Z")
    );
    scope.assert_named_by(&token);
    assert!(
        eventually("the verifier to accept the new token", || accepted(
            &verifier, &value
        ))
        .await
    );
    // Closed, refreshed: the value is gone from the page.
    browser.click("#copy-dialog [data-close]").await;
    browser
        .goto(&format!("{}{}", console.origin, scope.path))
        .await;
    browser
        .wait_for(&format!("tr[data-token='{}/{name}']", tenant.namespace))
        .await;
    assert!(
        !browser.source().await.contains(&value),
        "the value is shown once"
    );
    // Revoke from the Status button: the table follows, the verifier denies.
    if shots {
        browser
            .click(&format!(
                "tr[data-token='{}/{name}'] .status-button",
                tenant.namespace
            ))
            .await;
        browser
            .wait_for(".menu:not([hidden]) [data-action=revoke]")
            .await;
        browser
            .screenshot(&screenshot("access-token-manage-buttons.png"))
            .await;
        browser
            .click(&format!(
                "tr[data-token='{}/{name}'] .status-button",
                tenant.namespace
            ))
            .await;
    }
    status_action(browser, &tenant.namespace, &name, "revoke").await;
    tenant.wait_for_phase(&name, Phase::Revoked).await;
    browser
        .wait_for_text(
            &format!(
                "tr[data-token='{}/{name}'] .status-button",
                tenant.namespace
            ),
            "Revoked",
        )
        .await;
    eventually("the verifier to deny the revoked token", || async {
        accepted(&verifier, &value).await.filter(|a| !a).map(drop)
    })
    .await;
    status_action(browser, &tenant.namespace, &name, "reenable").await;
    tenant.wait_for_phase(&name, Phase::Active).await;
    eventually("the verifier to accept it again", || async {
        accepted(&verifier, &value).await.filter(|a| *a)
    })
    .await;
    // Rotate: a new token id; then delete after confirming, and the row goes live.
    let before = token_id(tenant, &name).await;
    browser
        .wait_for_text(
            &format!(
                "tr[data-token='{}/{name}'] .status-button",
                tenant.namespace
            ),
            "Active",
        )
        .await;
    status_action(browser, &tenant.namespace, &name, "rotate").await;
    eventually("the token to rotate", || async {
        token_id(tenant, &name)
            .await
            .filter(|id| Some(id) != before.as_ref())
    })
    .await;
    status_action(browser, &tenant.namespace, &name, "delete").await;
    browser.wait_for("#confirm-dialog[open]").await;
    assert!(
        tenant.tokens().get(&name).await.is_ok(),
        "nothing is deleted before the confirmation"
    );
    browser.click("#confirm-button").await;
    browser
        .wait_gone(&format!("tr[data-token='{}/{name}']", tenant.namespace))
        .await;
    assert!(
        tenant.tokens().get_opt(&name).await.expect("get").is_none(),
        "deleted"
    );
    assert!(
        !console.logs().contains(&value),
        "the value is never in the console's logs"
    );
}

async fn token_id(tenant: &Tenant, name: &str) -> Option<String> {
    tenant.tokens().get(name).await.ok()?.status?.token_id
}

/// Opens the console at its login URL and waits for the start page.
async fn log_in(browser: &Browser, console: &Console) {
    browser.goto(&console.login).await;
    browser.wait_for("h1").await;
    assert!(
        !browser.source().await.contains("key="),
        "the key leaves the address bar"
    );
}

/// A new person, Olivia, admin of the tenant's organization, who may edit in its namespace.
async fn organization_admin(tenant: &Tenant) -> String {
    let olivia = unique_name("olivia");
    grant_on_scope(
        &olivia,
        "organizations",
        &tenant.organization,
        &["admin", "get"],
    )
    .await;
    bind_edit(&olivia, &tenant.namespace).await;
    olivia
}

/// Follows the start page's link to a scope's page (`path`) and waits for the row of `token`
/// (`namespace/name`) in its table.
async fn open_scope(browser: &Browser, path: &str, token: &str) {
    browser.click(&format!("a[href='{path}']")).await;
    browser.wait_for(&format!("tr[data-token='{token}']")).await;
}

#[tokio::test]
async fn an_organization_admin_manages_tokens_in_the_browser() {
    let tenant = Tenant::new("console-org").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let second = furnish(&tenant, "ACME Corp").await;
    let olivia = organization_admin(&tenant).await;
    bind_edit(&olivia, &second).await;
    let org = json!({"organization": tenant.organization});
    tenant.issue("ci-deployer", org.clone()).await;
    tenant
        .issue(
            "release-bot",
            json!({"organization": tenant.organization, "admin": true}),
        )
        .await;
    tenant.issue("nightly-backup", org.clone()).await;
    tenant
        .patch_spec("nightly-backup", json!({"revoked": true}))
        .await;
    tenant
        .wait_for_phase("nightly-backup", Phase::Revoked)
        .await;

    let console = Console::start(&olivia, &tenant.namespace).await;
    let browser = Browser::start(&olivia).await;
    log_in(&browser, &console).await;
    let start = browser.wait_for_text("main", "ACME Corp").await;
    assert!(start.contains("Organizations"), "{start}");
    open_scope(
        &browser,
        &format!("/organizations/{}", tenant.organization),
        &format!("{}/nightly-backup", tenant.namespace),
    )
    .await;
    let page = browser.text("main").await;
    for label in [
        "ACME Corp",
        "Access Tokens",
        "Groups",
        "Create Access Token",
        "Name",
        "Role",
        "Namespace",
        "Expires",
        "Last Used",
        "Status",
    ] {
        // The column headers are upper-cased by the stylesheet, and innerText follows it.
        assert!(
            page.to_lowercase().contains(&label.to_lowercase()),
            "{label} on the Organization page:\n{page}"
        );
    }
    assert!(
        page.contains("Revoked")
            && page.contains("Organization Admin")
            && page.contains("in 30 days"),
        "{page}"
    );
    browser
        .screenshot(&screenshot("explorer-organization-tokens.png"))
        .await;
    // The Groups tab: olivia may not list Groups, so it says so (the API server's words) and
    // shows the groups she administers herself.
    browser.click("nav.tabs a[href$='/groups']").await;
    let groups = browser
        .wait_for_text("main", "Showing only the groups you administer")
        .await;
    assert!(groups.contains("cannot list resource"), "{groups}");
    browser.click("nav.tabs a:first-child").await;
    browser.wait_for("#create-open").await;

    let scope = ScopePage {
        path: format!("/organizations/{}", tenant.organization),
        organization: Some(&tenant.organization),
        group: None,
    };
    whole_flow(&browser, &console, &tenant, scope, true).await;

    // What the API server refuses is shown in the dialog as it said it.
    browser.click("#create-open").await;
    browser.type_into("#token-name", "ci-deployer").await;
    browser.click("#create-submit").await;
    browser
        .wait_for_text("#create-error", "already exists")
        .await;
}

#[tokio::test]
async fn a_group_admin_manages_the_groups_tokens_and_not_the_organizations() {
    let tenant = Tenant::new("console-grp").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let named = json!({"spec": {"displayName": "Platform team"}});
    merge_into::<Group>(&tenant, &tenant.group, named).await;
    let gina = unique_name("gina");
    grant_on_scope(&gina, "groups", &tenant.group, &["admin", "get"]).await;
    grant_on_scope(&gina, "organizations", &tenant.organization, &["get"]).await;
    bind_edit(&gina, &tenant.namespace).await;
    tenant
        .issue("platform-ci", json!({"group": tenant.group}))
        .await;
    tenant
        .issue("org-wide", json!({"organization": tenant.organization}))
        .await;

    let console = Console::start(&gina, &tenant.namespace).await;
    let browser = Browser::start(&gina).await;
    log_in(&browser, &console).await;
    open_scope(
        &browser,
        &format!("/groups/{}", tenant.group),
        &format!("{}/platform-ci", tenant.namespace),
    )
    .await;
    let page = browser.text("main").await;
    assert!(
        page.contains("Platform team") && page.contains("Group User") && !page.contains("org-wide"),
        "only the group's tokens:\n{page}"
    );
    browser
        .screenshot(&screenshot("explorer-group-tokens.png"))
        .await;
    let scope = ScopePage {
        path: format!("/groups/{}", tenant.group),
        organization: None,
        group: Some(&tenant.group),
    };
    whole_flow(&browser, &console, &tenant, scope, false).await;

    // On the Organization page every action is disabled, with the reason.
    browser
        .goto(&format!(
            "{}/organizations/{}",
            console.origin, tenant.organization
        ))
        .await;
    browser
        .wait_for(&format!(
            "tr[data-token='{}/org-wide'] [data-action=revoke][disabled]",
            tenant.namespace
        ))
        .await;
    let notice = browser.text("#admin-notice").await;
    assert!(notice.contains("Organization Admin"), "{notice}");
    let reason = browser
        .script(
            "return document.querySelector('[data-action=delete]').title;",
            json!([]),
        )
        .await;
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains(r#"verb "admin""#)),
        "{reason}"
    );
}

#[tokio::test]
async fn a_user_without_the_admin_right_sees_the_api_servers_refusal() {
    let tenant = Tenant::new("console-none").await;
    let nora = unique_name("nora");
    grant_on_scope(&nora, "organizations", &tenant.organization, &["get"]).await;
    bind_edit(&nora, &tenant.namespace).await;
    let console = Console::start(&nora, &tenant.namespace).await;
    let browser = Browser::start(&nora).await;
    log_in(&browser, &console).await;
    browser
        .wait_for_text("main", "You are not an Organization Admin")
        .await;
    browser
        .goto(&format!(
            "{}/organizations/{}",
            console.origin, tenant.organization
        ))
        .await;
    browser.click("#create-open").await;
    browser.type_into("#token-name", "not-mine").await;
    browser.click("#create-submit").await;
    let refusal = browser.wait_for_text("#create-error", "admin").await;
    assert!(
        refusal.contains(&format!(
            r#"needs verb "admin" on organizations.iam.accesstoken.io "{}""#,
            tenant.organization
        )),
        "{refusal}"
    );
    assert!(
        tenant
            .tokens()
            .get_opt("not-mine")
            .await
            .expect("get")
            .is_none()
    );
    // A group nobody granted: the API server's own refusal to read it.
    browser
        .goto(&format!("{}/groups/{}", console.origin, tenant.group))
        .await;
    browser.wait_for_text("main", "forbidden").await;
}

/// The login cookie of a fresh console, and the console.
async fn logged_in(user: &str, namespace: &str) -> (Console, String) {
    let console = Console::start(user, namespace).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let wrong = format!("{}/login?key={}", console.origin, "0".repeat(64));
    assert_eq!(http.get(wrong).send().await.expect("answers").status(), 401);
    let answer = http.get(&console.login).send().await.expect("answers");
    assert_eq!(answer.status(), 303);
    let cookie = answer.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(
        http.get(&console.login)
            .send()
            .await
            .expect("answers")
            .status(),
        401,
        "the key works once"
    );
    let session = cookie.split(';').next().expect("name=value").to_string();
    (console, session)
}

#[tokio::test]
async fn requests_without_the_key_from_another_origin_or_for_another_host_are_refused() {
    let tenant = Tenant::new("console-sec").await;
    let olivia = organization_admin(&tenant).await;
    tenant
        .create_token("kept", json!({"organization": tenant.organization}))
        .await;
    let (console, session) = logged_in(&olivia, &tenant.namespace).await;
    let http = reqwest::Client::new();
    let page = format!("{}/organizations/{}", console.origin, tenant.organization);
    assert_eq!(
        http.get(&page).send().await.expect("answers").status(),
        401,
        "no key, no page"
    );
    let ok = http
        .get(&page)
        .header("cookie", &session)
        .send()
        .await
        .expect("answers");
    assert_eq!(ok.status(), 200);
    let headers = ok.headers().clone();
    assert_eq!(headers["cache-control"], "no-store");
    let policy = headers["content-security-policy"].to_str().expect("text");
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
        "{policy}"
    );
    let body = ok.text().await.expect("body");
    assert!(
        !body.contains("<script>") && !body.contains("https://"),
        "no inline script, no foreign asset"
    );
    let revoke = format!(
        "{}/api/tokens/{}/kept/revoke",
        console.origin, tenant.namespace
    );
    let post = |origin: Option<&str>| {
        let mut request = http
            .post(&revoke)
            .header("cookie", &session)
            .json(&json!({}));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    assert_eq!(
        post(Some("http://evil.example"))
            .await
            .expect("answers")
            .status(),
        403,
        "cross-origin write"
    );
    assert_eq!(
        post(None).await.expect("answers").status(),
        403,
        "a write of unknown origin"
    );
    let foreign = http
        .get(&page)
        .header("cookie", &session)
        .header("host", "rebound.example")
        .send()
        .await;
    assert_eq!(
        foreign.expect("answers").status(),
        421,
        "a foreign Host (DNS rebinding)"
    );
    assert!(
        !tenant
            .tokens()
            .get("kept")
            .await
            .expect("exists")
            .spec
            .revoked,
        "nothing was written"
    );
    // The same write from the console's own origin goes through.
    assert_eq!(
        post(Some(&console.origin)).await.expect("answers").status(),
        200
    );
    assert!(
        tenant
            .tokens()
            .get("kept")
            .await
            .expect("exists")
            .spec
            .revoked
    );
}
