//! Flags of `access-token-operator proxy` that are the proxy's own (the verifier's decision
//! flags and the probe flags are shared with the other subcommands).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, builder::TypedValueParser as _};

use crate::verifier::server::{Limits, Listen, TlsFiles};

/// Where and how the proxy listens.
#[derive(Args, Debug)]
pub struct ProxyFlags {
    /// Serve the proxy on this address.
    #[arg(long, env = "PROXY_BIND", default_value = "0.0.0.0:8443")]
    pub proxy_bind: SocketAddr,
    /// PEM certificate (chain) the proxy serves; re-read when it changes.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS; refused unless the bind address is loopback.
    #[arg(long, conflicts_with_all = ["tls_cert_file", "tls_key_file"])]
    pub insecure_http: bool,
    /// Client connections served at once; more wait to be accepted until one closes
    /// (upgraded streams such as exec no longer count once they switched protocols).
    #[arg(long, env = "PROXY_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub proxy_max_connections: usize,
    /// Seconds a client may take to complete the TLS handshake.
    #[arg(long, default_value_t = Limits::default().handshake_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub proxy_handshake_timeout_seconds: u64,
    /// Seconds a client may take to send an HTTP/1 request header (also how long an idle
    /// keep-alive connection may wait for its next request).
    #[arg(long, default_value_t = Limits::default().header_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub proxy_header_timeout_seconds: u64,
    /// Seconds a connection may move no bytes, with no response streaming, before it is
    /// closed (a quiet watch is never cut).
    #[arg(long, default_value_t = Limits::default().idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub proxy_idle_timeout_seconds: u64,
    /// Largest request body forwarded, in bytes.
    #[arg(long, env = "PROXY_MAX_BODY_BYTES", default_value_t = super::DEFAULT_MAX_BODY_BYTES)]
    pub proxy_max_body_bytes: usize,
}

impl ProxyFlags {
    /// The listen configuration, or why the flags do not make one.
    pub fn listen(&self) -> crate::Result<Listen> {
        let tls = match (&self.tls_cert_file, &self.tls_key_file, self.insecure_http) {
            (Some(cert), Some(key), false) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: None,
            }),
            (None, None, true) => None,
            _ => {
                return Err(crate::Error::Config(
                    "the proxy needs --tls-cert-file and --tls-key-file, or --insecure-http on a loopback address"
                        .to_string(),
                ));
            }
        };
        Ok(Listen {
            bind: self.proxy_bind,
            tls,
            limits: Limits {
                max_connections: self.proxy_max_connections,
                handshake_timeout: Duration::from_secs(self.proxy_handshake_timeout_seconds),
                header_timeout: Duration::from_secs(self.proxy_header_timeout_seconds),
                idle_timeout: Duration::from_secs(self.proxy_idle_timeout_seconds),
                // Its clients are people and CI jobs, often many behind one NAT address, and
                // their watches, logs and exec sessions last as long as they need.
                max_connections_per_peer: self.proxy_max_connections,
                reserved_for_authenticated: 0,
                max_connection_age: None,
            },
        })
    }
}
