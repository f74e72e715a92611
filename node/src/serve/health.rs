//! Liveness, readiness, metrics and the node's own description.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::AppState;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 once every live model of the catalog is loaded; 503 with what is missing until then,
/// and while draining.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let table = state.table.load();
    let draining = state.draining.load(std::sync::atomic::Ordering::Relaxed);
    let ready = table.ready() && !draining;
    let body = json!({
        "ready": ready,
        "catalog_epoch": table.catalog.epoch,
        "missing": table.missing,
        "draining": draining,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::mesh::export_metrics(&state).await;
    let table = state.table.load();
    state.metrics.feature_breaker_open.set(i64::from(state.features.breaker_open()));
    state.metrics.queue_depth.clear();
    state.metrics.model_runtime.clear();
    for (m, _) in table.loaded() {
        let labels = crate::telemetry::metrics::ModelLabels {
            model: m.manifest.name.clone(),
            version: m.manifest.version.to_string(),
        };
        state.metrics.queue_depth.get_or_create(&labels).set(m.pool.depth() as i64);
        let labels = crate::telemetry::metrics::RuntimeLabels {
            model: m.manifest.name.clone(),
            version: m.manifest.version.to_string(),
            runtime: m.runtime_name(),
        };
        state.metrics.model_runtime.get_or_create(&labels).set(1);
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}

/// What this node is and serves (the same report it sends control).
pub async fn node(State(state): State<AppState>) -> Json<meridian_gossip::NodeInfo> {
    Json(crate::sync::node_info(&state))
}
