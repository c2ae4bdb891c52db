//! The authenticating proxy (`access-token-operator proxy`) in front of the real
//! kube-apiserver, as on a managed cluster: no verifier serves kube-apiserver's webhook
//! port, so only the proxy can make an access token work. The proxy runs as a
//! ServiceAccount whose RBAC (made here, for this test's tokens only) may read what the
//! verifier reads and impersonate exactly the users, groups, uids and extras of the tokens.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::{
    core::v1::{ConfigMap, Pod, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

use access_token_operator::{api::Phase, token::Token};

use crate::support::{
    DEADLINE, Launch, METRICS_PAGE, Operator, PROXY_PREFIX, Tenant, assert_no_token_in,
    assert_serves, cluster_env, create_all, eventually, eventually_for, free_port,
    kubeconfig_with_token, kubectl, metric_names, service_account_token, strings, test_logs_dir,
    unique_name,
};

/// The proxy process, serving the cluster CA's certificate on a loopback port of its own.
struct ProxyProcess {
    _child: tokio::process::Child,
    url: String,
    probe_url: String,
    log_path: PathBuf,
}

impl ProxyProcess {
    /// Gives the proxy a ServiceAccount in the tenant's namespace that may impersonate the
    /// tokens `names` of the tenant (all Active), starts it and waits until it is ready.
    async fn start(tenant: &Tenant, names: &[&str]) -> Self {
        let account = unique_name("proxy");
        let accounts: Api<ServiceAccount> =
            Api::namespaced(tenant.client.clone(), &tenant.namespace);
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": account}})).unwrap(),
            )
            .await
            .expect("the proxy's ServiceAccount is created");
        grant_impersonation(tenant, &account, names).await;
        let token = service_account_token(&tenant.namespace, &account).await;
        let kubeconfig = kubeconfig_with_token(&format!("{account}-sa"), &token);
        let (port, probe_port) = (free_port(), free_port());
        let log_path = test_logs_dir().join(format!("{}-proxy.log", tenant.namespace));
        let _ = std::fs::remove_file(&log_path);
        let child = Launch::operator_binary(&[
            "proxy",
            "--proxy-bind",
            &format!("127.0.0.1:{port}"),
            "--tls-cert-file",
            &cluster_env("ATO_VERIFIER_CERT"),
            "--tls-key-file",
            &cluster_env("ATO_VERIFIER_KEY"),
        ])
        .kubeconfig(&kubeconfig)
        .env("PROBE_BIND", format!("127.0.0.1:{probe_port}"))
        .env("RUST_LOG", "warn,access_token_operator=debug")
        .log_to(log_path.clone())
        .spawn();
        let proxy = Self {
            _child: child,
            url: format!("https://127.0.0.1:{port}"),
            probe_url: format!("http://127.0.0.1:{probe_port}"),
            log_path,
        };
        let ready = format!("{}/readyz", proxy.probe_url);
        eventually("the proxy to be ready", || async {
            let response = reqwest::get(&ready).await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        proxy
    }

    /// A kubeconfig that reaches kube-apiserver through the proxy with `bearer` (what a
    /// token's Secret hands out), in the tenant's namespace.
    fn kubeconfig(&self, name: &str, bearer: &str, namespace: &str) -> PathBuf {
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {
                "server": self.url, "certificate-authority": cluster_env("ATO_CLUSTER_CA")}}],
            "users": [{"name": "token", "user": {"token": bearer}}],
            "contexts": [{"name": "proxy", "context": {
                "cluster": "proxy", "user": "token", "namespace": namespace}}],
            "current-context": "proxy",
        });
        let path = test_logs_dir().join(format!("{name}-via-proxy.kubeconfig"));
        std::fs::write(&path, kubeconfig.to_string()).expect("kubeconfig is written");
        path
    }

    /// An HTTPS client that trusts the cluster CA (which signed the proxy's certificate).
    fn http(&self) -> reqwest::Client {
        let ca = std::fs::read(cluster_env("ATO_CLUSTER_CA")).expect("CA is readable");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA parses"))
            .build()
            .expect("client builds")
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.probe_url))
            .await
            .expect("the probe port answers")
            .text()
            .await
            .expect("metrics are text")
    }
}

