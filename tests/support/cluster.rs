//! The local control plane: clients, kubeconfigs, the one CRD installer, manifests from
//! `deploy/`, the operator's ServiceAccount, namespaces and unique names.

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};
use tokio::sync::OnceCell;

use super::wait::{DEADLINE, within};

fn kubeconfig_path() -> String {
    std::env::var("KUBECONFIG").unwrap_or_else(|_| {
        panic!(
            "KUBECONFIG is not set: integration tests need the local control plane. \
             Run `make test` (or `hack/local-cluster.sh -- cargo test`)."
        )
    })
}

/// The admin configuration of the local control plane, from KUBECONFIG.
async fn admin_config() -> Config {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("KUBECONFIG is readable");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("KUBECONFIG is valid")
}

/// An admin client for the local control plane.
pub async fn admin_client() -> Client {
    Client::try_from(admin_config().await).expect("client builds")
}

/// kube-apiserver's URL, from KUBECONFIG.
pub async fn api_server_url() -> String {
    admin_config()
        .await
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string()
}

/// A client that authenticates with a bearer token instead of the admin identity.
pub async fn client_with_token(token: &str) -> Client {
    let mut config = admin_config().await;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Client::try_from(config).expect("client builds")
}

/// A client acting as `user` (the admin impersonates it), with no groups but
/// `system:authenticated`: a person with exactly the RBAC a test grants `user`.
pub async fn client_as(user: &str) -> Client {
    let mut config = admin_config().await;
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("client builds")
}

/// An environment variable that the local-cluster launcher sets.
pub fn cluster_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests through `make test`"))
}

static INSTALLED: OnceCell<()> = OnceCell::const_new();

/// The parts of `deploy/` that tests install exactly as shipped: the operator's RBAC, the
/// admission policies and the tenant roles (everything but the Deployment, which needs a node).
pub const DEPLOY_MANIFESTS: [&str; 3] = [
    "deploy/rbac.yaml",
    "deploy/admission-policies.yaml",
    "deploy/tenant-roles.yaml",
];

/// Installs the CRDs and `DEPLOY_MANIFESTS`, once per test run.
pub async fn install_crds() {
    INSTALLED
        .get_or_init(|| async {
            let client = admin_client().await;
            apply_crds(&client).await;
            for path in DEPLOY_MANIFESTS {
                apply_manifests(&client, path).await;
            }
        })
        .await;
}

/// Applies the CRDs from `crds/` (as a user would, from the checked-in file, not from the
/// Rust types) and waits until the API server has established each.
pub async fn apply_crds(client: &Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/access-token-operator.yaml"
    ))
    .expect("crds/ is readable");
    let crds: Vec<CustomResourceDefinition> =
        serde_saphyr::from_multiple(&yaml).expect("crds/ holds CRDs");
    for crd in crds {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("integration-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("CRD {name} applies: {e}"));
        within(
            DEADLINE,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("watch works");
    }
}

/// Applies every document of a YAML file in this repository with server-side apply.
pub async fn apply_manifests(client: &Client, path: &str) {
    let yaml = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path} is readable: {e}"));
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery works");
    let objects: Vec<kube::api::DynamicObject> = serde_saphyr::from_multiple(&yaml)
        .unwrap_or_else(|e| panic!("{path} holds manifests: {e}"));
    for object in objects {
        let types = object.types.as_ref().expect("manifests name their kind");
        let gvk = kube::api::GroupVersionKind::try_from(types).expect("a valid apiVersion");
        let (resource, capabilities) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("the API server knows {gvk:?}"));
        let api: Api<kube::api::DynamicObject> = match capabilities.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object.namespace().as_deref().unwrap_or("default"),
                &resource,
            ),
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &object.name_any(),
            &PatchParams::apply("integration-tests").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("{} from {path} applies: {e}", object.name_any()));
    }
}

/// Namespace and name of the operator's ServiceAccount in `deploy/rbac.yaml`.
pub const OPERATOR_ACCOUNT: (&str, &str) = ("access-token-operator", "access-token-operator");

static OPERATOR_KUBECONFIG: OnceCell<std::path::PathBuf> = OnceCell::const_new();

