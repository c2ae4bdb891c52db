//! The hardened accept loop every server of this process runs (the verifier, the
//! authenticating proxy, the probe and metrics port): no client may hold it. Connections
//! are capped (beyond the cap they wait in the listen backlog, unaccepted), each client
//! address gets at most a share of them and some are kept for addresses that have
//! authenticated before ([`peers`]), the TLS handshake, the request header and idle
//! connections time out (an HTTP/2 connection is idle when no request is in flight, whatever
//! frames move), connections end at a maximum age, HTTP/2 peers are pinged, HTTP/1 buffers
//! and HTTP/2 streams and header lists are bounded, TLS files are re-read when they change
//! (see [`tls`]), and a stop drains connections for a bounded time.

mod peers;
pub mod tls;

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, http::Request};
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
    service::Service as _,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use tls::{TlsError, TlsFiles};

/// How long in-flight requests may finish once the server stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest HTTP/1 read buffer, so the largest request header (kube-apiserver's own limit
/// is about as large).
const MAX_HTTP1_BUFFER: usize = 64 * 1024;
/// Concurrent HTTP/2 streams per connection (Go's server default).
const MAX_HTTP2_STREAMS: u32 = 100;
/// Largest HTTP/2 header list.
const MAX_HTTP2_HEADER_LIST: u32 = 16 * 1024;

/// How long a connection being closed may take to finish the requests in flight.
const CLOSE_GRACE: Duration = Duration::from_secs(11);
/// HTTP/2 peers are pinged this often, and closed when a ping goes unanswered this long.
const HTTP2_KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(10));

/// Whether changed TLS files were loaded.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReloadResult {
    /// The new certificate is served to new connections.
    Success,
    /// The files did not load; the previous certificate is still served.
    Failure,
}

/// Labels of a TLS reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// How it went.
    pub result: ReloadResult,
}

/// Where and how to listen.
#[derive(Clone, Debug)]
pub struct Listen {
    /// Address to bind.
    pub bind: SocketAddr,
    /// Certificate, key and optional client CA (PEM files) for TLS; `None` serves plain
    /// HTTP, allowed on loopback only.
    pub tls: Option<TlsFiles>,
    /// Connection cap and timeouts.
    pub limits: Limits,
}

/// What one client, or many, may hold of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Longest an HTTP/1 request header may take to arrive, counted from when the server
    /// starts waiting for it (so it also closes a keep-alive connection that sends nothing).
    pub header_timeout: Duration,
    /// A connection idle for this long is closed (gracefully: requests in flight finish).
    /// Idle: HTTP/1, no bytes read or written; HTTP/2, no request in flight (pings and
    /// window updates do not count).
    pub idle_timeout: Duration,
    /// Connections one client address may hold at once.
    pub max_connections_per_peer: usize,
    /// Of `max_connections`, how many are kept for addresses that have presented an
    /// accepted client certificate before (with a client CA only; without one, none).
    pub reserved_for_authenticated: usize,
    /// A connection is closed (gracefully) this long after it was accepted; `None`: never.
    pub max_connection_age: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections_per_peer: 256,
            reserved_for_authenticated: 256,
            max_connection_age: Some(Duration::from_secs(600)),
        }
    }
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Plain HTTP was asked for on a non-loopback address.
    #[error(
        "plain HTTP is only allowed on a loopback address, not {0}; give --tls-cert-file and --tls-key-file"
    )]
    PlainHttpNotLoopback(SocketAddr),
    /// The certificate, key or client CA could not be loaded.
    #[error("could not load TLS certificate, key or client CA: {0}")]
    Tls(#[from] TlsError),
    /// Binding or serving failed.
    #[error("server failed: {0}")]
    Io(std::io::Error),
}

impl From<ServeError> for crate::Error {
    fn from(error: ServeError) -> Self {
        Self::Verifier(Box::new(error))
    }
}

/// The hardened accept loop, for any server of this process that faces untrusted clients
/// (the verifier, the authenticating proxy): one implementation of the limits.
#[derive(Clone)]
pub struct Server {
    /// Names the server in log lines.
    pub name: &'static str,
    /// Connections held open (bounded by the connection cap).
    pub connections: Gauge,
    /// Reloads of the TLS files, by result.
    pub tls_reloads: Family<ReloadLabels, Counter>,
    /// Plain HTTP on any address (the probe port, which the kubelet and Prometheus reach
    /// over the pod network); otherwise plain HTTP is refused off loopback.
    pub plain_http_anywhere: bool,
}

