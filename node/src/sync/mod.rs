//! Keeping the node's models in step with control's catalog. Network (control's API) and
//! disk (the local store).
//!
//! - [`store`]: the persisted catalog and artifacts under the data directory.
//! - [`control`]: the client for control's catalog, artifact and heartbeat endpoints.
//! - [`report`]: latency reports to control, buffered while it is down.
//! - [`adopt`]: turning a catalog into a serving table: fetch, verify, load, warm, swap.
//!
//! At start the node adopts its persisted catalog (so it serves with control down), then
//! long-polls control and adopts each newer epoch.

pub mod adopt;
pub mod control;
pub mod report;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use meridian_gossip::{LoadedModel as LoadedInfo, NodeInfo};

use crate::node::NodeState;
use control::ControlClient;

/// Adopt the catalog persisted by the last run, so the node serves before control or the
/// mesh answer.
pub async fn adopt_persisted(state: &NodeState) {
    match state.store.load_catalog() {
        Ok(Some(catalog)) => {
            tracing::info!(epoch = catalog.epoch, "serving the persisted catalog");
            adopt::adopt(state, catalog, None).await;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "the persisted catalog is unreadable; waiting for control")
        }
    }
}

/// Follow control's catalog until shutdown (a node without the mesh; a node in the mesh runs
/// [`crate::mesh::tasks::follow`] instead).
pub async fn follow(state: Arc<NodeState>) {
    adopt_persisted(&state).await;
    follow_control(&state).await;
}

/// Long-poll control's catalog and adopt each newer epoch, until shutdown (nothing without
/// `control_url`).
pub async fn follow_control(state: &Arc<NodeState>) {
    let Some(client) = ControlClient::of_node(state) else { return };
    let mut backoff = Duration::from_millis(200);
    loop {
        let table = state.table.load();
        // A node without a catalog, or with a model that failed to load, asks for the current
        // catalog at once; otherwise it long-polls for the next epoch.
        let after = if table.ready() { table.catalog.epoch } else { table.catalog.epoch.saturating_sub(1) };
        let wait = if table.ready() { state.config.catalog_wait_ms } else { 0 };
        drop(table);
        let poll = client.catalog(after, wait);
        let result = tokio::select! {
            r = poll => r,
            _ = state.shutdown.cancelled() => return,
        };
        match result {
            Ok(catalog) => {
                let current = state.table.load();
                let newer =
                    current.catalog.is_superseded_by(&catalog) || !current.has_catalog || !current.ready();
                drop(current);
                if newer {
                    adopt::adopt(state, catalog, Some(&client)).await;
                }
                // A model that cannot be loaded is retried with a growing delay, not in a loop.
                if state.table.load().ready() {
                    backoff = Duration::from_millis(200);
                } else {
                    sleep_or_shutdown(state, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "catalog poll failed");
                sleep_or_shutdown(state, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if state.shutdown.is_cancelled() {
            return;
        }
    }
}

async fn sleep_or_shutdown(state: &NodeState, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = state.shutdown.cancelled() => {}
    }
}

/// What this node reports about itself.
pub fn node_info(state: &NodeState) -> NodeInfo {
    let table = state.table.load();
    NodeInfo {
        id: state.config.id.clone(),
        region: state.config.region.clone(),
        http_url: state.url.clone(),
        catalog_epoch: table.catalog.epoch,
        // A draining node takes no new traffic: not ready, for control's directory (spread
        // batch shards), `/api/v1/node` and clients alike.
        ready: table.ready() && !state.draining.load(std::sync::atomic::Ordering::Relaxed),
        models: table
            .loaded()
            .map(|(m, live)| LoadedInfo {
                name: m.manifest.name.clone(),
                version: m.manifest.version,
                runtime: m.runtime_name(),
                runtime_reason: m.runtime_reason.clone(),
                live,
                // The table holds a version only once it is loaded and warmed up.
                warm: true,
            })
            .collect(),
        queued: table.loaded().map(|(m, _)| m.pool.depth() as u64).sum(),
        gpu: state.gpu.is_some(),
        quic_addr: state.quic_addr.map(|a| a.to_string()),
        draining: state.draining.load(std::sync::atomic::Ordering::Relaxed),
        ..NodeInfo::default()
    }
}

/// Report to control every `heartbeat_ms` until shutdown.
pub async fn heartbeat(state: Arc<NodeState>) {
    let Some(client) = ControlClient::of_node(&state) else { return };
    let every = Duration::from_millis(state.config.heartbeat_ms);
    loop {
        if let Err(e) = client.heartbeat(&node_info(&state)).await {
            tracing::debug!(error = %e, "heartbeat failed");
        }
        sleep_or_shutdown(&state, every).await;
        if state.shutdown.is_cancelled() {
            return;
        }
    }
}
