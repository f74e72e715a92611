//! The driver's network tasks: accepting connections, reading datagrams and pull streams
//! from each connection, connecting to peers and pulling from them. Each reports to the core
//! task through one channel ([`Net`]); every wait has a timeout; failures are counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::mesh::codec::{MAX_PULL_REQUEST, MAX_PULL_RESPONSE};

/// What network tasks tell the core task.
pub(crate) enum Net {
    Datagram {
        from: SocketAddr,
        bytes: Bytes,
    },
    /// A peer's pull request; the answer goes back through `reply` (dropped: refused).
    Serve {
        from: SocketAddr,
        request: Vec<u8>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// A connection is up (accepted, or opened by us to `addr`).
    Connected {
        addr: SocketAddr,
        conn: Connection,
    },
    ConnectFailed {
        addr: SocketAddr,
    },
    PullDone {
        from: SocketAddr,
        id: u64,
        response: Option<Vec<u8>>,
    },
}

/// What the driver counts besides the core's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DriverCounters {
    /// Connections opened by us / accepted from peers.
    pub connects: u64,
    pub accepts: u64,
    /// Connections to peers that failed or timed out (a wrong certificate included).
    pub connect_failures: u64,
    /// Peers' handshakes refused or timed out (a wrong or missing certificate included).
    pub handshakes_refused: u64,
    /// Datagrams too large for the connection's current path MTU, dropped.
    pub datagrams_too_large: u64,
    /// Datagrams not sent: connection lost, or its connect failed, or too many queued.
    pub datagrams_unsent: u64,
    /// Datagrams dropped by the fault hook ([`super::MeshHandle::set_blocked`]), both ways.
    pub datagrams_blocked: u64,
    /// Pull streams of peers refused: oversized or slow request, blocked peer, no answer.
    pub pull_requests_refused: u64,
    /// Our pulls that failed on the network (reset, timeout, oversized answer, no connection).
    pub pulls_failed: u64,
}

/// The shared, atomic form of [`DriverCounters`].
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) connects: AtomicU64,
    pub(crate) accepts: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) datagrams_too_large: AtomicU64,
    pub(crate) datagrams_unsent: AtomicU64,
    pub(crate) datagrams_blocked: AtomicU64,
    pub(crate) pull_requests_refused: AtomicU64,
    pub(crate) pulls_failed: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DriverCounters {
        DriverCounters {
            connects: self.connects.load(Relaxed),
            accepts: self.accepts.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            handshakes_refused: self.handshakes_refused.load(Relaxed),
            datagrams_too_large: self.datagrams_too_large.load(Relaxed),
            datagrams_unsent: self.datagrams_unsent.load(Relaxed),
            datagrams_blocked: self.datagrams_blocked.load(Relaxed),
            pull_requests_refused: self.pull_requests_refused.load(Relaxed),
            pulls_failed: self.pulls_failed.load(Relaxed),
        }
    }
}

/// What every network task shares.
#[derive(Clone)]
pub(crate) struct NetCtx {
    pub(crate) tx: mpsc::Sender<Net>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) cancel: CancellationToken,
    pub(crate) connect_timeout: Duration,
    /// Bound on each stream operation of a pull, both sides.
    pub(crate) pull_timeout: Duration,
    pub(crate) server_name: Option<String>,
}

/// Accept peers' connections until cancelled; each handshake gets `connect_timeout`.
pub(crate) async fn accept_loop(endpoint: Endpoint, ctx: NetCtx) {
    loop {
        let incoming = tokio::select! {
            () = ctx.cancel.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match timeout(ctx.connect_timeout, incoming).await {
                Ok(Ok(conn)) => {
                    Stats::bump(&ctx.stats.accepts);
                    let _ = ctx.tx.send(Net::Connected { addr: conn.remote_address(), conn }).await;
                }
                Ok(Err(e)) => {
                    Stats::bump(&ctx.stats.handshakes_refused);
                    tracing::warn!(%remote, error = %e, "mesh: peer's handshake refused");
                }
                Err(_) => {
                    Stats::bump(&ctx.stats.handshakes_refused);
                    tracing::warn!(%remote, "mesh: peer's handshake timed out");
                }
            }
        });
    }
}

