//! HTTP/1.1 and HTTP/2 on TCP, over TLS 1.3 (rustls) or plaintext for development, in front
//! of the axum router. Handshakes, request headers and idle request bodies are bounded in
//! time, open connections in number; shutdown drains in-flight requests.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A TLS handshake not finished within this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one TCP listener allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open at once; the listener stops accepting while this many are open.
    pub max_connections: usize,
    /// An HTTP/1.1 request's headers must arrive within this, and an idle keep-alive
    /// connection is closed after it.
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long is cut off (the handler reading it
    /// answers 400).
    pub body_idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Whether a plaintext connection opens with HTTP/2's preface (prior knowledge), looking at its
/// first bytes without consuming them; `None` when it sends too little within `within`.
async fn sniff_h2(tcp: &tokio::net::TcpStream, within: Duration) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let look = async {
        let mut buf = [0u8; 24];
        loop {
            let n = tcp.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != PREFACE[..n] {
                return Some(false);
            }
            if n == PREFACE.len() {
                return Some(true);
            }
            // A prefix of the preface so far: look again soon (rarely more than once).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(within, look).await.ok().flatten()
}

/// Requests being answered (until their response body is done), so shutdown can wait for them
/// rather than for connections: hyper keeps an idle HTTP/1.1 connection whose header timer
/// runs open through a graceful shutdown until that timer fires.
#[derive(Default)]
struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

struct Answering(Arc<InFlight>);

impl InFlight {
    fn enter(self: &Arc<Self>) -> Answering {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Answering(self.clone())
    }

    async fn drained(&self) {
        loop {
            let notified = self.done.notified();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

type HttpRequest = axum::http::Request<axum::body::Body>;

/// `router` with every request counted in `inflight` until its response body ends.
fn counted(
    router: Router,
    inflight: Arc<InFlight>,
) -> impl tower::Service<
    HttpRequest,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
       + Send {
    tower::service_fn(move |req: HttpRequest| {
        let answering = inflight.enter();
        let router = router.clone();
        async move {
            let resp = tower::ServiceExt::oneshot(router, req).await?;
            Ok(resp.map(|body| {
                axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                    let _answering = &answering;
                    frame
                }))
            }))
        }
    })
}

/// Serve `router` on `listener` (over TLS 1.3 when `tls` is set) until `shutdown`, within
/// `limits`; then wait for the requests being answered, at most [`DRAIN_TIMEOUT`], and close
/// every connection.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let inflight = Arc::new(InFlight::default());
    let service = tower::ServiceBuilder::new()
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_idle_timeout))
        .map_request(|req: axum::http::Request<_>| req.map(axum::body::Body::new))
        .service(counted(router, inflight.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    // Pings find HTTP/2 peers that vanished; an idle but live one stays (see operations.md).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, service, watcher, builder) =
            (acceptor.clone(), service.clone(), graceful.watcher(), builder.clone());
        connections.spawn(async move {
            let _permit = permit;
            let service = TowerToHyperService::new(service);
            let served = match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    // ALPN chose the protocol: `serve_connection` (not `_with_upgrades`, which sniffs
                    // the first bytes without a time limit) honours http1_only / http2_only, and
                    // HTTP/1.1's header timeout runs from the first byte.
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    watcher.watch(conn.into_owned()).await
                }
                None => {
                    let Some(h2) = sniff_h2(&tcp, limits.header_timeout).await else {
                        return tracing::debug!(%peer, "no request within the header timeout");
                    };
                    let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    close(graceful, &inflight, connections).await;
    Ok(())
}

/// Shutdown: connections finish the request they are answering and take no more; once those
/// are answered (at most [`DRAIN_TIMEOUT`]) and a moment later, every connection is closed.
async fn close(
    graceful: hyper_util::server::graceful::GracefulShutdown,
    inflight: &InFlight,
    mut connections: tokio::task::JoinSet<()>,
) {
    let signalled = tokio::spawn(graceful.shutdown());
    if tokio::time::timeout(DRAIN_TIMEOUT, inflight.drained()).await.is_err() {
        tracing::warn!("requests still running after the drain timeout; closing their connections");
    }
    // The last answers' bytes may still be on their way out (HTTP/2 sends from its own task):
    // a moment for connections to end on their own before the rest are closed.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    signalled.abort();
    connections.shutdown().await;
}