/// RBAC for the proxy's ServiceAccount: what the verifier reads, and impersonation of
/// exactly the identities of the tokens `names` (resourceNames everywhere), so a test
/// cannot pass through a wider right than the product would ship.
async fn grant_impersonation(tenant: &Tenant, account: &str, names: &[&str]) {
    let (ns, org, group) = (&tenant.namespace, &tenant.organization, &tenant.group);
    let mut users = Vec::new();
    let mut uids = Vec::new();
    let mut token_ids = Vec::new();
    for name in names {
        users.push(format!("accesstoken:{ns}:{name}"));
        let user = tenant
            .users()
            .get(name)
            .await
            .expect("TechnicalUser exists");
        uids.push(user.uid().expect("a uid"));
        token_ids.extend(user.spec.credentials.iter().map(|c| c.id.clone()));
    }
    let mut groups = vec![
        format!("accesstoken:org:{org}"),
        format!("accesstoken:group:{group}"),
    ];
    for role in ["admin", "user"] {
        groups.push(format!("accesstoken:org:{org}:{role}"));
        groups.push(format!("accesstoken:group:{group}:{role}"));
    }
    let roles = [
        "OrganizationAdmin",
        "OrganizationUser",
        "GroupAdmin",
        "GroupUser",
    ];
    let extra = |key: &str, values: Value| {
        json!({"apiGroups": ["authentication.k8s.io"], "resources": [format!("userextras/{key}")],
               "verbs": ["impersonate"], "resourceNames": values})
    };
    let name = format!("{ns}-{account}");
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": name},
        "rules": [
            {"apiGroups": ["iam.accesstoken.io"],
             "resources": ["accesstokens", "technicalusers", "organizations", "groups"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["iam.accesstoken.io"], "resources": ["accesstokens/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": users},
            {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"], "resourceNames": groups},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["uids"], "verbs": ["impersonate"], "resourceNames": uids},
            extra("iam.accesstoken.io/organization", json!([org])),
            extra("iam.accesstoken.io/group", json!([group])),
            extra("iam.accesstoken.io/role", json!(roles)),
            extra("iam.accesstoken.io/token-id", json!(token_ids)),
            extra("iam.accesstoken.io/client-ip", json!(["127.0.0.1"])),
        ],
    }))
    .expect("a valid ClusterRole");
    Api::<ClusterRole>::all(tenant.client.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("the proxy's ClusterRole is created");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
    }))
    .expect("a valid ClusterRoleBinding");
    Api::<ClusterRoleBinding>::all(tenant.client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("the proxy's ClusterRoleBinding is created");
}

/// Binds a built-in ClusterRole (`edit`, `view`) to a group in the tenant's namespace.
async fn bind_group(tenant: &Tenant, group: &str, cluster_role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": unique_name(cluster_role)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group}],
    }))
    .expect("a valid RoleBinding");
    Api::<RoleBinding>::namespaced(tenant.client.clone(), &tenant.namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding is created");
}

/// `kubectl <args>` through `kubeconfig`, with `stdin`: (success, stdout, stderr).
async fn kubectl_via(
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let run = kubectl(args).kubeconfig(kubeconfig);
    match stdin {
        Some(text) => run.stdin(text),
        None => run,
    }
    .outcome()
    .await
}

/// The user info kube-apiserver sees through the proxy, or `None` if the proxy refused
/// the token (401).
async fn whoami(kubeconfig: &std::path::Path) -> Option<Value> {
    kubectl::<&str>(&[])
        .kubeconfig(kubeconfig)
        .user_info()
        .await
}

/// The `Status` the proxy answered `request` with: (code, reason, message).
async fn status_of(request: reqwest::RequestBuilder) -> (u16, String, String) {
    let response = request.send().await.expect("the proxy answers");
    let code = response.status().as_u16();
    let status: Value = response.json().await.expect("a Status body");
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["code"], code, "{status}");
    let text = |key: &str| status[key].as_str().unwrap_or_default().to_string();
    (code, text("reason"), text("message"))
}

