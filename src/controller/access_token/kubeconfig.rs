//! The `kubeconfig` key of a token Secret: where clients connect (the proxy, or a
//! kube-apiserver that runs the webhook) with the token as the user, ready for
//! `kubectl --kubeconfig` or a pod's `KUBECONFIG`.
//!
//! The endpoint is the operator's configuration (`controller::Config::kubeconfig`, from the
//! flags of [`KubeconfigArgs`]); without it Secrets carry no `kubeconfig`.

use base64::Engine as _;
use serde::Serialize;

use crate::token::Token;

/// Flags naming where clients connect.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KubeconfigArgs {
    /// HTTPS URL clients reach the cluster at with their token (the proxy's Service or its
    /// external address, or a kube-apiserver that runs the webhook). Unset: Secrets carry
    /// no `kubeconfig` key.
    #[arg(long, env = "KUBECONFIG_SERVER")]
    pub kubeconfig_server: Option<String>,
    /// PEM file of the CA that signed that server's certificate (read at startup).
    #[arg(
        long,
        env = "KUBECONFIG_CA_FILE",
        requires = "kubeconfig_server",
        conflicts_with = "kubeconfig_ca_data"
    )]
    pub kubeconfig_ca_file: Option<std::path::PathBuf>,
    /// The same CA as base64 of the PEM (kubeconfig's `certificate-authority-data`).
    #[arg(long, env = "KUBECONFIG_CA_DATA", requires = "kubeconfig_server")]
    pub kubeconfig_ca_data: Option<String>,
}

/// Where clients connect: a server URL and the CA to trust for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://...`.
    pub server: String,
    /// PEM CA bundle; `None` trusts the client's system roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl Endpoint {
    /// The endpoint the flags name, `None` without `--kubeconfig-server`; a clear error for
    /// a URL that is not HTTPS or a CA that is not PEM.
    pub fn from_args(args: &KubeconfigArgs) -> crate::Result<Option<Self>> {
        let Some(server) = &args.kubeconfig_server else {
            return Ok(None);
        };
        let bad = |message: String| crate::Error::Config(message);
        if !server.starts_with("https://") || server.len() <= "https://".len() {
            return Err(bad(format!(
                "--kubeconfig-server must be an https:// URL, got {server:?}"
            )));
        }
        let ca_pem = match (&args.kubeconfig_ca_file, &args.kubeconfig_ca_data) {
            (Some(path), _) => Some(
                std::fs::read(path)
                    .map_err(|e| bad(format!("--kubeconfig-ca-file {}: {e}", path.display())))?,
            ),
            (None, Some(data)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| bad(format!("--kubeconfig-ca-data is not base64: {e}")))?,
            ),
            (None, None) => None,
        };
        if let Some(pem) = &ca_pem
            && !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(bad("the kubeconfig CA holds no PEM certificate".into()));
        }
        Ok(Some(Self {
            server: server.clone(),
            ca_pem,
        }))
    }
}

/// A kubeconfig: one cluster (the endpoint), one user holding the token, one context whose
/// namespace is the token's. Holds the token: it goes into the Secret and nowhere else.
pub fn render(endpoint: &Endpoint, namespace: &str, username: &str, token: &Token) -> Vec<u8> {
    let cluster = "access-token-operator";
    let config = Config {
        api_version: "v1",
        kind: "Config",
        clusters: [Named {
            name: cluster,
            cluster: Cluster {
                server: &endpoint.server,
                certificate_authority_data: endpoint
                    .ca_pem
                    .as_ref()
                    .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem)),
            },
        }],
        users: [NamedUser {
            name: username,
            user: User {
                token: token.expose_secret(),
            },
        }],
        contexts: [NamedContext {
            name: username,
            context: Context {
                cluster,
                user: username,
                namespace,
            },
        }],
        current_context: username,
    };
    serde_saphyr::to_string(&config)
        .expect("a kubeconfig of strings serializes")
        .into_bytes()
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Config<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: [Named<'a>; 1],
    users: [NamedUser<'a>; 1],
    contexts: [NamedContext<'a>; 1],
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
    cluster: Cluster<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster<'a> {
    server: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_authority_data: Option<String>,
}

#[derive(Serialize)]
struct NamedUser<'a> {
    name: &'a str,
    user: User<'a>,
}

#[derive(Serialize)]
struct User<'a> {
    token: &'a str,
}

#[derive(Serialize)]
struct NamedContext<'a> {
    name: &'a str,
    context: Context<'a>,
}

#[derive(Serialize)]
struct Context<'a> {
    cluster: &'a str,
    user: &'a str,
    namespace: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn args(server: &str) -> KubeconfigArgs {
        KubeconfigArgs {
            kubeconfig_server: Some(server.into()),
            ..KubeconfigArgs::default()
        }
    }

    #[test]
    fn renders_one_cluster_one_user_with_the_token_and_one_context_in_the_tokens_namespace() {
        let token = Token::generate();
        let endpoint = Endpoint {
            server: "https://proxy.example:443".into(),
            ca_pem: Some(PEM.as_bytes().to_vec()),
        };
        let rendered = render(&endpoint, "acme-ci", "accesstoken:acme-ci:deployer", &token);
        let parsed: serde_json::Value =
            serde_saphyr::from_slice(&rendered).expect("the kubeconfig is YAML");
        let expected = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "access-token-operator", "cluster": {
                "server": "https://proxy.example:443",
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(PEM),
            }}],
            "users": [{"name": "accesstoken:acme-ci:deployer",
                       "user": {"token": token.expose_secret()}}],
            "contexts": [{"name": "accesstoken:acme-ci:deployer", "context": {
                "cluster": "access-token-operator",
                "user": "accesstoken:acme-ci:deployer",
                "namespace": "acme-ci",
            }}],
            "current-context": "accesstoken:acme-ci:deployer",
        });
        assert_eq!(parsed, expected);
    }

    #[test]
    fn without_a_ca_the_cluster_trusts_the_system_roots() {
        let endpoint = Endpoint::from_args(&args("https://api.example"))
            .unwrap()
            .unwrap();
        let rendered = render(&endpoint, "ns", "accesstoken:ns:t", &Token::generate());
        assert!(
            !String::from_utf8(rendered)
                .unwrap()
                .contains("certificate-authority")
        );
    }

    #[test]
    fn the_flags_refuse_plain_http_and_a_ca_that_is_not_pem() {
        assert_eq!(
            Endpoint::from_args(&KubeconfigArgs::default()).unwrap(),
            None
        );
        let error = Endpoint::from_args(&args("http://proxy:80")).unwrap_err();
        assert!(error.to_string().contains("https://"), "{error}");
        let mut bad_ca = args("https://proxy");
        bad_ca.kubeconfig_ca_data = Some(base64::engine::general_purpose::STANDARD.encode("x"));
        assert!(Endpoint::from_args(&bad_ca).is_err());
        let mut good_ca = args("https://proxy");
        good_ca.kubeconfig_ca_data = Some(base64::engine::general_purpose::STANDARD.encode(PEM));
        let endpoint = Endpoint::from_args(&good_ca).unwrap().unwrap();
        assert_eq!(endpoint.ca_pem.as_deref(), Some(PEM.as_bytes()));
    }
}
