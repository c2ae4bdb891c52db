//! The probe server of a controller-only process: metrics of tokens and reconciles (and no
//! token value in them), liveness that fails while the controller cannot list, and the
//! first status a new AccessToken gets: its final one, or Reconciling=True if its first
//! reconcile cannot finish.

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams},
};
use serde_json::json;

use access_token_operator::api::{AccessToken, AccessTokenStatus, Phase, TechnicalUser};

use crate::support::{
    DEADLINE, METRICS_PAGE, Operator, PROXY_PREFIX, Tenant, assert_serves, delete_and_wait_gone,
    delete_denial, deny_writes_in, eventually, free_port, kubeconfig_with_token, lift_denial,
    metric_names, service_account_token, within,
};

/// `GET http://<address><path>`: (status code, body), if the server answers.
async fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://{address}{path}")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Polls `path` until it answers `code`; returns the body.
async fn wait_for_code(address: &str, path: &str, code: u16) -> String {
    eventually(&format!("{path} to answer {code}"), || async {
        let (status, body) = get(address, path).await?;
        (status == code).then_some(body)
    })
    .await
}

#[tokio::test]
async fn a_controller_only_process_serves_probes_and_metrics_without_token_values() {
    let tenant = Tenant::new("obs-metrics").await;
    let address = format!("127.0.0.1:{}", free_port());
    let _operator = Operator::builder(&tenant.namespace)
        .args(&["--probe-bind", &address])
        .start()
        .await;
    let spec = json!({"organization": tenant.organization, "expiresAt": "2031-01-01T00:00:00Z"});
    let token = tenant.issue("live", spec.clone()).await;
    tenant
        .create_token(
            "revoked",
            json!({"organization": tenant.organization, "revoked": true}),
        )
        .await;
    tenant.wait_for_phase("revoked", Phase::Revoked).await;

    assert_eq!(wait_for_code(&address, "/healthz", 200).await, "ok");
    assert_eq!(wait_for_code(&address, "/readyz", 200).await, "ok");
    let ns = &tenant.namespace;
    let expected = [
        format!(
            r#"access_token_operator_token_phase{{namespace="{ns}",name="live",phase="Active"}} 1"#
        ),
        format!(
            r#"access_token_operator_token_phase{{namespace="{ns}",name="revoked",phase="Revoked"}} 1"#
        ),
        // 2031-01-01T00:00:00Z
        format!(
            r#"access_token_operator_token_expiration_timestamp_seconds{{namespace="{ns}",name="live"}} 1924992000"#
        ),
        r#"access_token_operator_tokens{phase="Active"} 1"#.to_string(),
        r#"access_token_operator_tokens{phase="Revoked"} 1"#.to_string(),
        r#"access_token_operator_reconciles_total{controller="AccessToken",result="Success"}"#
            .to_string(),
        r#"access_token_operator_reconcile_duration_seconds_count{controller="AccessToken"}"#
            .to_string(),
        "process_cpu_seconds_total ".to_string(),
        "process_resident_memory_bytes ".to_string(),
        "process_open_fds ".to_string(),
        "access_token_operator_build_info{version=".to_string(),
    ];
    let text = eventually("every expected series", || async {
        let (_, text) = get(&address, "/metrics").await?;
        expected
            .iter()
            .all(|line| text.contains(line.as_str()))
            .then_some(text)
    })
    .await;
    // Both tokens' creations asked for reconciles, and were counted as the token's own.
    let asked_by_tokens = text
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                r#"access_token_operator_reconcile_triggers_total{source="AccessToken"} "#,
            )
        })
        .and_then(|value| value.parse::<f64>().ok());
    assert!(
        asked_by_tokens.is_some_and(|n| n >= 2.0),
        "reconciles asked for by the tokens: {asked_by_tokens:?}"
    );
    // The token, its secret part and its id's secret-bearing form appear nowhere.
    assert!(
        !text.contains(token.expose_secret()),
        "token value in metrics"
    );
    assert!(
        !text.contains(token.expose_secret_part()),
        "secret part in metrics"
    );
    assert!(
        !text.contains("atk_"),
        "something token-shaped in metrics:\n{text}"
    );

    // Every metric the README and the Grafana dashboard name is one this process serves.
    // (The proxy's families are the proxy's: tests/integration/proxy/authenticating_proxy.rs.)
    let docs = [
        METRICS_PAGE,
        include_str!("../../../deploy/grafana/access-token-operator.json"),
    ];
    // Labelled by the failing step, reconcile_failures has no series before a first failure.
    let first_series_on_event = ["access_token_operator_reconcile_failures_total"];
    for name in docs.iter().flat_map(|doc| metric_names(doc)) {
        if first_series_on_event.contains(&name.as_str()) || name.starts_with(PROXY_PREFIX) {
            continue;
        }
        assert_serves(&text, &name);
    }

    // A deleted token's series go with it.
    delete_and_wait_gone(&tenant.tokens(), "live").await;
    let gone = r#"name="live""#;
    eventually("the deleted token's series to go", || async {
        let (_, text) = get(&address, "/metrics").await?;
        (!text.contains(gone) && text.contains(r#"access_token_operator_tokens{phase="Active"} 0"#))
            .then_some(())
    })
    .await;
}

/// A ServiceAccount bound to the operator's shipped ClusterRole.
struct Binding {
    name: String,
    api: Api<ClusterRoleBinding>,
}

impl Binding {
    async fn grant(tenant: &Tenant, account: &str) -> Self {
        let api: Api<ClusterRoleBinding> = Api::all(tenant.client.clone());
        let name = format!("{}-{account}", tenant.namespace);
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".to_string()),
                kind: "ClusterRole".into(),
                name: "access-token-operator".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: account.into(),
                namespace: Some(tenant.namespace.clone()),
                ..Default::default()
            }]),
        };
        api.create(&PostParams::default(), &binding)
            .await
            .expect("ClusterRoleBinding is created");
        Self { name, api }
    }

    async fn delete(self) {
        self.api
            .delete(&self.name, &DeleteParams::default())
            .await
            .expect("ClusterRoleBinding is deleted");
    }
}