#[tokio::test]
async fn tokens_act_through_the_proxy_as_their_own_identity_and_nothing_else() {
    let tenant = Tenant::new("proxy-id").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let (org, group, ns) = (&tenant.organization, &tenant.group, &tenant.namespace);
    let admin = tenant
        .issue("admin", json!({"organization": org, "admin": true}))
        .await;
    let user = tenant.issue("user", json!({"organization": org})).await;
    let grp = tenant.issue("grp", json!({"group": group})).await;
    bind_group(&tenant, &format!("accesstoken:org:{org}:admin"), "edit").await;
    bind_group(&tenant, &format!("accesstoken:org:{org}:user"), "view").await;
    let proxy = ProxyProcess::start(&tenant, &["admin", "user", "grp"]).await;
    let admin_config = proxy.kubeconfig(&format!("{ns}-admin"), admin.expose_secret(), ns);
    let user_config = proxy.kubeconfig(&format!("{ns}-user"), user.expose_secret(), ns);
    let grp_config = proxy.kubeconfig(&format!("{ns}-grp"), grp.expose_secret(), ns);

    // whoami: the token's identity, impersonated by the proxy (the client-ip extra is the
    // proxy's: the webhook path has none).
    let info = eventually("the admin token to work through the proxy", || {
        whoami(&admin_config)
    })
    .await;
    assert_eq!(info["username"], format!("accesstoken:{ns}:admin"));
    assert_eq!(
        info["uid"],
        tenant.users().get("admin").await.unwrap().uid().unwrap()
    );
    let groups = strings(&info["groups"]);
    assert!(
        groups.contains(&format!("accesstoken:org:{org}:admin")),
        "{groups:?}"
    );
    assert_eq!(
        strings(&info["extra"]["iam.accesstoken.io/role"]),
        ["OrganizationAdmin"]
    );
    assert_eq!(
        strings(&info["extra"]["iam.accesstoken.io/token-id"]),
        [admin.id().to_string()]
    );
    assert_eq!(
        strings(&info["extra"]["iam.accesstoken.io/client-ip"]),
        ["127.0.0.1"]
    );
    let info = whoami(&grp_config).await.expect("the group token works");
    assert!(strings(&info["groups"]).contains(&format!("accesstoken:group:{group}:user")));

    // RBAC decides by the token's groups: the org admin may write, the org user only read.
    let (ok, _, stderr) = kubectl_via(
        &admin_config,
        &["create", "configmap", "by-admin", "--from-literal=a=1"],
        None,
    )
    .await;
    assert!(ok, "{stderr}");
    let (ok, _, stderr) =
        kubectl_via(&user_config, &["create", "configmap", "by-user"], None).await;
    assert!(!ok && stderr.contains("forbidden"), "{stderr}");
    assert!(
        stderr.contains(&format!("accesstoken:{ns}:user")),
        "{stderr}"
    );
    let (ok, stdout, stderr) = kubectl_via(
        &user_config,
        &["get", "configmap", "by-admin", "-o", "name"],
        None,
    )
    .await;
    assert!(ok && stdout.contains("by-admin"), "{stderr}");
    let (ok, _, _) = kubectl_via(&grp_config, &["get", "configmaps"], None).await;
    assert!(!ok, "the group token has no role in the namespace");

    // Server-side apply, through the proxy, owned by the field manager kubectl names.
    let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "applied", "namespace": ns}, "data": {"k": "v"}});
    let (ok, _, stderr) = kubectl_via(
        &admin_config,
        &[
            "apply",
            "--server-side",
            "--field-manager=proxy-test",
            "-f",
            "-",
        ],
        Some(&manifest.to_string()),
    )
    .await;
    assert!(ok, "{stderr}");
    let applied = Api::<ConfigMap>::namespaced(tenant.client.clone(), ns)
        .get("applied")
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["k"], "v");
    assert!(
        applied
            .metadata
            .managed_fields
            .unwrap()
            .iter()
            .any(|f| f.manager.as_deref() == Some("proxy-test"))
    );

    // Impersonation by the client, through kubectl or by hand: 403, saying why.
    for flags in [
        &["--as=system:admin"][..],
        &["--as=x", "--as-group=system:masters"],
    ] {
        let args = [flags, &["get", "pods"]].concat();
        let (ok, _, stderr) = kubectl_via(&admin_config, &args, None).await;
        assert!(
            !ok && stderr.contains("impersonation is not allowed"),
            "{flags:?}: {stderr}"
        );
    }
    let http = proxy.http();
    let pods = format!("{}/api/v1/namespaces/{ns}/pods", proxy.url);
    let forged = http
        .get(&pods)
        .bearer_auth(admin.expose_secret())
        .header("Impersonate-User", "system:admin");
    let (code, reason, message) = status_of(forged).await;
    assert_eq!((code, reason.as_str()), (403, "Forbidden"), "{message}");
    assert!(message.contains("Impersonate-*"), "{message}");

    // Any other credential, or none: 401 as kube-apiserver writes it.
    let service_account = service_account_token(ns, "default").await;
    for request in [
        http.get(&pods).bearer_auth(&service_account),
        http.get(&pods),
        http.get(&pods).basic_auth("admin", Some("admin")),
    ] {
        let (code, reason, message) = status_of(request).await;
        assert_eq!((code, reason.as_str()), (401, "Unauthorized"), "{message}");
    }
    let sa_config = proxy.kubeconfig(&format!("{ns}-sa"), &service_account, ns);
    assert!(
        whoami(&sa_config).await.is_none(),
        "a ServiceAccount token is refused"
    );

    // The values never reach the proxy's logs or metrics, though both saw them at work.
    let (logs, metrics) = (proxy.logs(), proxy.metrics().await);
    // Every proxy metric docs/operations/metrics.md lists is served.
    let documented: Vec<String> = metric_names(METRICS_PAGE)
        .into_iter()
        .filter(|name| name.starts_with(PROXY_PREFIX))
        .collect();
    assert!(!documented.is_empty(), "the proxy's metrics are documented");
    for name in &documented {
        assert_serves(&metrics, name);
    }
    assert_no_token_in(&logs, &[&admin, &user, &grp], "proxy's log");
    assert_no_token_in(&metrics, &[&admin, &user, &grp], "metrics");
    assert!(
        metrics.contains("access_token_operator_proxy_requests_total{verb=\"Read\",code=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("code=\"403\""),
        "refusals are counted: {metrics}"
    );
}

