//! The `kubeconfig` key of a token Secret: written when the operator is told where clients
//! connect, usable by kubectl as it stands, rewritten by a rotation, and removed when the
//! operator no longer names an endpoint (it would hold a stale token).

use base64::Engine as _;
use kube::config::Kubeconfig;
use serde_json::{Value, json};

use crate::support::{
    Operator, Tenant, VerifierProcess, cluster_env, eventually, secret_text, test_logs_dir,
};

/// The kubeconfig in the token's Secret, parsed, with the Secret's `token`.
async fn kubeconfig_in_secret(tenant: &Tenant, name: &str) -> Option<(Value, String)> {
    let secret = tenant.secrets().get(name).await.ok()?;
    let raw = secret.data.as_ref()?.get("kubeconfig")?;
    let parsed = serde_saphyr::from_slice(&raw.0).expect("the kubeconfig is YAML");
    Some((parsed, secret_text(&secret, "token")))
}

/// `kubectl auth whoami` with nothing but the kubeconfig from the Secret.
async fn whoami(kubeconfig: &Value, file: &str) -> Option<String> {
    let path = test_logs_dir().join(file);
    std::fs::write(&path, serde_json::to_vec(kubeconfig).unwrap()).unwrap();
    let output = crate::support::within(
        crate::support::DEADLINE,
        tokio::process::Command::new("kubectl")
            .args([
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ])
            .arg("--kubeconfig")
            .arg(&path)
            .env_remove("KUBECONFIG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl runs");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn a_token_secret_carries_a_kubeconfig_that_kubectl_uses_and_rotation_rewrites() {
    let tenant = Tenant::new("kubeconfig").await;
    // Clients connect to kube-apiserver itself here (its webhook asks the verifier); with the
    // proxy it is the proxy's address, which changes nothing in the Secret's shape.
    let admin = Kubeconfig::read().expect("KUBECONFIG is readable");
    let server = admin.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("the admin kubeconfig names the server");
    let ca_file = cluster_env("ATO_CLUSTER_CA");
    let operator = Operator::builder(&tenant.namespace)
        .args(&[
            "--kubeconfig-server",
            &server,
            "--kubeconfig-ca-file",
            &ca_file,
        ])
        .start()
        .await;
    tenant
        .issue("t", json!({"organization": tenant.organization, "rotation": {"trigger": "1", "overlap": "1m"}}))
        .await;
    let (kubeconfig, token) = kubeconfig_in_secret(&tenant, "t")
        .await
        .expect("kubeconfig key");
    let username = format!("accesstoken:{}:t", tenant.namespace);
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca_file).unwrap());
    assert_eq!(
        kubeconfig,
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "access-token-operator",
                          "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": username, "user": {"token": token}}],
            "contexts": [{"name": username, "context": {
                "cluster": "access-token-operator", "user": username, "namespace": tenant.namespace}}],
            "current-context": username,
        })
    );

    let _webhook = VerifierProcess::start("kubeconfig-webhook").await;
    eventually(
        "kubectl with the Secret's kubeconfig to authenticate",
        || async {
            (whoami(&kubeconfig, "kubeconfig-before.yaml").await? == username).then_some(())
        },
    )
    .await;

    // A rotation writes the new token into the kubeconfig too.
    tenant
        .patch_spec("t", json!({"rotation": {"trigger": "2"}}))
        .await;
    let rotated = eventually(
        "the rotated token in the Secret and its kubeconfig",
        || async {
            let (kubeconfig, in_secret) = kubeconfig_in_secret(&tenant, "t").await?;
            (in_secret != token && kubeconfig["users"][0]["user"]["token"] == in_secret.as_str())
                .then_some(kubeconfig)
        },
    )
    .await;
    eventually(
        "kubectl with the rotated kubeconfig to authenticate",
        || async { (whoami(&rotated, "kubeconfig-rotated.yaml").await? == username).then_some(()) },
    )
    .await;

    // Without an endpoint the key goes: it would hold a token that a rotation makes stale.
    drop(operator);
    let _plain = Operator::start(&tenant.namespace).await;
    eventually("the kubeconfig key to be removed", || async {
        let secret = tenant.secrets().get("t").await.ok()?;
        (!secret.data?.contains_key("kubeconfig")).then_some(())
    })
    .await;
}