#[tokio::test]
async fn liveness_fails_while_the_controller_cannot_list_and_recovers_with_its_rbac() {
    let tenant = Tenant::new("obs-wedged").await;
    // An operator identity with none of the operator's RBAC yet: every list is forbidden.
    let account = "wedged-operator";
    let accounts: Api<ServiceAccount> = Api::namespaced(tenant.client.clone(), &tenant.namespace);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(account.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("ServiceAccount is created");
    let bearer = service_account_token(&tenant.namespace, account).await;
    let kubeconfig = kubeconfig_with_token(&format!("{}-wedged", tenant.namespace), &bearer);
    tenant
        .create_token("waiting", json!({"organization": tenant.organization}))
        .await;
    let address = format!("127.0.0.1:{}", free_port());
    let operator = Operator::builder(&tenant.namespace)
        .log_name(&format!("{}-wedged", tenant.namespace))
        .args(&["--probe-bind", &address, "--liveness-stall-seconds", "2"])
        .through(kubeconfig)
        .start()
        .await;

    let why = wait_for_code(&address, "/healthz", 503).await;
    assert!(why.contains("watches have failed"), "{why}");
    let (ready, _) = get(&address, "/readyz").await.expect("answers");
    assert_eq!(ready, 503, "not ready while not live");
    let (_, metrics) = get(&address, "/metrics").await.expect("answers");
    assert!(
        metrics.contains(r#"access_token_operator_watch_errors_total{controller="AccessToken"}"#),
        "{metrics}"
    );

    // Given the operator's ClusterRole, the controller lists and reconciles again (the token
    // itself stays unissued: the admission policies let only the operator's own
    // ServiceAccount write AccessTokens), and a finished reconcile is progress: live again.
    let binding = Binding::grant(&tenant, account).await;
    assert_eq!(wait_for_code(&address, "/healthz", 200).await, "ok");
    let (_, metrics) = get(&address, "/metrics").await.expect("answers");
    assert!(
        metrics.contains(
            r#"access_token_operator_reconcile_duration_seconds_count{controller="AccessToken"}"#
        ),
        "a reconcile ran: {metrics}"
    );
    drop(operator);
    binding.delete().await;
}

/// Every status the API server stored for AccessToken `name` in `tenant`, in order, from
/// before `create` runs until the token is Active.
async fn statuses_until_active<T, F: std::future::Future<Output = T>>(
    tenant: &Tenant,
    name: &str,
    create: F,
) -> Vec<AccessTokenStatus> {
    let tokens = tenant.tokens();
    let version = tokens
        .list_metadata(&ListParams::default())
        .await
        .expect("list works")
        .metadata
        .resource_version
        .expect("a list has a resourceVersion");
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    let mut events = tokens
        .watch(&params, &version)
        .await
        .expect("watch starts")
        .boxed();
    create.await;
    let mut statuses = Vec::new();
    within(DEADLINE, async {
        while let Some(event) = events.next().await {
            let token: AccessToken = match event.expect("watch event") {
                WatchEvent::Added(t) | WatchEvent::Modified(t) => t,
                _ => continue,
            };
            let Some(status) = token.status else { continue };
            let done = status.phase == Some(Phase::Active);
            statuses.push(status);
            if done {
                break;
            }
        }
    })
    .await;
    statuses
}

/// Whether `status` has condition `type_` True.
fn has(status: &AccessTokenStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[tokio::test]
async fn a_first_reconcile_that_finishes_writes_the_final_status_first() {
    let tenant = Tenant::new("obs-first").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let create = tenant.create_token("fresh", json!({"organization": tenant.organization}));
    let statuses = statuses_until_active(&tenant, "fresh", create).await;
    // One write fewer per token (issue 22): no Reconciling status before the real one.
    let first = statuses.first().expect("a status was written");
    assert_eq!(first.phase, Some(Phase::Active), "{statuses:?}");
    assert!(has(first, "Ready"), "{first:?}");
    assert!(
        statuses.iter().all(|s| !has(s, "Reconciling")),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_first_reconcile_that_cannot_finish_leaves_the_token_reconciling() {
    let tenant = Tenant::new("obs-reconciling").await;
    // The operator cannot write TechnicalUsers here: its first reconcile fails.
    let probe: TechnicalUser = serde_json::from_value(json!({
        "apiVersion": "iam.accesstoken.io/v1alpha1", "kind": "TechnicalUser",
        "metadata": {"name": "probe"},
        "spec": {
            "scope": {"kind": "Organization", "name": tenant.organization, "organization": tenant.organization},
            "role": "OrganizationUser", "disabled": false,
            "expiresAt": "2030-01-01T00:00:00Z", "credentials": []
        }
    }))
    .expect("a valid TechnicalUser");
    let policy = deny_writes_in(
        &tenant.namespace,
        "no-users-for-the-first-reconcile",
        &probe,
    )
    .await;
    let _operator = Operator::start(&tenant.namespace).await;
    let lifted = async {
        tenant
            .create_token("fresh", json!({"organization": tenant.organization}))
            .await;
        let reconciling = eventually("the token to read Reconciling", || async {
            let token = tenant.tokens().get("fresh").await.ok()?;
            token.status.filter(|s| has(s, "Reconciling"))
        })
        .await;
        assert_eq!(reconciling.phase, None, "the first status decides nothing");
        let reason = reconciling
            .conditions
            .iter()
            .find(|c| c.type_ == "Reconciling");
        assert_eq!(reason.map(|c| c.reason.as_str()), Some("FirstReconcile"));
        lift_denial(&policy).await;
    };
    let statuses = statuses_until_active(&tenant, "fresh", lifted).await;
    assert!(has(&statuses[0], "Reconciling"), "{statuses:?}");
    let last = statuses.last().expect("Active");
    assert!(has(last, "Ready") && !has(last, "Reconciling"), "{last:?}");
    delete_denial(&policy).await;
}

#[tokio::test]
async fn the_probe_port_cuts_off_a_stalled_request_header() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // The probe port faces the pod network (the kubelet, Prometheus): a client that opens a
    // connection and never finishes its header must not hold it (its limits: PROBE_LIMITS,
    // a 5 s header timeout; before, the plain axum server waited forever).
    let tenant = Tenant::new("obs-stall").await;
    let address = format!("127.0.0.1:{}", free_port());
    let _operator = Operator::builder(&tenant.namespace)
        .args(&["--probe-bind", &address])
        .start()
        .await;
    assert_eq!(wait_for_code(&address, "/healthz", 200).await, "ok");
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    stalled
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAcc")
        .await
        .unwrap();
    stalled.flush().await.unwrap();
    let mut answer = Vec::new();
    // EOF or a reset: either way the server closed it (`within` fails the test otherwise).
    let _ = within(DEADLINE, stalled.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "the half request was not served"
    );
    // A prompt client is still served.
    assert_eq!(wait_for_code(&address, "/healthz", 200).await, "ok");
}
