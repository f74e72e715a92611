//! The node's mesh loops. Each ends at shutdown; none holds a lock across an await.
//!
//! - [`follow`]: adopt the persisted catalog, then every catalog the mesh verifies (and
//!   retry models that failed to load).
//! - [`publish_control`]: long-poll control for signed catalogs and publish them into the mesh
//!   (any node with `control_url` does; the mesh keeps the newest epoch).
//! - [`publish_info`]: gossip this node's info when it changes and every `info_refresh_ms`.
//! - [`watch_members`]: log membership changes.
//! - [`drain`] and [`leave_on_shutdown`]: leaving gracefully.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meridian_gossip::mesh::{Event, Rejection};
use meridian_gossip::NodeInfo;

use crate::node::NodeState;
use crate::sync::adopt;
use crate::sync::control::ControlClient;

async fn sleep_or_shutdown(state: &NodeState, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = state.shutdown.cancelled() => true,
    }
}

/// First retry of a catalog whose models did not all load (e.g. no peer had an artifact yet),
/// doubling to 5 s.
const RETRY_FIRST: Duration = Duration::from_millis(50);

/// Adopt each catalog the mesh verifies. A table with models that failed to load is retried
/// with a growing delay.
pub async fn follow(state: Arc<NodeState>) {
    crate::sync::adopt_persisted(&state).await;
    let Some(mesh) = &state.mesh else { return };
    let mut rx = mesh.handle.watch_catalog();
    let control = ControlClient::of_node(&state);
    let mut backoff = RETRY_FIRST;
    loop {
        let offered = rx.borrow_and_update().clone();
        if let Some(adopted) = offered {
            let table = state.table.load();
            let epoch = adopted.signed.catalog.epoch;
            let newer = epoch > table.catalog.epoch || !table.has_catalog;
            let retry = epoch == table.catalog.epoch && !table.ready();
            drop(table);
            if newer || retry {
                adopt::adopt(&state, adopted.signed.catalog.clone(), control.as_ref()).await;
            }
        }
        let ready = state.table.load().ready();
        let wake = if ready {
            backoff = RETRY_FIRST;
            tokio::select! {
                r = rx.changed() => r.map(|()| true),
                _ = state.shutdown.cancelled() => Ok(false),
            }
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            tokio::select! {
                r = rx.changed() => r.map(|()| true),
                _ = tokio::time::sleep(wait) => Ok(true),
                _ = state.shutdown.cancelled() => Ok(false),
            }
        };
        match wake {
            Ok(true) => {}
            Ok(false) => return,
            // The driver stopped (the node was drained and left): keep the catalog, and its key
            // revocations, current through control when there is one.
            Err(_) => {
                tracing::info!("left the mesh: following control directly");
                crate::sync::follow_control(&state).await;
                return;
            }
        }
    }
}

/// Long-poll control for signed catalogs and publish each newer one into the mesh.
pub async fn publish_control(state: Arc<NodeState>) {
    let (Some(mesh), Some(client)) = (&state.mesh, ControlClient::of_node(&state)) else { return };
    let mut backoff = Duration::from_millis(200);
    loop {
        let have = mesh.handle.catalog().map(|c| c.signed.catalog.epoch).unwrap_or(0);
        let poll = client.signed_catalog(have, state.config.catalog_wait_ms);
        let result = tokio::select! {
            r = poll => r,
            _ = state.shutdown.cancelled() => return,
        };
        match result {
            Ok(signed) if signed.catalog.epoch > have => {
                backoff = Duration::from_millis(200);
                let epoch = signed.catalog.epoch;
                match mesh.handle.publish_catalog(signed).await {
                    Ok(_) => tracing::info!(epoch, "published control's catalog into the mesh"),
                    Err(meridian_gossip::driver::MeshError::Rejected(Rejection::Stale { .. })) => {}
                    Err(meridian_gossip::driver::MeshError::Stopped) => return,
                    Err(e) => {
                        // A signature the mesh refuses: control's key is not in mesh.control_keys.
                        tracing::error!(epoch, error = %e, "control's catalog was refused by the mesh");
                        if sleep_or_shutdown(&state, Duration::from_secs(5)).await {
                            return;
                        }
                    }
                }
            }
            Ok(_) => backoff = Duration::from_millis(200),
            Err(e) => {
                tracing::debug!(error = %e, "signed catalog poll failed");
                if sleep_or_shutdown(&state, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Gossip this node's info when it changes (checked every 100 ms; the queue depth alone does
/// not count) and, when `mesh.info_refresh_ms` is set, that often.
pub async fn publish_info(state: Arc<NodeState>) {
    let Some(mesh) = &state.mesh else { return };
    let refresh = match state.config.mesh.info_refresh_ms {
        0 => Duration::MAX,
        ms => Duration::from_millis(ms),
    };
    // What was last published, less the queue depth (which alone is no change), and when.
    let mut last: Option<(NodeInfo, tokio::time::Instant)> = None;
    loop {
        let info = crate::sync::node_info(&state);
        let unqueued = NodeInfo { queued: 0, ..info.clone() };
        let due = last.as_ref().is_none_or(|(seen, at)| *seen != unqueued || at.elapsed() >= refresh);
        if due {
            if mesh.handle.set_local_info(info).await.is_err() {
                return; // the driver stopped (left the mesh)
            }
            last = Some((unqueued, tokio::time::Instant::now()));
        }
        if sleep_or_shutdown(&state, Duration::from_millis(100)).await {
            return;
        }
    }
}

/// Log membership changes and rejected state as they happen.
pub async fn watch_members(state: Arc<NodeState>) {
    let Some(mesh) = &state.mesh else { return };
    let mut events = mesh.handle.subscribe();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = state.shutdown.cancelled() => return,
        };
        match event {
            Ok(Event::MemberUp(id)) => {
                tracing::info!(node = id.node(), region = id.region(), "mesh: member up")
            }
            Ok(Event::MemberDown(id)) => tracing::warn!(node = id.node(), "mesh: member down"),
            Ok(Event::MemberSuspect(id)) => tracing::info!(node = id.node(), "mesh: member suspect"),
            Ok(Event::Disconnected) => tracing::warn!("mesh: no live peers"),
            Ok(Event::Rejoined(id)) => {
                tracing::warn!(generation = id.generation(), "mesh: rejoined after being declared down")
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(n, "mesh events lagged")
            }
            Err(_) => return,
        }
    }
}

/// Stop taking new traffic: publish `draining`, let requests already routed here finish for
/// `mesh.drain_grace_ms`, then leave the mesh. Idempotent.
pub async fn drain(state: Arc<NodeState>) {
    if state.draining.swap(true, Ordering::SeqCst) {
        return;
    }
    tracing::warn!(grace_ms = state.config.mesh.drain_grace_ms, "draining: no new traffic, leaving the mesh");
    let Some(mesh) = &state.mesh else { return };
    let _ = mesh.handle.set_local_info(crate::sync::node_info(&state)).await;
    if !sleep_or_shutdown(&state, Duration::from_millis(state.config.mesh.drain_grace_ms)).await {
        let members = mesh.handle.members().await.unwrap_or_default();
        if let Ok(mut parting) = mesh.parting.lock() {
            *parting = Some(members);
        }
        mesh.handle.leave().await;
        tracing::warn!("drained: left the mesh");
    }
}

/// Leave the mesh gracefully as soon as shutdown begins, so peers route elsewhere while the
/// front doors drain.
pub async fn leave_on_shutdown(state: Arc<NodeState>) {
    let Some(mesh) = &state.mesh else { return };
    state.shutdown.cancelled().await;
    mesh.handle.leave().await;
}
