//! HTTP(S) front of the verifier: `POST /tokenreviews` (also `/`) speaking the Kubernetes
//! webhook token authentication protocol (`authentication.k8s.io/v1` TokenReview), plus
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! It sits on kube-apiserver's login path, so no client may hold it: connections are capped
//! (beyond the cap they wait in the listen backlog, unaccepted), the TLS handshake, the
//! request header and idle connections time out, request bodies are bounded and requests
//! time out. Optionally only clients with a certificate from a given CA are served, and the
//! certificate files are re-read when they change (see [`tls`]).

pub mod tls;

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hyper::server::conn::{http1, http2};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
    service::TowerToHyperService,
};
use k8s_openapi::api::authentication::v1::{
    TokenReview, TokenReviewSpec, TokenReviewStatus, UserInfo,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

use super::{Verdict, Verifier};
use prometheus_client::metrics::gauge::Gauge;
pub use tls::{TlsError, TlsFiles};

/// Largest request body accepted; a TokenReview is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest a request may take end to end.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may finish once the server stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest HTTP/1 read buffer, so the largest request header: a TokenReview needs little.
const MAX_HTTP1_BUFFER: usize = 64 * 1024;
/// Concurrent HTTP/2 streams per connection (Go's server default).
const MAX_HTTP2_STREAMS: u32 = 100;
/// Largest HTTP/2 header list.
const MAX_HTTP2_HEADER_LIST: u32 = 16 * 1024;

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
    /// A connection with no bytes read or written for this long is closed (gracefully:
    /// requests in flight finish).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
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
    #[error("verifier server failed: {0}")]
    Io(std::io::Error),
}

impl From<ServeError> for crate::Error {
    fn from(error: ServeError) -> Self {
        Self::Verifier(Box::new(error))
    }
}

/// The verifier's routes.
pub fn router(verifier: Arc<Verifier>) -> Router {
    Router::new()
        .route("/tokenreviews", post(token_review))
        .route("/", post(token_review))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(verifier)
}

/// Serves until `shutdown` completes, then drains connections for up to 5 seconds.
pub async fn serve(
    verifier: Arc<Verifier>,
    listen: Listen,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let connections = verifier.metrics().verifier_connections.clone();
    let tls = match listen.tls {
        Some(files) => {
            let client_ca = files.client_ca.is_some();
            let configs = tls::watch(files, verifier.metrics().tls_reloads.clone()).await?;
            info!(address = %listen.bind, client_certificates = client_ca, "verifier listening (TLS)");
            Some(configs)
        }
        None => {
            if !listen.bind.ip().is_loopback() {
                return Err(ServeError::PlainHttpNotLoopback(listen.bind));
            }
            info!(address = %listen.bind, "verifier listening (plain HTTP, loopback only)");
            None
        }
    };
    let listener = TcpListener::bind(listen.bind)
        .await
        .map_err(ServeError::Io)?;
    let limits = listen.limits;
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (stop, stopping) = watch::channel(false);
    let app = router(verifier);
    tokio::pin!(shutdown);
    loop {
        // A slot first, then accept: at the cap, new connections wait in the kernel's
        // backlog and cost this process nothing.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, _peer) = tokio::select! {
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
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            slot: Slot::new(slot, &connections),
            app: app.clone(),
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
    app: Router,
    limits: Limits,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, stream: TcpStream, acceptor: Option<TlsAcceptor>) {
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

    async fn serve<I>(self, io: I, h2: bool, activity: &Activity)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(self.app.clone());
        let io = TokioIo::new(io);
        if h2 {
            let connection = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_HTTP2_STREAMS)
                .max_header_list_size(MAX_HTTP2_HEADER_LIST)
                .serve_connection(io, service);
            self.drive(connection, activity).await
        } else {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.limits.header_timeout)
                .max_buf_size(MAX_HTTP1_BUFFER)
                .serve_connection(io, service);
            self.drive(connection, activity).await
        }
    }

    /// Runs the connection until it ends, goes idle for `idle_timeout`, or the server stops;
    /// in the last two cases shuts it down gracefully, bounded by the request timeout.
    async fn drive<C: GracefulConnection>(self, connection: C, activity: &Activity) {
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
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = idle_or_stopping => {}
        }
        connection.as_mut().graceful_shutdown();
        let grace = REQUEST_TIMEOUT + Duration::from_secs(1);
        let _ = tokio::time::timeout(grace, connection).await;
    }
}

/// When a connection last moved a byte, for the idle timeout.
struct Activity {
    start: Instant,
    last_millis: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_millis: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
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
            self.activity.touch();
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
            self.activity.touch();
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
            self.activity.touch();
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

async fn metrics(State(verifier): State<Arc<Verifier>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        verifier.process_metrics().encode(),
    )
        .into_response()
}

