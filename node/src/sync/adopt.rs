//! Adopting a catalog: every manifest it names is made available (reused if loaded, read from
//! disk, or fetched from control and verified), loaded and warmed up off the executor; then the
//! new serving table replaces the old one in one atomic swap. A model that cannot be loaded
//! keeps its old versions serving and is listed as missing, so the next poll retries it. A
//! model placed in other regions (or on demand and not yet asked for) is not loaded here.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_gossip::Catalog;
use meridian_models::ModelManifest;

use super::control::ControlClient;
use crate::inference::loaded::Placement;
use crate::inference::table::Slot;
use crate::inference::{LoadedModel, ServingTable};
use crate::node::NodeState;
use meridian_models::runtime::gpu::GpuModelOptions;

async fn obtain(
    state: &NodeState,
    manifest: &ModelManifest,
    client: Option<&ControlClient>,
) -> Result<Arc<LoadedModel>, String> {
    if let Some(loaded) = state.table.load().find(manifest) {
        return Ok(loaded);
    }
    let bytes = match state.store.artifact(&manifest.digest) {
        Some(bytes) => bytes,
        None => {
            let bytes = fetch(state, manifest, client).await?;
            state.store.put_artifact(&manifest.digest, &bytes).map_err(|e| e.to_string())?;
            bytes
        }
    };
    let (pool, mode) = state.config.tuning(&manifest.name);
    let placement = Placement {
        mode,
        gpu: state.gpu.clone(),
        options: GpuModelOptions {
            max_rows: state.config.gpu.max_rows_per_submission,
            poison: false,
            matmul: state.config.gpu.matmul_tile,
        },
    };
    let fault = state
        .config
        .faults
        .iter()
        .find(|f| f.model == manifest.name && f.version == manifest.version)
        .map(|f| std::time::Duration::from_millis(f.delay_ms));
    let manifest = manifest.clone();
    let loaded =
        tokio::task::spawn_blocking(move || LoadedModel::load(manifest, &bytes, pool, &placement, fault))
            .await
            .map_err(|e| format!("loader task failed: {e}"))?
            .map_err(|e| e.to_string())?;
    Ok(Arc::new(loaded))
}

/// The artifact of `manifest`, verified: from the nearest peers (when the node runs the mesh),
/// then from control.
async fn fetch(
    state: &NodeState,
    manifest: &ModelManifest,
    control: Option<&ControlClient>,
) -> Result<Vec<u8>, String> {
    let mut errors = Vec::new();
    let peers = crate::mesh::artifact_sources(state, &manifest.name, manifest.version).await;
    for url in peers.iter().take(4) {
        let peer = ControlClient::with_client(url, state.peers.clone(), &state.config);
        match peer.artifact(&manifest.digest).await {
            Ok(bytes) => return Ok(bytes),
            Err(e) => errors.push(format!("peer {url}: {e}")),
        }
    }
    match control {
        Some(control) => match control.artifact(&manifest.digest).await {
            Ok(bytes) => return Ok(bytes),
            Err(e) => errors.push(format!("control: {e}")),
        },
        None if errors.is_empty() => {
            errors.push("not on disk, no control_url and no peer holds it".to_string())
        }
        None => {}
    }
    Err(format!("artifact {}: {}", manifest.digest, errors.join("; ")))
}

pub async fn adopt(state: &NodeState, catalog: Catalog, client: Option<&ControlClient>) {
    // Keys first: a revocation must not wait for model loads.
    state.auth.adopt(&catalog);
    // One adoption at a time (the catalog follower, an on-demand load), each from the table
    // the previous one left.
    let _adopting = state.adopting.lock().await;
    if catalog.epoch < state.table.load().catalog.epoch {
        return;
    }
    let old = state.table.load_full();
    let mut models = BTreeMap::new();
    let mut missing = BTreeMap::new();
    let demanded = state.demanded.lock().map(|d| d.clone()).unwrap_or_default();
    for (name, entry) in &catalog.models {
        // In a mesh, placed elsewhere (or on demand and not asked for here): peers serve it. A
        // node alone loads everything.
        let placed_here = catalog.placement(name).preloads(&state.config.region) || demanded.contains(name);
        if state.mesh.is_some() && !placed_here {
            continue;
        }
        let live = match obtain(state, &entry.live, client).await {
            Ok(m) => m,
            Err(reason) => {
                tracing::warn!(model = %name, version = entry.live.version, %reason, "cannot load");
                missing.insert(name.clone(), reason);
                if let Some(slot) = old.models.get(name) {
                    models.insert(name.clone(), slot.clone());
                }
                continue;
            }
        };
        // The previous version only speeds up a rollback: failing to load it is not fatal.
        let previous = match &entry.previous {
            Some(p) => obtain(state, p, client)
                .await
                .inspect_err(|reason| tracing::warn!(model = %name, version = p.version, %reason, "cannot load previous version"))
                .ok(),
            None => None,
        };
        let mut extra = Vec::new();
        for manifest in &entry.extra {
            match obtain(state, manifest, client).await {
                Ok(m) => extra.push(m),
                Err(reason) => {
                    tracing::warn!(model = %name, version = manifest.version, %reason, "cannot load experiment version");
                }
            }
        }
        models.insert(name.clone(), Slot { live, previous, extra });
    }
    let complete = missing.is_empty();
    let epoch = catalog.epoch;
    let table = ServingTable { catalog: Arc::new(catalog), models, has_catalog: true, missing };
    let loaded = table.loaded().count();
    if complete {
        if let Err(e) = state.store.save_catalog(&table.catalog) {
            tracing::error!(error = %e, "cannot persist the catalog");
        }
        state.store.prune(&table.catalog.artifact_digests());
    }
    state.table.store(Arc::new(table));
    state.metrics.catalog_epoch.set(epoch as i64);
    state.metrics.models_loaded.set(loaded as i64);
    tracing::info!(epoch, loaded, complete, "catalog adopted");
}