/// What the accept loop tells each request about its connection (a request extension).
#[derive(Clone)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    activity: Arc<Activity>,
}

impl ConnectionInfo {
    /// Marks a long-lived response (a watch, a log stream) as in flight until the guard is
    /// dropped: the idle timeout never closes a connection while one is.
    pub fn stream_started(&self) -> InFlight {
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            activity: self.activity.clone(),
        }
    }
}

/// A response in flight on its connection (see [`ConnectionInfo::stream_started`]).
pub struct InFlight {
    activity: Arc<Activity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Server {
    /// Serves `app` until `shutdown` completes, then drains connections for up to 5 seconds.
    /// HTTP/1 connections may be upgraded (the upgraded stream is the service's to run).
    pub async fn serve(
        self,
        app: Router,
        listen: Listen,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        self.bind(listen).await?.serve(app, shutdown).await
    }

    /// Loads the TLS files and binds the address now (so a bad certificate or a port in use
    /// fails the start); [`Bound::serve`] then serves.
    pub async fn bind(self, listen: Listen) -> Result<Bound, ServeError> {
        let name = self.name;
        let tls = match &listen.tls {
            Some(files) => Some(tls::watch(files.clone(), self.tls_reloads.clone()).await?),
            None if !listen.bind.ip().is_loopback() && !self.plain_http_anywhere => {
                return Err(ServeError::PlainHttpNotLoopback(listen.bind));
            }
            None => None,
        };
        let listener = TcpListener::bind(listen.bind)
            .await
            .map_err(ServeError::Io)?;
        let address = listener.local_addr().map_err(ServeError::Io)?;
        match &listen.tls {
            Some(files) => {
                let client_certificates = files.client_ca.is_some();
                info!(%address, client_certificates, "{name} listening (TLS)");
            }
            None => info!(%address, "{name} listening (plain HTTP)"),
        }
        Ok(Bound {
            server: self,
            listener,
            listen,
            tls,
        })
    }
}

/// A server whose address is bound, ready to serve.
pub struct Bound {
    server: Server,
    listener: TcpListener,
    listen: Listen,
    tls: Option<watch::Receiver<Arc<rustls::ServerConfig>>>,
}

impl Bound {
    /// The bound address (port 0 asked for any free port: this one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `app` until `shutdown` completes, then drains connections for up to 5 seconds.
    pub async fn serve(
        self,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            server,
            listener,
            listen,
            tls,
        } = self;
        let connections = server.connections;
        let limits = listen.limits;
        let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(max));
        let (peers, client_auth) = peer_limits(&listen, max);
        let (stop, stopping) = watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            // A slot first, then accept: at the cap, new connections wait in the kernel's
            // backlog and cost this process nothing.
            let slot = tokio::select! {
                _ = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // E.g. out of file descriptors: pause rather than spin.
                        warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Refused: closed at once (the client sees the connection end), its slot free again.
            let held = match peers.admit(peer.ip()) {
                Ok(held) => held,
                Err(refusal) => {
                    debug!(%peer, ?refusal, "connection refused a slot");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let connection = Connection {
                slot: Slot::new(slot, &connections),
                held,
                client_auth,
                app: app.clone(),
                peer,
                limits,
                stopping: stopping.clone(),
            };
            let acceptor = tls
                .as_ref()
                .map(|configs| TlsAcceptor::from(configs.borrow().clone()));
            tokio::spawn(connection.run(stream, acceptor));
        }
        drop(listener);
        let _ = stop.send(true);
        // Every connection holds a slot until it ends: all slots back means all drained.
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all)).await;
        Ok(())
    }
}

/// The per-peer limits of `listen`'s `max` connections, and whether clients authenticate
/// with certificates (then some slots are reserved for them).
fn peer_limits(listen: &Listen, max: usize) -> (Arc<peers::Peers>, bool) {
    let limits = &listen.limits;
    let client_auth = listen.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let reserved = if client_auth {
        limits.reserved_for_authenticated
    } else {
        0
    };
    let peers = peers::Peers::new(max, limits.max_connections_per_peer, reserved);
    (peers, client_auth)
}