/// The same liveness as the probe port's (controllers in this process making progress).
async fn healthz(State(verifier): State<Arc<Verifier>>) -> Response {
    match verifier
        .process_metrics()
        .progress
        .stalled(std::time::Instant::now())
    {
        None => "ok".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn ready(State(verifier): State<Arc<Verifier>>) -> Response {
    if verifier.is_ready() {
        "ok".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced, or a watch failing for longer than the maximum staleness",
        )
            .into_response()
    }
}

/// Why a TokenReview request body was refused before any token check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body is not JSON of an `authentication.k8s.io/v1` TokenReview.
    NotATokenReview,
    /// The TokenReview has no `spec.token`, or an empty one.
    NoToken,
}

impl BodyError {
    /// The fixed text answered with 400: never the parse error, which could quote the
    /// body, and the body holds a token.
    pub fn message(self) -> &'static str {
        match self {
            BodyError::NotATokenReview => "the body is not an authentication.k8s.io/v1 TokenReview",
            BodyError::NoToken => "spec.token is required",
        }
    }
}

/// The presented token of a TokenReview request body. Pure (no I/O, no verifier), so the
/// decoder can be fuzzed on its own (`make fuzz`).
///
/// The whole body must be valid JSON: decoding straight into `TokenReview` would skip
/// unknown fields without checking their UTF-8 or escapes (found by the fuzz target), and
/// a body that is not JSON is refused rather than half read.
pub fn presented_token(body: &[u8]) -> Result<String, BodyError> {
    let document = serde_json::from_slice::<serde_json::Value>(body)
        .map_err(|_| BodyError::NotATokenReview)?;
    let review =
        serde_json::from_value::<TokenReview>(document).map_err(|_| BodyError::NotATokenReview)?;
    let token = review.spec.token;
    if token.is_empty() {
        return Err(BodyError::NoToken);
    }
    Ok(token)
}

async fn token_review(State(verifier): State<Arc<Verifier>>, body: Bytes) -> Response {
    let token = match presented_token(&body) {
        Ok(token) => token,
        Err(refused) => return bad_request(refused.message()),
    };
    let status = match verifier.review(&token).await {
        Verdict::Authenticated(identity) => {
            debug!(username = %identity.username, "token accepted");
            TokenReviewStatus {
                authenticated: Some(true),
                user: Some(UserInfo {
                    username: Some(identity.username),
                    uid: Some(identity.uid),
                    groups: Some(identity.groups),
                    extra: Some(identity.extra),
                }),
                ..Default::default()
            }
        }
        Verdict::Denied(denial) => {
            debug!(reason = denial.as_str(), "token denied");
            TokenReviewStatus {
                authenticated: Some(false),
                ..Default::default()
            }
        }
        Verdict::Unavailable(why) => TokenReviewStatus {
            authenticated: Some(false),
            error: Some(why.to_string()),
            ..Default::default()
        },
    };
    let answer = TokenReview {
        metadata: Default::default(),
        spec: TokenReviewSpec::default(), // never echo the token back
        status: Some(status),
    };
    axum::Json(answer).into_response()
}

fn bad_request(message: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::{BodyError, presented_token};

    #[test]
    fn the_decoder_takes_the_token_from_a_token_review() {
        let body = br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"atk_x"}}"#;
        assert_eq!(presented_token(body), Ok("atk_x".to_owned()));
    }

    #[test]
    fn the_decoder_refuses_bodies_without_a_token_and_never_quotes_them() {
        let no_token =
            br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{}}"#;
        assert_eq!(presented_token(no_token), Err(BodyError::NoToken));
        let empty = br#"{"spec":{"token":""}}"#;
        assert_eq!(presented_token(empty), Err(BodyError::NoToken));
        let not_json = b"atk_secretvalue_in_a_broken_body";
        let refused = presented_token(not_json).unwrap_err();
        assert_eq!(refused, BodyError::NotATokenReview);
        assert!(!refused.message().contains("secretvalue"));
        // Not JSON, though the token field itself is fine: invalid UTF-8 and a lone
        // surrogate escape in fields a TokenReview does not have.
        let bad_utf8 = b"{\"spec\":{\"token\":\"atk_x\",\"other\":\"\xff\"}}";
        assert_eq!(presented_token(bad_utf8), Err(BodyError::NotATokenReview));
        let bad_escape = br#"{"spec":{"token":"atk_x"},"extra":"\ud800"}"#;
        assert_eq!(presented_token(bad_escape), Err(BodyError::NotATokenReview));
        let wrong_type = br#"{"spec":{"token":42}}"#;
        assert_eq!(presented_token(wrong_type), Err(BodyError::NotATokenReview));
    }
}
