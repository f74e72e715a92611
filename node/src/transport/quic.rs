//! The node's QUIC endpoint (UDP): HTTP/3 (ALPN `h3`) and the native protocol (ALPN
//! `meridian/1`) on one port, told apart by the ALPN the handshake settled on. A client offering
//! neither fails the TLS handshake (`no_application_protocol`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

use super::tls::{ServerTls, ALPN_H3, ALPN_NATIVE};
use crate::serve::AppState;

/// A QUIC handshake not finished within this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections to close after telling them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-connection limits: streams, flow-control windows (what a connection can make the node
/// buffer), idle timeout.
fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(256u32.into());
    t.max_concurrent_uni_streams(16u32.into());
    t.stream_receive_window((1u32 << 20).into());
    t.receive_window((8u32 << 20).into());
    t.send_window(8 << 20);
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))));
    t
}

pub fn bind(addr: SocketAddr, tls: &ServerTls) -> std::io::Result<quinn::Endpoint> {
    let mut config = quinn::ServerConfig::with_crypto(tls.quic.clone());
    config.transport_config(Arc::new(transport()));
    quinn::Endpoint::server(config, addr)
}

/// Accept connections until `shutdown`, then close the endpoint.
pub async fn serve(endpoint: quinn::Endpoint, state: AppState, router: Router, shutdown: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (state, router) = (state.clone(), router.clone());
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, async { incoming.accept()?.await }).await
            {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "QUIC handshake failed"),
                Err(_) => return tracing::debug!(%peer, "QUIC handshake timed out"),
            };
            let alpn = conn
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol);
            match alpn.as_deref() {
                Some(p) if p == ALPN_H3 => {
                    let max_header = state.config.max_body_bytes as u64;
                    super::h3::serve_connection(router, conn, max_header.min(64 * 1024)).await;
                }
                Some(p) if p == ALPN_NATIVE => crate::native::server::serve_connection(state, conn).await,
                _ => conn.close(0x0178u32.into(), b"no application protocol"),
            }
        });
    }
    endpoint.close(crate::native::code::SHUTTING_DOWN.into(), b"the node is shutting down");
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, endpoint.wait_idle()).await;
}
