//! Relaying a native-protocol (`meridian/1`) request stream for a model this node does not
//! hold to the nearest peer that does: the OPEN frame goes on marked `forwarded_by` (a relayed
//! stream is never relayed again), then the bytes flow both ways as they come, so the caller
//! gets the peer's RESULT and ERROR frames (which name the peer in `served_by`) in order, with
//! the peer's flow control. One authenticated connection is kept per peer; it presents
//! `auth.peer_key` when auth is on (without one, streams are not relayed).

use meridian_gossip::Placement;

use super::Target;
use crate::client::{ClientOptions, NativeClient, Transport};
use crate::native::io::FrameReader;
use crate::native::server::Open;
use crate::node::NodeState;

/// The peer to relay `open` to, connected; `None` when this node should answer itself (it
/// holds the model, the stream was relayed already, no peer holds the model over QUIC, or no
/// peer could be reached).
pub async fn peer_for(state: &NodeState, open: &Open) -> Option<(String, NativeClient)> {
    if open.forwarded_by.is_some() || state.mesh.is_none() {
        return None;
    }
    if state.config.auth.enabled && state.config.auth.peer_key.is_none() {
        return None;
    }
    {
        let table = state.table.load();
        if table.models.contains_key(&open.model)
            || (table.has_catalog && !table.catalog.models.contains_key(&open.model))
        {
            return None;
        }
    }
    for target in super::targets(state, &open.model).await.iter().filter(|t| t.quic.is_some()).take(3) {
        match link(state, target).await {
            Ok(client) => return Some((target.id.clone(), client)),
            Err(e) => tracing::debug!(peer = %target.id, error = %e, "native relay: peer unreachable"),
        }
    }
    None
}

/// Whether `model` is on demand here (a caller should load it, then resolve again).
pub fn on_demand(state: &NodeState, model: &str) -> bool {
    let table = state.table.load();
    table.catalog.models.contains_key(model) && table.catalog.placement(model) == Placement::OnDemand
}

async fn link(state: &NodeState, target: &Target) -> Result<NativeClient, String> {
    let (Some(mesh), Some(addr)) = (&state.mesh, target.quic) else { return Err("no QUIC endpoint".into()) };
    if let Some(client) = mesh.native.lock().await.get(&addr) {
        return Ok(client.clone());
    }
    let options = ClientOptions {
        url: target.url.clone(),
        transport: Transport::Native,
        ca: state.config.ca_file.clone(),
        token: if state.config.auth.enabled { state.config.auth.peer_key.clone() } else { None },
        quic_addr: Some(addr),
        // The handshake and HELLO; a busy peer (or a debug build) may need more than a second.
        timeout: std::time::Duration::from_millis(state.config.request_timeout_ms.min(5_000)),
    };
    let client = NativeClient::connect(&options).await.map_err(|e| e.to_string())?;
    mesh.native.lock().await.insert(addr, client.clone());
    Ok(client)
}

/// Relay the rest of the caller's stream to `peer` and the peer's answers back.
pub async fn relay(
    state: &NodeState,
    mut open: Open,
    (peer, client): (String, NativeClient),
    reader: FrameReader<quinn::RecvStream>,
    mut send: quinn::SendStream,
) -> Result<(), String> {
    let (mut to_peer, mut from_peer) = match client.open_raw().await {
        Ok(pair) => pair,
        Err(e) => {
            if let (Some(mesh), Some(addr)) =
                (&state.mesh, super::targets(state, &open.model).await.first().and_then(|t| t.quic))
            {
                mesh.native.lock().await.remove(&addr);
            }
            return Err(format!("{peer}: {e}"));
        }
    };
    state.metrics.forwarded(&peer, "native", "answered");
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
    up.and(down).map_err(|e| format!("relay to {peer}: {e}"))
}
