//! kubectl's usual connection flags and the kube client they build. kubectl does not pass its
//! own global flags to a plugin, so the plugin takes them itself, with kubectl's names and
//! meaning: the same command line works with `kubectl get` and `kubectl atk`.
//!
//! Impersonation set in the kubeconfig (`as:`, `as-groups:`, `as-uid:`) is honoured as kubectl
//! does; `--as`, `--as-group` and `--as-uid` replace it field by field.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// Connection flags, as kubectl spells them. Global: they go before or after the subcommand.
#[derive(Args, Debug, Clone, Default)]
pub struct KubeFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        value_hint = clap::ValueHint::FilePath,
        help_heading = "Kubernetes"
    )]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME", help_heading = "Kubernetes")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true, value_name = "NAME", help_heading = "Kubernetes")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true, value_name = "NAME", help_heading = "Kubernetes")]
    pub user: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(
        short,
        long,
        global = true,
        value_name = "NAMESPACE",
        help_heading = "Kubernetes"
    )]
    pub namespace: Option<String>,
    /// User to impersonate for the operation.
    #[arg(
        long = "as",
        global = true,
        value_name = "USER",
        help_heading = "Kubernetes"
    )]
    pub as_user: Option<String>,
    /// Group to impersonate; repeat for several groups.
    #[arg(
        long = "as-group",
        global = true,
        value_name = "GROUP",
        help_heading = "Kubernetes"
    )]
    pub as_groups: Vec<String>,
    /// UID to impersonate.
    #[arg(
        long = "as-uid",
        global = true,
        value_name = "UID",
        help_heading = "Kubernetes"
    )]
    pub as_uid: Option<String>,
    /// How long to wait for one answer of the API server before giving up, e.g. 30s, 2m
    /// (0 = no limit, the default). Watches are not cut by it.
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        value_parser = parse_duration,
        help_heading = "Kubernetes"
    )]
    pub request_timeout: Option<Duration>,
}

/// `-A/--all-namespaces`, for the subcommands that list.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct AllNamespaces {
    /// List across every namespace (ignores -n).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// A connected client, the configuration it came from and the namespace the flags chose.
#[derive(Clone)]
pub struct Kube {
    /// The client, with the flags' identity (and impersonation) applied.
    pub client: Client,
    /// The configuration the client was built from (e.g. to talk to the same server as
    /// someone else: replace `auth_info`).
    pub config: Config,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

/// Why no client could be built from the flags and the kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig (or the in-cluster configuration) could not be read or used.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// The configuration was read but the client could not be built from it (e.g. TLS).
    #[error("kube client: {0}")]
    Client(#[from] kube::Error),
}

impl KubeFlags {
    /// The configuration kubectl would use with these flags.
    pub async fn config(&self) -> Result<Config, ClientError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        };
        let picks_from_kubeconfig =
            options.context.is_some() || options.cluster.is_some() || options.user.is_some();
        let loaded = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))
            }
            // A context, cluster or user names something in a kubeconfig: no in-cluster fallback.
            None if picks_from_kubeconfig => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| ClientError::Config(e.to_string())),
            None => Config::infer()
                .await
                .map_err(|e| ClientError::Config(e.to_string())),
        };
        let mut config = loaded?;
        self.apply_overrides(&mut config);
        Ok(config)
    }

    /// The client, its configuration and the namespace.
    pub async fn connect(&self) -> Result<Kube, ClientError> {
        let config = self.config().await?;
        let client = Client::try_from(config.clone())?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok(Kube {
            client,
            config,
            namespace,
        })
    }

    /// kubectl's precedence: a flag replaces the kubeconfig's value of that one field.
    fn apply_overrides(&self, config: &mut Config) {
        let auth = &mut config.auth_info;
        if let Some(user) = &self.as_user {
            auth.impersonate = Some(user.clone());
        }
        if !self.as_groups.is_empty() {
            auth.impersonate_groups = Some(self.as_groups.clone());
        }
        if let Some(uid) = &self.as_uid {
            auth.impersonate_uid = Some(uid.clone());
        }
        if let Some(timeout) = self.request_timeout.filter(|t| !t.is_zero()) {
            config.connect_timeout = Some(timeout);
            config.write_timeout = Some(timeout);
            // Not the read timeout: a watch waits on reads for as long as it lives.
        }
    }
}

/// A duration as kubectl's `--request-timeout` reads it: seconds, or a number with s, m or h.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{text:?}: expected e.g. 30s, 2m or 1h")),
    };
    let count: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 30s, 2m or 1h"))?;
    Ok(Duration::from_secs(count.saturating_mul(seconds_per_unit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectls_request_timeout() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "1d", "-1s", "1.5s", "1 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn impersonation_flags_replace_the_kubeconfigs_field_by_field() {
        let mut config = Config::new("https://127.0.0.1:6443".parse().expect("uri"));
        config.auth_info.impersonate = Some("from-kubeconfig".into());
        config.auth_info.impersonate_groups = Some(vec!["kubeconfig-group".into()]);

        let only_group = KubeFlags {
            as_groups: vec!["flag-group".into()],
            ..Default::default()
        };
        let mut kept_user = config.clone();
        only_group.apply_overrides(&mut kept_user);
        assert_eq!(
            kept_user.auth_info.impersonate.as_deref(),
            Some("from-kubeconfig")
        );
        assert_eq!(
            kept_user.auth_info.impersonate_groups,
            Some(vec!["flag-group".to_string()])
        );

        let only_user = KubeFlags {
            as_user: Some("alice".into()),
            ..Default::default()
        };
        only_user.apply_overrides(&mut config);
        assert_eq!(config.auth_info.impersonate.as_deref(), Some("alice"));
        assert_eq!(
            config.auth_info.impersonate_groups,
            Some(vec!["kubeconfig-group".to_string()])
        );
    }
}
