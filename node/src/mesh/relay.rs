//! Relaying a native-protocol (`meridian/1`) request stream for a model this node does not
//! hold to the nearest peer that does: the OPEN frame goes on marked `forwarded_by` (a relayed
//! stream is never relayed again), then the bytes flow both ways as they come, so the caller
//! gets the peer's RESULT and ERROR frames (which name the peer in `served_by`) in order, with
//! the peer's flow control. One authenticated connection is kept per peer; it presents
//! `auth.peer_key` when auth is on (without one, streams are not relayed).

use std::net::SocketAddr;

use super::Target;
use crate::client::{ClientOptions, NativeClient, Transport};
use crate::native::io::FrameReader;
use crate::native::server::Open;
use crate::node::NodeState;

/// A peer a stream is relayed to, connected.
pub struct Peer {
    id: String,
    addr: SocketAddr,
    client: NativeClient,
}

/// The peer to relay `open` to, connected; `None` when this node should answer itself (it
/// holds the model, the stream was relayed already, no peer holds the model over QUIC, or no
/// peer could be reached).
pub async fn peer_for(state: &NodeState, open: &Open) -> Option<Peer> {
    let mesh = state.mesh.as_ref()?;
    if open.forwarded_by.is_some() || !super::wants_peer(state, &open.model) {
        return None;
    }
    if state.config.auth.enabled && state.config.auth.peer_key.is_none() {
        return None;
    }
    for target in super::targets(state, &open.model).await.iter().take(super::forward::MAX_TRIES) {
        let Some(addr) = target.quic else { continue };
        match mesh.native.get(addr, super::connect_timeout(state), connect(state, target, addr)).await {
            Ok(client) => return Some(Peer { id: target.id.clone(), addr, client }),
            Err(e) => tracing::debug!(peer = %target.id, error = %e, "native relay: peer unreachable"),
        }
    }
    None
}

async fn connect(state: &NodeState, target: &Target, addr: SocketAddr) -> Result<NativeClient, String> {
    let options = ClientOptions {
        url: target.url.clone(),
        transport: Transport::Native,
        ca: state.config.ca_file.clone(),
        token: if state.config.auth.enabled { state.config.auth.peer_key.clone() } else { None },
        quic_addr: Some(addr),
        timeout: super::connect_timeout(state),
    };
    NativeClient::connect(&options).await.map_err(|e| e.to_string())
}

/// Relay the rest of the caller's stream to `peer` and the peer's answers back.
pub async fn relay(
    state: &NodeState,
    mut open: Open,
    peer: Peer,
    reader: FrameReader<quinn::RecvStream>,
    mut send: quinn::SendStream,
) -> Result<(), String> {
    let (mut to_peer, mut from_peer) = match peer.client.open_raw().await {
        Ok(pair) => pair,
        Err(e) => {
            if let Some(mesh) = &state.mesh {
                mesh.native.forget(peer.addr).await;
            }
            state.metrics.forwarded(&peer.id, "native", "failed");
            return Err(format!("{}: {e}", peer.id));
        }
    };
    state.metrics.forwarded(&peer.id, "native", "answered");
    open.forwarded_by = Some(state.config.id.clone());
    let payload = serde_json::to_vec(&open).map_err(|e| e.to_string())?;
    let (mut recv, buffered) = reader.into_parts();
    let up = async {
        to_peer.write_all(&crate::native::frame::encode(crate::native::frame::Kind::Open, &payload)).await?;
        to_peer.write_all(&buffered).await?;
        tokio::io::copy(&mut recv, &mut to_peer).await?;
        let _ = to_peer.finish();
        Ok::<_, std::io::Error>(())
    };
    let down = async {
        tokio::io::copy(&mut from_peer, &mut send).await?;
        let _ = send.finish();
        Ok::<_, std::io::Error>(())
    };
    let (up, down) = tokio::join!(up, down);
    up.and(down).map_err(|e| format!("relay to {}: {e}", peer.id))
}
