//! A loopback TCP proxy in front of kube-apiserver that a test can cut, to partition one
//! process (the operator or the verifier) from the API server while everything else keeps
//! talking to it. TLS passes through untouched: the API server's certificate names
//! 127.0.0.1, where the proxy listens, so clients still verify it.

use std::{net::SocketAddr, path::PathBuf};

use kube::config::Kubeconfig;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// A running proxy; stops (closing every connection) when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub address: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:<free port>` forwarding to the API server of KUBECONFIG.
    pub async fn to_api_server() -> Self {
        let upstream = api_server_address().await;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback binds");
        let address = listener.local_addr().expect("bound address");
        let (cut, cut_watch) = watch::channel(false);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let mut cut = cut_watch.clone();
                if *cut.borrow_and_update() {
                    // Partitioned: the connection closes at once, as if refused.
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    // Dropping both ends on a cut closes them: the client sees the API
                    // server go away mid-request or mid-watch.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self {
            address,
            cut,
            accept,
        }
    }

    /// Closes every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// A copy of `kubeconfig` (same credentials) whose server is this proxy, written to
    /// `target/test-logs/<name>.kubeconfig`.
    pub fn kubeconfig(&self, kubeconfig: &std::path::Path, name: &str) -> PathBuf {
        let mut config = Kubeconfig::read_from(kubeconfig).expect("kubeconfig is readable");
        for named in &mut config.clusters {
            if let Some(cluster) = named.cluster.as_mut() {
                cluster.server = Some(format!("https://{}", self.address));
            }
        }
        let path = super::cluster::test_logs_dir().join(format!("{name}.kubeconfig"));
        std::fs::write(
            &path,
            serde_saphyr::to_string(&config).expect("kubeconfig serializes"),
        )
        .expect("kubeconfig is written");
        path
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.accept.abort();
    }
}

/// host:port of the API server in KUBECONFIG (`https://127.0.0.1:<port>` locally).
async fn api_server_address() -> SocketAddr {
    let path = std::env::var("KUBECONFIG").expect("KUBECONFIG is set");
    let config = Kubeconfig::read_from(path).expect("KUBECONFIG is readable");
    let server = config
        .clusters
        .first()
        .and_then(|named| named.cluster.as_ref())
        .and_then(|cluster| cluster.server.clone())
        .expect("KUBECONFIG names a server");
    let authority = server
        .trim_start_matches("https://")
        .split('/')
        .next()
        .expect("a host")
        .to_string();
    tokio::net::lookup_host(&authority)
        .await
        .expect("the API server address resolves")
        .next()
        .expect("an address")
}