#[tokio::test]
async fn a_dead_token_is_refused_on_its_next_request_and_a_revived_one_works_again() {
    let tenant = Tenant::new("proxy-dead").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let (org, ns) = (&tenant.organization, &tenant.namespace);
    let live = tenant.issue("live", json!({"organization": org})).await;
    // Long enough to be seen working first, even on a loaded machine.
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let expiry = k8s_openapi::jiff::Timestamp::from_second(now + 90).unwrap();
    let soon = tenant
        .issue(
            "soon",
            json!({"organization": org, "expiresAt": expiry.to_string()}),
        )
        .await;
    let proxy = ProxyProcess::start(&tenant, &["live", "soon"]).await;
    let live_config = proxy.kubeconfig(&format!("{ns}-live"), live.expose_secret(), ns);
    let soon_config = proxy.kubeconfig(&format!("{ns}-soon"), soon.expose_secret(), ns);
    eventually("the token to work through the proxy", || {
        whoami(&live_config)
    })
    .await;
    eventually("the expiring token to work before its expiry", || {
        whoami(&soon_config)
    })
    .await;

    let refused = || async { whoami(&live_config).await.is_none().then_some(()) };
    let accepted = || async { whoami(&live_config).await.map(|_| ()) };
    tenant.patch_spec("live", json!({"revoked": true})).await;
    eventually("a revoked token to be refused", refused).await;
    tenant.patch_spec("live", json!({"revoked": false})).await;
    eventually("a re-enabled token to work again", accepted).await;

    let suspend = |suspended: bool| {
        let organizations = tenant.organizations();
        async move {
            let patch = json!({"spec": {"suspended": suspended}});
            organizations
                .patch(
                    org,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(patch),
                )
                .await
                .expect("Organization is patched");
        }
    };
    suspend(true).await;
    eventually("a suspended token to be refused", refused).await;
    suspend(false).await;
    eventually("an unsuspended token to work again", accepted).await;

    eventually_for(
        Duration::from_secs(120),
        "the expired token to be refused",
        || async { whoami(&soon_config).await.is_none().then_some(()) },
    )
    .await;

    tenant
        .tokens()
        .delete("live", &Default::default())
        .await
        .expect("the token is deleted");
    eventually("a deleted token to be refused", refused).await;
    tenant.wait_for_phase("soon", Phase::Expired).await;
}

