//! `access-token-operator proxy`: the verifier's decision code in process, in front of
//! kube-apiserver.

use super::{
    cli::ProxyArgs,
    shutdown::shutdown_signal,
    verifier::{ProcessMetrics, serve_probes, start_verifier},
};
use crate::{
    observability::logging,
    proxy::{self, Proxy, ProxyMetrics},
};

pub(super) fn proxy_only(args: ProxyArgs) -> crate::Result<()> {
    logging::init(args.log_format);
    let listen = args.serve.listen()?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = kube::Client::try_default().await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "access-token-operator proxy starting"
        );
        let metrics = ProcessMetrics::new();
        let proxy_metrics = metrics.all.register(ProxyMetrics::register);
        let verifier = start_verifier(client, &args.verify, &metrics)?;
        let probes = serve_probes(&args.probe, &metrics.all, Some(verifier.clone())).await?;
        let upstream = proxy::upstream_client().await?;
        let proxy = Proxy::new(
            verifier,
            upstream,
            proxy_metrics,
            args.serve.proxy_max_body_bytes,
        );
        let served = proxy.serve(listen, shutdown_signal()).await;
        probes.abort();
        Ok(served?)
    })
}