/// A kubeconfig that authenticates as the operator's ServiceAccount (a token from the
/// TokenRequest API, as the kubelet would mount it), so that tests run the operator and
/// the verifier with exactly the RBAC that ships, never as a cluster admin.
pub async fn operator_kubeconfig() -> std::path::PathBuf {
    OPERATOR_KUBECONFIG
        .get_or_init(|| async {
            install_crds().await;
            let token = service_account_token(OPERATOR_ACCOUNT.0, OPERATOR_ACCOUNT.1).await;
            kubeconfig_with_token("operator-service-account", &token)
        })
        .await
        .clone()
}

/// Namespace and name of the proxy's ServiceAccount in `overlays/proxy`.
pub const PROXY_ACCOUNT: (&str, &str) = ("access-token-operator", "access-token-proxy");

static PROXY_KUBECONFIG: OnceCell<std::path::PathBuf> = OnceCell::const_new();

/// Installs the proxy's RBAC and admission policies as `overlays/proxy` ships them, and its
/// ServiceAccount, once; returns a kubeconfig that authenticates as that ServiceAccount
/// (what the proxy may read and impersonate, nothing more).
pub async fn proxy_kubeconfig() -> std::path::PathBuf {
    PROXY_KUBECONFIG
        .get_or_init(|| async {
            use k8s_openapi::api::core::v1::ServiceAccount;
            install_crds().await;
            let client = admin_client().await;
            apply_manifests(&client, "overlays/proxy/proxy-rbac.yaml").await;
            let (namespace, name) = PROXY_ACCOUNT;
            let account: ServiceAccount = serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "namespace": namespace}}),
            )
            .expect("a ServiceAccount");
            Api::<ServiceAccount>::namespaced(client, namespace)
                .patch(
                    name,
                    &PatchParams::apply("integration-tests"),
                    &Patch::Apply(&account),
                )
                .await
                .expect("the proxy's ServiceAccount applies");
            let token = service_account_token(namespace, name).await;
            kubeconfig_with_token("proxy-service-account", &token)
        })
        .await
        .clone()
}

/// A token for a ServiceAccount from the TokenRequest API, valid for the whole test run.
pub async fn service_account_token(namespace: &str, name: &str) -> String {
    use k8s_openapi::api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::ServiceAccount,
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(admin_client().await, namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(6 * 3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for ServiceAccount {namespace}/{name}: {e}"))
        .status
        .expect("the TokenRequest has a status")
        .token
        .expect("the TokenRequest carries a token")
}

/// A name nobody else in this test run uses: `<prefix>-<random>`.
pub fn unique_name(prefix: &str) -> String {
    let suffix: String = (0..6)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random_range(0..36)]))
        .collect();
    format!("{prefix}-{suffix}")
}

/// Creates a fresh namespace for one test and returns its name.
pub async fn test_namespace(client: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    create_namespace(client, &name).await;
    name
}

/// Creates every one of `objects` through `api`, 32 requests in flight: bulk data for a test
/// or a bench.
pub async fn create_all<K>(api: &Api<K>, objects: impl IntoIterator<Item = K>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    use futures::StreamExt as _;
    futures::stream::iter(objects)
        .map(|object| async move {
            api.create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("{} is created: {e}", object.name_any()))
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// Creates the namespace `name` (a bench's fixed one, or a test's unique one).
pub async fn create_namespace(client: &Client, name: &str) {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace is created");
}

/// `target/test-logs/`, created if missing: logs, kubeconfigs and scratch files of a run.
pub fn test_logs_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).expect("log dir is writable");
    dir
}

/// Writes a kubeconfig for the local control plane that authenticates with `bearer_token`,
/// to `target/test-logs/<name>.kubeconfig`, and returns its path.
pub fn kubeconfig_with_token(name: &str, bearer_token: &str) -> std::path::PathBuf {
    let mut kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("KUBECONFIG is readable");
    for named in &mut kubeconfig.auth_infos {
        named.auth_info = Some(kube::config::AuthInfo {
            token: Some(bearer_token.to_string().into()),
            ..Default::default()
        });
    }
    let path = test_logs_dir().join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        serde_saphyr::to_string(&kubeconfig).expect("kubeconfig serializes"),
    )
    .expect("kubeconfig is written");
    path
}
