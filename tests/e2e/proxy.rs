//! Through the authenticating proxy on the real nodes: the chart with `proxy.enabled`, and a
//! token's kubeconfig from its Secret driving `kubectl exec` (WebSocket, and SPDY with
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`), `logs -f`, `port-forward` and `cp` against a
//! pod on a node. kube-apiserver's webhook plays no part: the proxy authenticates.

use std::{path::PathBuf, process::Stdio};

use k8s_openapi::api::{core::v1::Pod, rbac::v1::RoleBinding};
use kube::{Api, api::PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    cluster::{self, eventually_within, load_image_once, run},
    install::{self, Installed},
    support::{Tenant, Watchdog, admin_client, cluster_env, free_port, test_logs_dir, within},
};

/// The workload image `tests/e2e/workload-image.sh` builds (a static busybox).
const WORKLOAD_IMAGE: &str = "localhost/ato-e2e-workload:1";
/// The proxy's pods.
const PROXY_SELECTOR: &str = "app.kubernetes.io/name=access-token-proxy";
/// The proxy's port on each node (the chart's proxy.port).
const PROXY_PORT: u16 = 9443;

/// The chart with the proxy on, serving with the cluster's certificate (valid for both
/// node addresses), the kubeconfig pointing at node 1's proxy and trusting the cluster CA.
async fn install_with_proxy() -> Installed {
    let node_ip = cluster_env("ATO_NODE_IPS")
        .split_whitespace()
        .next()
        .expect("a node address")
        .to_string();
    // The namespace exists once the install below creates it: the Secret waits for it.
    let installed = install::install_with_helm_values(json!({
        "proxy": {"enabled": true, "extraEnv": install::api_server_env()},
        "kubeconfig": {"server": format!("https://{node_ip}:{PROXY_PORT}")},
    }))
    .await;
    install::create_serving_secret("access-token-proxy-tls", "ATO_CLUSTER_CA").await;
    installed
}

/// A kubectl command with only the token's kubeconfig (no admin credentials around).
fn kubectl_as(kubeconfig: &PathBuf) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("kubectl");
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    command
}

/// Runs kubectl as the token and returns stdout, or stderr as the error.
async fn kubectl_output(
    kubeconfig: &PathBuf,
    env: &[(&str, &str)],
    args: &[&str],
) -> Result<String, String> {
    let output = kubectl_as(kubeconfig)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A busybox pod on a node: ticks to its log every half second and serves `pong` over HTTP
/// on loopback port `http_port` (host network: there is no CNI here).
async fn start_workload(tenant: &Tenant, http_port: u16) -> String {
    let script = format!(
        "mkdir -p /tmp/www && echo pong >/tmp/www/index.html && \
         httpd -p 127.0.0.1:{http_port} -h /tmp/www && \
         i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.5; done"
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "workload"},
        "spec": {
            "hostNetwork": true,
            "runtimeClassName": cluster_env("ATO_HOST_NETWORK_RUNTIME_CLASS"),
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": WORKLOAD_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
            }],
        },
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(tenant.client.clone(), &tenant.namespace);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the workload pod is created");
    eventually_within("the workload pod to run", || async {
        let pod = pods.get("workload").await.ok()?;
        (pod.status?.phase? == "Running").then_some(())
    })
    .await;
    "workload".to_string()
}

/// A pod that mounts the token's Secret, sets `KUBECONFIG` to its `kubeconfig` key and runs
/// `kubectl auth whoami` (host network: there is no CNI here; the kubeconfig names node 1's
/// proxy). Returns the username it printed.
async fn whoami_from_a_pod(tenant: &Tenant, secret: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "whoami"},
        "spec": {
            "hostNetwork": true,
            "runtimeClassName": cluster_env("ATO_HOST_NETWORK_RUNTIME_CLASS"),
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": WORKLOAD_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "mkdir -p /tmp && kubectl auth whoami -o jsonpath='{.status.userInfo.username}'"],
                "env": [
                    {"name": "KUBECONFIG", "value": "/token/kubeconfig"},
                    {"name": "HOME", "value": "/tmp"},
                ],
                "volumeMounts": [{"name": "token", "mountPath": "/token", "readOnly": true}],
            }],
            "volumes": [{"name": "token", "secret": {"secretName": secret}}],
        },
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(tenant.client.clone(), &tenant.namespace);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the whoami pod is created");
    let phase = eventually_within("the whoami pod to finish", || async {
        let phase = pods.get("whoami").await.ok()?.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let logs = pods
        .logs("whoami", &Default::default())
        .await
        .expect("the whoami pod's log");
    assert_eq!(phase, "Succeeded", "kubectl in the pod failed: {logs}");
    logs.trim().to_string()
}

/// Lets the token's groups edit its namespace (exec, logs, port-forward included).
async fn grant_edit(tenant: &Tenant) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "token-editors"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                      "name": format!("accesstoken:org:{}", tenant.organization)}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(tenant.client.clone(), &tenant.namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("the RoleBinding is created");
}

#[tokio::test]
async fn proxy_install_serves_exec_logs_port_forward_and_cp_with_the_secrets_kubeconfig() {
    let _one = crate::ONE_INSTALL.lock().await;
    let watchdog = Watchdog::arm();
    let _diagnostics = cluster::Diagnostics;
    load_image_once().await;
    let workload_archive = cluster::repo_root().join("target/image/e2e-workload.oci.tar");
    assert!(
        workload_archive.is_file(),
        "{} is missing: run tests/e2e/workload-image.sh (make test-e2e does)",
        workload_archive.display()
    );
    run(
        "hack/node/load-image.sh",
        &[&workload_archive.display().to_string()],
    )
    .await;
    let client = admin_client().await;
    let _installed = install_with_proxy().await;
    cluster::wait_for_rollout(&client).await;
    cluster::wait_for_rollout_of(&client, "access-token-proxy", PROXY_SELECTOR).await;

    let tenant = Tenant::in_installed_cluster("e2e-proxy", watchdog).await;
    crate::admission_policies_are_live(&tenant).await;
    grant_edit(&tenant).await;
    let http_port = free_port();
    let pod = start_workload(&tenant, http_port).await;
    tenant
        .issue("t", json!({"organization": tenant.organization}))
        .await;
    let secret = tenant.secrets().get("t").await.expect("the token's Secret");
    let kubeconfig = test_logs_dir().join("e2e-proxy-token.kubeconfig");
    std::fs::write(&kubeconfig, &secret.data.unwrap()["kubeconfig"].0).unwrap();

    let username = format!("accesstoken:{}:t", tenant.namespace);
    let whoami = [
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ];
    eventually_within("kubectl auth whoami through the proxy", || async {
        (kubectl_output(&kubeconfig, &[], &whoami).await.ok()? == username).then_some(())
    })
    .await;
    // A workload uses the Secret as it is: mounted, with KUBECONFIG pointing into it.
    assert_eq!(whoami_from_a_pod(&tenant, "t").await, username);

    // exec, over WebSocket (kubectl's default) and over SPDY.
    for (protocol, env) in [
        ("websocket", vec![]),
        ("spdy", vec![("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")]),
    ] {
        let said = kubectl_output(
            &kubeconfig,
            &env,
            &[
                "exec",
                &pod,
                "--",
                "echo",
                &format!("hello over {protocol}"),
            ],
        )
        .await;
        assert_eq!(
            said.as_deref().map(str::trim),
            Ok(format!("hello over {protocol}").as_str())
        );
    }

    // logs -f: lines arrive while the request is open.
    let mut follow = kubectl_as(&kubeconfig)
        .args(["logs", "-f", &pod])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl logs -f starts");
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut ticks = Vec::new();
    within(std::time::Duration::from_secs(60), async {
        while ticks.len() < 6 {
            match lines.next_line().await {
                Ok(Some(line)) => ticks.push(line),
                _ => break,
            }
        }
    })
    .await;
    assert!(
        ticks.len() >= 6 && ticks.iter().all(|t| t.starts_with("tick ")),
        "logs -f streamed {ticks:?}"
    );
    follow.kill().await.ok();

    // port-forward: a local port reaches the pod's through the proxy and the kubelet.
    let local = free_port();
    let mut forward = kubectl_as(&kubeconfig)
        .args(["port-forward", &pod, &format!("{local}:{http_port}")])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl port-forward starts");
    let mut forward_out = BufReader::new(forward.stdout.take().unwrap()).lines();
    let first = forward_out
        .next_line()
        .await
        .unwrap_or_default()
        .unwrap_or_default();
    assert!(
        first.contains("Forwarding from"),
        "port-forward said {first:?}"
    );
    let body = reqwest::get(format!("http://127.0.0.1:{local}/index.html"))
        .await
        .expect("a request through the port-forward")
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "pong");
    forward.kill().await.ok();

    // cp, both ways (tar over exec).
    let local_file = test_logs_dir().join("e2e-proxy-cp.txt");
    std::fs::write(&local_file, "copied through the proxy\n").unwrap();
    let remote = format!("{}/{pod}:/tmp/copied.txt", tenant.namespace);
    kubectl_output(
        &kubeconfig,
        &[],
        &["cp", &local_file.display().to_string(), &remote],
    )
    .await
    .expect("kubectl cp into the pod");
    let inside = kubectl_output(
        &kubeconfig,
        &[],
        &["exec", &pod, "--", "cat", "/tmp/copied.txt"],
    )
    .await;
    assert_eq!(inside.as_deref(), Ok("copied through the proxy\n"));
    let back = test_logs_dir().join("e2e-proxy-cp-back.txt");
    kubectl_output(
        &kubeconfig,
        &[],
        &["cp", &remote, &back.display().to_string()],
    )
    .await
    .expect("kubectl cp out of the pod");
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "copied through the proxy\n"
    );

    // The token's own RBAC still decides: it may not read the operator's namespace.
    let denied = kubectl_output(&kubeconfig, &[], &["get", "pods", "-n", cluster::NAMESPACE]).await;
    assert!(denied.is_err_and(|e| e.contains("forbidden")));
}