#[tokio::test]
async fn watches_and_large_lists_stream_through_the_proxy() {
    let tenant = Tenant::new("proxy-stream").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let (org, ns) = (&tenant.organization, &tenant.namespace);
    let admin = tenant
        .issue("admin", json!({"organization": org, "admin": true}))
        .await;
    bind_group(&tenant, &format!("accesstoken:org:{org}:admin"), "edit").await;
    let proxy = ProxyProcess::start(&tenant, &["admin"]).await;
    let http = proxy.http();
    let configmaps = format!("{}/api/v1/namespaces/{ns}/configmaps", proxy.url);
    let list: Value = eventually("a list through the proxy", || async {
        let response = http
            .get(&configmaps)
            .bearer_auth(admin.expose_secret())
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(())?;
        response.json().await.ok()
    })
    .await;
    let version = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // A watch: the event arrives while the request is still open.
    let mut watch = http
        .get(format!("{configmaps}?watch=true&resourceVersion={version}"))
        .bearer_auth(admin.expose_secret())
        .send()
        .await
        .expect("the watch opens");
    assert_eq!(watch.status(), 200);
    let api = Api::<ConfigMap>::namespaced(tenant.client.clone(), ns);
    let configmap = |name: String| -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"bulk": "yes"}}, "data": {"n": "1"}}),
        )
        .unwrap()
    };
    api.create(&PostParams::default(), &configmap("streamed".into()))
        .await
        .unwrap();
    let event = tokio::time::timeout(DEADLINE, async {
        let mut seen = String::new();
        while let Some(chunk) = watch.chunk().await.expect("the watch streams") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("\"streamed\"") {
                return seen;
            }
        }
        panic!("the watch ended before the event: {seen}");
    })
    .await
    .expect("the event arrives while the watch is open");
    assert!(event.contains("\"type\":\"ADDED\""), "{event}");

    // 5,000 objects in one list answer, complete.
    create_all(&api, (0..4999).map(|i| configmap(format!("bulk-{i}")))).await;
    let all = api
        .list(&ListParams::default().labels("bulk=yes"))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 5000, "sanity: all objects exist");
    let response = http
        .get(format!("{configmaps}?labelSelector=bulk%3Dyes"))
        .bearer_auth(admin.expose_secret())
        .send()
        .await
        .expect("the list answers");
    assert_eq!(response.status(), 200);
    let listed: Value = response
        .json()
        .await
        .expect("the whole list arrives as JSON");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(5000));
}

#[tokio::test]
async fn exec_upgrade_requests_reach_kube_apiserver_as_the_token() {
    let tenant = Tenant::new("proxy-exec").await;
    let _operator = Operator::start(&tenant.namespace).await;
    let (org, ns) = (&tenant.organization, &tenant.namespace);
    let admin = tenant
        .issue("admin", json!({"organization": org, "admin": true}))
        .await;
    let user = tenant.issue("user", json!({"organization": org})).await;
    bind_group(&tenant, &format!("accesstoken:org:{org}:admin"), "edit").await;
    bind_group(&tenant, &format!("accesstoken:org:{org}:user"), "view").await;
    let pods = Api::<Pod>::namespaced(tenant.client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "target"}, "spec": {
        "automountServiceAccountToken": false,
        "containers": [{"name": "c", "image": "example.invalid/none"}]}}))
    .unwrap();
    eventually("the pod to be created", || async {
        pods.create(&PostParams::default(), &pod).await.ok()
    })
    .await;
    let proxy = ProxyProcess::start(&tenant, &["admin", "user"]).await;
    let http = proxy.http();
    let exec = format!(
        "{}/api/v1/namespaces/{ns}/pods/target/exec?command=true&stdout=true",
        proxy.url
    );
    let spdy = |token: &Token| {
        http.post(&exec)
            .bearer_auth(token.expose_secret())
            .header("Connection", "Upgrade")
            .header("Upgrade", "SPDY/3.1")
            .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
    };
    let websocket = |token: &Token| {
        http.get(&exec)
            .bearer_auth(token.expose_secret())
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Protocol", "v5.channel.k8s.io")
    };
    // kube-apiserver authorizes the upgrade as the token and answers (the pod has no node,
    // so no stream opens): its answer comes back through the proxy.
    for request in [spdy(&admin), websocket(&admin)] {
        let (code, _, message) = status_of(request).await;
        assert_eq!(code, 400, "{message}");
        assert!(
            message.contains("does not have a host assigned"),
            "{message}"
        );
    }
    for request in [spdy(&user), websocket(&user)] {
        let (code, reason, message) = status_of(request).await;
        assert_eq!((code, reason.as_str()), (403, "Forbidden"), "{message}");
        assert!(
            message.contains(&format!("accesstoken:{ns}:user")),
            "{message}"
        );
    }
}
