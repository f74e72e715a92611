//! Node heartbeats in, the node list out.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use meridian_gossip::NodeInfo;

use super::{ApiError, SharedState};
use crate::directory::NodeStatus;

pub async fn heartbeat(
    State(state): State<SharedState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let info: NodeInfo = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid node report: {e}")))?;
    state.directory.report(info, tokio::time::Instant::now());
    let epoch = state.catalog.borrow().epoch;
    Ok(Json(serde_json::json!({ "catalog_epoch": epoch })))
}

pub async fn list(State(state): State<SharedState>) -> Json<Vec<NodeStatus>> {
    let down_after = Duration::from_secs(state.config.node_down_after_secs);
    Json(state.directory.list(tokio::time::Instant::now(), down_after))
}
