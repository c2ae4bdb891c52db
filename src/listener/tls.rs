//! A server's TLS configuration (the verifier's, the proxy's), built from PEM files and rebuilt when they change, so a
//! renewed certificate (cert-manager, a rotated Secret volume) is served to new connections
//! without a restart. A file that does not load is logged and the previous configuration kept.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::sync::watch;
use tracing::{info, warn};

use prometheus_client::metrics::{counter::Counter, family::Family};

use super::{ReloadLabels, ReloadResult};

/// How often the files are read again to notice a change.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The PEM files the TLS configuration is built from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf certificate.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS configuration could not be built. Never quotes file contents (the key).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path} holds no usable PEM {what}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected in it.
        what: &'static str,
        /// The parser's reason (never the content).
        reason: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// File contents as last read, to notice a change.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

async fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

impl Contents {
    async fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read(&files.cert).await?,
            key: read(&files.key).await?,
            client_ca: match &files.client_ca {
                Some(path) => Some(read(path).await?),
                None => None,
            },
        })
    }
}

fn pem_error(path: &Path, what: &'static str, reason: impl ToString) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        what,
        reason: reason.to_string(),
    }
}

/// Builds the rustls configuration: HTTP/2 and HTTP/1.1 by ALPN, and client certificate
/// verification against the client CA when one is given.
fn build(files: &TlsFiles, contents: &Contents) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&contents.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&files.cert, "certificate", e))?;
    if chain.is_empty() {
        return Err(pem_error(
            &files.cert,
            "certificate",
            "no CERTIFICATE block",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&contents.key)
        .map_err(|e| pem_error(&files.key, "private key", e))?;
    let builder = ServerConfig::builder();
    let builder = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(pem) {
                let ca = ca.map_err(|e| pem_error(path, "CA certificate", e))?;
                roots
                    .add(ca)
                    .map_err(|e| pem_error(path, "CA certificate", e))?;
            }
            if roots.is_empty() {
                return Err(pem_error(path, "CA certificate", "no CERTIFICATE block"));
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    // with_single_cert also checks that the key belongs to the certificate.
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Loads the configuration once (an error here stops the server from starting), then
/// re-reads the files every `RELOAD_INTERVAL` and publishes a new configuration when their
/// contents changed and load. Stops when every receiver is gone.
pub async fn watch(
    files: TlsFiles,
    reloads: Family<ReloadLabels, Counter>,
) -> Result<watch::Receiver<Arc<ServerConfig>>, TlsError> {
    let mut seen = Contents::read(&files).await?;
    let config = build(&files, &seen)?;
    let (sender, receiver) = watch::channel(Arc::new(config));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sender.closed() => return,
                _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
            }
            let now = match Contents::read(&files).await {
                Ok(now) => now,
                Err(error) => {
                    // E.g. a Secret volume between two symlink swaps: try again next time.
                    warn!(%error, "TLS files unreadable; keeping the current certificate");
                    continue;
                }
            };
            if now == seen {
                continue;
            }
            // Remember what was tried, so a bad file is reported once, not every poll; a
            // half-written pair (new certificate, old key) loads once the key follows.
            let result = build(&files, &now);
            seen = now;
            match result {
                Ok(config) => {
                    info!(cert = %files.cert.display(), "TLS certificate files changed; serving the new certificate to new connections");
                    count(&reloads, ReloadResult::Success);
                    let _ = sender.send(Arc::new(config));
                }
                Err(error) => {
                    warn!(%error, "TLS files changed but do not load; keeping the current certificate");
                    count(&reloads, ReloadResult::Failure);
                }
            }
        }
    });
    Ok(receiver)
}

fn count(reloads: &Family<ReloadLabels, Counter>, result: ReloadResult) {
    reloads.get_or_create(&ReloadLabels { result }).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> TlsFiles {
        TlsFiles {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
            client_ca: None,
        }
    }

    #[test]
    fn garbage_is_refused_without_quoting_it() {
        let contents = Contents {
            cert: b"-----BEGIN CERTIFICATE-----\nc2VjcmV0\n-----END CERTIFICATE-----\n".to_vec(),
            key: b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n".to_vec(),
            client_ca: None,
        };
        let error = build(&files(), &contents).unwrap_err().to_string();
        assert!(!error.contains("c2VjcmV0"), "{error}");
        let empty = Contents {
            cert: Vec::new(),
            key: Vec::new(),
            client_ca: None,
        };
        assert!(matches!(build(&files(), &empty), Err(TlsError::Pem { .. })));
    }
}
