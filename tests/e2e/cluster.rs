//! The test cluster with nodes, as `hack/local-cluster.sh --with-node` sets it up, and the
//! waits and checks the end-to-end tests share.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::SelfSubjectReview,
    core::v1::{Node, Pod, PodSpec},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use tokio::sync::OnceCell;

use crate::support::{Run, client_with_token, cluster_env, eventually_for};

/// Where both installs put the operator (the Helm release and the kustomize base agree).
pub const NAMESPACE: &str = "access-token-operator";
/// The operator pods' label.
pub const POD_SELECTOR: &str = "app.kubernetes.io/name=access-token-operator";
/// Pods start from an image already on the node, but a busy 2-core machine runs two
/// kubelets, two containerds and the control plane: more than the integration tests' minute.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// The repository's root (paths in the Makefile and scripts are relative to it).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The image `make image` builds, as the nodes know it once loaded.
pub fn image_repository() -> &'static str {
    "localhost/access-token-operator"
}

pub fn image_tag() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Runs `program` from the repository root and returns its stdout; fails the test with its
/// output if it fails.
pub async fn run(program: &str, args: &[&str]) -> String {
    Run::program(program, args)
        .current_dir(&repo_root())
        .succeed()
        .await
}

/// `eventually` with this binary's longer deadline.
pub async fn eventually_within<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_for(DEADLINE, what, check).await
}

static IMAGE_LOADED: OnceCell<()> = OnceCell::const_new();

/// Imports the image archive `make image` wrote into every node's containerd, once.
pub async fn load_image_once() {
    IMAGE_LOADED
        .get_or_init(|| async {
            let archive = std::env::var("ATO_IMAGE_ARCHIVE").unwrap_or_else(|_| {
                repo_root()
                    .join("target/image/access-token-operator.oci.tar")
                    .display()
                    .to_string()
            });
            assert!(
                std::path::Path::new(&archive).is_file(),
                "{archive} is missing: run `make image` (or `make test-e2e`, which does)"
            );
            run("hack/node/load-image.sh", &[&archive]).await;
        })
        .await;
}

/// Waits until the operator Deployment has rolled out: all replicas updated, available and
/// ready, one on each node. Returns its pods.
pub async fn wait_for_rollout(client: &Client) -> Vec<Pod> {
    wait_for_rollout_of(client, "access-token-operator", POD_SELECTOR).await
}

/// Waits until Deployment `name` (pods labelled `selector`) has rolled out, one pod on each
/// node, and returns its pods.
pub async fn wait_for_rollout_of(client: &Client, name: &str, selector: &str) -> Vec<Pod> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let nodes: BTreeSet<String> = cluster_env("ATO_NODE_NAMES")
        .split_whitespace()
        .map(String::from)
        .collect();
    eventually_within(&format!("{name} to roll out on every node"), || async {
        let deployment = deployments.get(name).await.ok()?;
        let wanted = deployment.spec.as_ref()?.replicas?;
        let status = deployment.status.as_ref()?;
        let rolled_out = status.observed_generation >= deployment.metadata.generation
            && status.updated_replicas == Some(wanted)
            && status.available_replicas == Some(wanted)
            && status.replicas == Some(wanted);
        if !rolled_out {
            return None;
        }
        let running: Vec<Pod> = pods
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .collect();
        let on: BTreeSet<String> = running
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (running.len() == wanted as usize && on == nodes).then_some(running)
    })
    .await
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Cordons (or uncordons) a node, as `kubectl cordon` does.
pub async fn set_unschedulable(client: &Client, node: &str, unschedulable: bool) {
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"unschedulable": unschedulable}})),
        )
        .await
        .unwrap_or_else(|e| panic!("node {node} is (un)cordoned: {e}"));
}

/// Whether the operator namespace's Pod Security admission admits a pod with `spec`
/// (a server-side dry run: nothing is created). `Err` carries the refusal.
pub async fn pod_security_verdict(client: &Client, spec: PodSpec) -> Result<(), String> {
    let pod = Pod {
        metadata: ObjectMeta {
            generate_name: Some("pod-security-probe-".into()),
            ..Default::default()
        },
        spec: Some(spec),
        ..Default::default()
    };
    Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The user kube-apiserver authenticates `token` as (through its token webhook, which asks
/// the in-cluster verifier), or `None` if it does not.
pub async fn authenticated_as(token: &str) -> Option<String> {
    let client = client_with_token(token).await;
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok()?;
    review.status?.user_info?.username
}

/// The object a manifest describes: (apiVersion, kind, namespace, name).
pub type ObjectRef = (String, String, Option<String>, String);

/// The objects of a multi-document YAML stream, as `ObjectRef`s.
pub fn objects_in(yaml: &str) -> Vec<ObjectRef> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).expect("rendered manifests are YAML");
    documents
        .into_iter()
        .filter(|d| d.is_object())
        .map(|d| {
            let text = |v: &serde_json::Value| v.as_str().map(String::from);
            (
                text(&d["apiVersion"]).expect("apiVersion"),
                text(&d["kind"]).expect("kind"),
                text(&d["metadata"]["namespace"]),
                text(&d["metadata"]["name"]).expect("name"),
            )
        })
        .collect()
}

/// The object's kind as kubectl names it: `Kind.group`, or `Kind` in the core group.
pub fn kubectl_kind((api_version, kind, _, _): &ObjectRef) -> String {
    match api_version.rsplit_once('/') {
        Some((group, _)) => format!("{kind}.{group}"),
        None => kind.clone(),
    }
}

/// Whether the API server still has the object (asked through kubectl, which maps any kind
/// to its resource).
pub async fn exists(object: &ObjectRef) -> bool {
    let (_, _, namespace, name) = object;
    let resource = kubectl_kind(object);
    let mut args = vec!["get", &resource, name, "--ignore-not-found", "-o", "name"];
    if let Some(namespace) = namespace {
        args.extend(["-n", namespace]);
    }
    !run("kubectl", &args).await.trim().is_empty()
}

/// The pods' names, for messages.
pub fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

/// On a failing test, prints what the operator pods and the Lease looked like, and the pods'
/// last log lines: the pods and their logs are gone once the cluster stops.
pub struct Diagnostics;

impl Drop for Diagnostics {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let kubectl = |args: &[&str]| {
            if let Ok(output) = std::process::Command::new("kubectl").args(args).output() {
                eprintln!(
                    "$ kubectl {}\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        };
        kubectl(&["get", "nodes,pods,leases", "-n", NAMESPACE, "-o", "wide"]);
        kubectl(&[
            "logs",
            "-n",
            NAMESPACE,
            "-l",
            POD_SELECTOR,
            "--prefix",
            "--tail=40",
        ]);
    }
}
