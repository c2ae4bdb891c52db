//! The two ways users install the operator, with the settings this test cluster needs:
//! the image loaded on the nodes, host networking with the runtime class Pod Security
//! exempts here, kube-apiserver reached on loopback, and the verifier's TLS Secret.

use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use serde_json::json;

use crate::{
    cluster::{
        NAMESPACE, ObjectRef, eventually_within, exists, image_repository, image_tag, kubectl_kind,
        objects_in, repo_root, run,
    },
    support::{admin_client, cluster_env},
};

const RELEASE: &str = "access-token-operator";

#[derive(Clone, Copy)]
pub enum Installer {
    Helm,
    Kustomize,
}

/// What an install created, read back from the installer (`helm get manifest`, the
/// kustomize build): every object must be gone after the uninstall, but those the
/// uninstall keeps on purpose.
pub struct Installed {
    pub objects: Vec<ObjectRef>,
    /// Objects the uninstall leaves in place by design (Helm keeps the CRDs), which the
    /// test then deletes itself so that the next install starts from nothing.
    pub kept: Vec<ObjectRef>,
    /// The kustomization the test built (kustomize only).
    kustomization: Option<std::path::PathBuf>,
}

impl Installer {
    pub fn name(self) -> &'static str {
        match self {
            Installer::Helm => "helm",
            Installer::Kustomize => "kustomize",
        }
    }

    pub async fn install(self) -> Installed {
        match self {
            Installer::Helm => install_with_helm().await,
            Installer::Kustomize => install_with_kustomize().await,
        }
    }

    pub async fn uninstall(self, installed: &Installed) {
        match self {
            Installer::Helm => {
                run(&helm(), &["uninstall", RELEASE, "-n", NAMESPACE, "--wait"]).await;
                // The namespace is the user's (created before the install, as README says).
                delete_namespace().await;
            }
            Installer::Kustomize => {
                let dir = installed
                    .kustomization
                    .as_ref()
                    .unwrap()
                    .display()
                    .to_string();
                run("kubectl", &["delete", "-k", &dir, "--wait=true"]).await;
            }
        }
        for object in &installed.kept {
            assert!(exists(object).await, "{object:?} is kept by the uninstall");
            let kind = kubectl_kind(object);
            run("kubectl", &["delete", &kind, &object.3, "--wait=true"]).await;
        }
    }
}

/// After the uninstall, none of the installed objects exists any more.
pub async fn assert_nothing_left(installed: &Installed) {
    for object in &installed.objects {
        eventually_within(&format!("{object:?} to be gone"), || async {
            (!exists(object).await).then_some(())
        })
        .await;
    }
}

/// The Helm binary `hack/helm/build.sh` built (`make test-e2e` sets HELM).
fn helm() -> String {
    std::env::var("HELM").unwrap_or_else(|_| "helm".into())
}

/// `target/e2e/`, created if missing: the values file and kustomization the test writes.
fn scratch_dir() -> std::path::PathBuf {
    let dir = repo_root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Environment the pods need here: kube-apiserver listens on loopback, not on the
/// `kubernetes` Service's address (there is no kube-proxy).
fn api_server_env() -> serde_json::Value {
    json!([
        {"name": "KUBERNETES_SERVICE_HOST", "value": cluster_env("ATO_API_HOST")},
        {"name": "KUBERNETES_SERVICE_PORT", "value": cluster_env("ATO_API_PORT")},
    ])
}

/// The namespace, labelled for Pod Security `restricted`, and the verifier's TLS Secret:
/// the serving certificate kube-apiserver's webhook trusts, and the CA of the client
/// certificate kube-apiserver presents.
async fn create_namespace_and_tls_secret() {
    let client = admin_client().await;
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": {"name": NAMESPACE, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
        }}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("the operator's namespace is created");
    create_tls_secret().await;
}

async fn create_tls_secret() {
    let client = admin_client().await;
    let file = |var: &str| ByteString(std::fs::read(cluster_env(var)).unwrap());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("access-token-verifier-tls".into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt".to_string(), file("ATO_VERIFIER_CERT")),
                ("tls.key".to_string(), file("ATO_VERIFIER_KEY")),
                ("ca.crt".to_string(), file("ATO_VERIFIER_CLIENT_CA")),
            ]
            .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client, NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .expect("the verifier's TLS Secret is created");
}

async fn delete_namespace() {
    run(
        "kubectl",
        &[
            "delete",
            "namespace",
            NAMESPACE,
            "--ignore-not-found",
            "--wait=true",
        ],
    )
    .await;
}

async fn install_with_helm() -> Installed {
    create_namespace_and_tls_secret().await;
    let values = json!({
        "image": {"repository": image_repository(), "tag": image_tag(), "pullPolicy": "Never"},
        "hostNetwork": true,
        "runtimeClassName": cluster_env("ATO_HOST_NETWORK_RUNTIME_CLASS"),
        "extraEnv": api_server_env(),
        "verifier": {"clientCA": {"enabled": true}},
    });
    let values_file = scratch_dir().join("helm-values.yaml");
    // JSON is YAML.
    std::fs::write(&values_file, values.to_string()).unwrap();
    let helm = helm();
    run(
        &helm,
        &[
            "install",
            RELEASE,
            "charts/access-token-operator",
            "-n",
            NAMESPACE,
            "-f",
            &values_file.display().to_string(),
        ],
    )
    .await;
    let objects = objects_in(&run(&helm, &["get", "manifest", RELEASE, "-n", NAMESPACE]).await);
    let kept = objects
        .iter()
        .filter(|(_, kind, _, _)| kind == "CustomResourceDefinition")
        .cloned()
        .collect();
    Installed {
        objects,
        kept,
        kustomization: None,
    }
}

async fn install_with_kustomize() -> Installed {
    let dir = scratch_dir().join("kustomize");
    std::fs::create_dir_all(&dir).unwrap();
    // A user's overlay over the shipped base, as README shows, with this cluster's settings.
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../../deploy"],
        "components": ["../../../overlays/host-network"],
        "images": [{"name": "access-token-operator", "newName": image_repository(), "newTag": image_tag()}],
        "patches": [{
            "target": {"kind": "Deployment", "name": "access-token-operator"},
            "patch": json!([
                {"op": "add", "path": "/spec/template/spec/runtimeClassName",
                 "value": cluster_env("ATO_HOST_NETWORK_RUNTIME_CLASS")},
                {"op": "add", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"},
                {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": api_server_env()[0]},
                {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": api_server_env()[1]},
                {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--client-ca-file=/tls/ca.crt"},
            ]).to_string(),
        }],
    });
    std::fs::write(dir.join("kustomization.yaml"), kustomization.to_string()).unwrap();
    let dir_arg = dir.display().to_string();
    let objects = objects_in(&run("kubectl", &["kustomize", &dir_arg]).await);
    // The base brings the namespace; the TLS Secret is the user's (or cert-manager's), made
    // once the namespace exists.
    run("kubectl", &["apply", "--server-side", "-k", &dir_arg]).await;
    create_tls_secret().await;
    Installed {
        objects,
        kept: vec![],
        kustomization: Some(dir),
    }
}