/// Open a connection to `addr` (bounded by `connect_timeout`) and report the outcome.
pub(crate) async fn connect(endpoint: Endpoint, addr: SocketAddr, ctx: NetCtx) {
    let name = ctx.server_name.clone().unwrap_or_else(|| addr.ip().to_string());
    let result = match endpoint.connect(addr, &name) {
        Ok(connecting) => match timeout(ctx.connect_timeout, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("handshake timed out".to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    let msg = match result {
        Ok(conn) => {
            Stats::bump(&ctx.stats.connects);
            Net::Connected { addr, conn }
        }
        Err(error) => {
            Stats::bump(&ctx.stats.connect_failures);
            tracing::debug!(%addr, %error, "mesh: connecting to peer failed");
            Net::ConnectFailed { addr }
        }
    };
    let _ = ctx.tx.send(msg).await;
}

/// Read a connection's datagrams and pull streams until it closes or the driver stops.
pub(crate) fn spawn_readers(conn: Connection, ctx: NetCtx) {
    let from = conn.remote_address();
    let (dconn, dctx) = (conn.clone(), ctx.clone());
    tokio::spawn(async move {
        loop {
            let bytes = tokio::select! {
                () = dctx.cancel.cancelled() => break,
                read = dconn.read_datagram() => match read {
                    Ok(bytes) => bytes,
                    Err(_) => break,
                },
            };
            if dctx.tx.send(Net::Datagram { from, bytes }).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let (send, recv) = tokio::select! {
                () = ctx.cancel.cancelled() => break,
                accepted = conn.accept_bi() => match accepted {
                    Ok(streams) => streams,
                    Err(_) => break,
                },
            };
            tokio::spawn(serve_stream(from, send, recv, ctx.clone()));
        }
    });
}

/// Answer one pull stream: read the request (≤ 64 KiB), ask the core, write its answer.
async fn serve_stream(from: SocketAddr, mut send: SendStream, mut recv: RecvStream, ctx: NetCtx) {
    let t = ctx.pull_timeout;
    let answered = async {
        let request = timeout(t, recv.read_to_end(MAX_PULL_REQUEST)).await.ok()?.ok()?;
        let (reply, answer) = oneshot::channel();
        ctx.tx.send(Net::Serve { from, request, reply }).await.ok()?;
        let response = timeout(t, answer).await.ok()?.ok()?;
        timeout(t, send.write_all(&response)).await.ok()?.ok()?;
        send.finish().ok()
    }
    .await;
    if answered.is_none() {
        Stats::bump(&ctx.stats.pull_requests_refused);
        let _ = send.reset(quinn::VarInt::from_u32(1));
        let _ = recv.stop(quinn::VarInt::from_u32(1));
        tracing::debug!(%from, "mesh: pull stream refused (oversized, slow, blocked or unanswered)");
    }
}

/// Pull from `conn`: write `request`, read the answer (≤ 64 MiB), each step bounded.
pub(crate) async fn pull(conn: Connection, id: u64, request: Vec<u8>, ctx: NetCtx) {
    let t = ctx.pull_timeout;
    let response = async {
        let (mut send, mut recv) = timeout(t, conn.open_bi()).await.ok()?.ok()?;
        timeout(t, send.write_all(&request)).await.ok()?.ok()?;
        send.finish().ok()?;
        timeout(t, recv.read_to_end(MAX_PULL_RESPONSE)).await.ok()?.ok()
    }
    .await;
    if response.is_none() {
        Stats::bump(&ctx.stats.pulls_failed);
    }
    let _ = ctx.tx.send(Net::PullDone { from: conn.remote_address(), id, response }).await;
}