/// A connection slot, counted in the connections gauge while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, gauge: &Gauge) -> Self {
        gauge.inc();
        Self {
            _permit: permit,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// One accepted connection and what it needs to be served.
struct Connection {
    slot: Slot,
    /// Its client address's share of the slots.
    held: peers::Held,
    /// Whether a completed TLS handshake means an accepted client certificate.
    client_auth: bool,
    app: Router,
    peer: SocketAddr,
    limits: Limits,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, acceptor: Option<TlsAcceptor>) {
        let activity = Arc::new(Activity::new());
        let io = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        match acceptor {
            None => self.serve(io, false, &activity).await,
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(io)).await;
                match handshake {
                    Ok(Ok(stream)) => {
                        if self.client_auth {
                            self.held.authenticated();
                        }
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                        self.serve(stream, h2, &activity).await
                    }
                    // Includes clients without an acceptable certificate; the error text
                    // comes from rustls and holds no secrets.
                    Ok(Err(error)) => debug!(%error, "TLS handshake failed"),
                    Err(_) => debug!("TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve<I>(self, io: I, h2: bool, activity: &Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = TowerToHyperService::new(self.app.clone());
        let info = ConnectionInfo {
            peer: self.peer,
            activity: activity.clone(),
        };
        if h2 {
            // Frames that are no request (a client's pings) must not keep it from idling.
            activity.count_bytes.store(false, Ordering::Relaxed);
        }
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(info.clone());
            // In flight until its response is ready (a streamed body marks itself).
            let in_flight = info.stream_started();
            let response = app.call(request);
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        });
        let io = TokioIo::new(io);
        if h2 {
            let connection = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(HTTP2_KEEP_ALIVE.0)
                .keep_alive_timeout(HTTP2_KEEP_ALIVE.1)
                .max_concurrent_streams(MAX_HTTP2_STREAMS)
                .max_header_list_size(MAX_HTTP2_HEADER_LIST)
                .serve_connection(io, service);
            self.drive(connection, |c| c.graceful_shutdown(), activity)
                .await
        } else {
            // Upgrades (exec, attach, port-forward) end the connection here: hyper hands the
            // stream to the service, and the idle timeout no longer applies to it.
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.limits.header_timeout)
                .max_buf_size(MAX_HTTP1_BUFFER)
                .serve_connection(io, service)
                .with_upgrades();
            self.drive(connection, |c| c.graceful_shutdown(), activity)
                .await
        }
    }

    /// Runs the connection until it ends, goes idle for `idle_timeout` (with no stream in
    /// flight), reaches its maximum age, or the server stops; in the last three cases shuts
    /// it down gracefully, bounded by the request timeout.
    async fn drive<C: Future>(
        self,
        connection: C,
        graceful_shutdown: impl FnOnce(Pin<&mut C>),
        activity: &Activity,
    ) {
        let Self {
            slot: _slot,
            limits,
            mut stopping,
            ..
        } = self;
        let idle_or_stopping = async {
            loop {
                let idle = activity.idle_for();
                if idle >= limits.idle_timeout {
                    debug!("closing an idle connection");
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(limits.idle_timeout - idle) => {}
                    _ = stopping.wait_for(|stop| *stop) => return,
                }
            }
        };
        let aged = async {
            match limits.max_connection_age {
                Some(age) => tokio::time::sleep(age.saturating_sub(activity.start.elapsed())).await,
                None => std::future::pending().await,
            }
            debug!("closing a connection at its maximum age");
        };
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = idle_or_stopping => {}
            _ = aged => {}
        }
        graceful_shutdown(connection.as_mut());
        let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
    }
}

/// When a connection was last active, for the idle timeout.
struct Activity {
    start: Instant,
    last_millis: AtomicU64,
    /// Requests and long-lived responses in flight (see [`ConnectionInfo::stream_started`]).
    in_flight: AtomicUsize,
    /// Whether bytes moving count as activity (HTTP/1, and a TLS handshake); on HTTP/2 only
    /// requests do.
    count_bytes: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_millis: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            count_bytes: AtomicBool::new(true),
        }
    }

    fn moved_bytes(&self) {
        if self.count_bytes.load(Ordering::Relaxed) {
            self.touch();
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A stream that records in `activity` when bytes move, in either direction.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.moved_bytes();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved_bytes();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved_bytes();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
