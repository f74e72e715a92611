//! `POST /api/v1/metrics/report` (a node's latency report) and
//! `GET /api/v1/metrics?model=M&window_s=60` (merged percentiles and rates per slice).

use axum::extract::{Query, State};
use axum::Json;
use bytes::Bytes;
use meridian_gossip::report::LatencyReport;
use serde::Deserialize;

use super::{ApiError, SharedState};
use crate::sink::SliceStats;

/// Wall-clock Unix milliseconds: report intervals come from other machines' clocks.
#[allow(clippy::disallowed_methods)]
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub async fn report(
    State(state): State<SharedState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let report: LatencyReport = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid latency report: {e}")))?;
    let node = report.node.clone();
    let slices = state
        .sink
        .ingest(report, unix_ms())
        .map_err(|e| ApiError::bad_request(format!("latency report from {node:?} refused: {e}")))?;
    Ok(Json(serde_json::json!({ "slices": slices })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    pub model: Option<String>,
    /// Seconds back from now (default 60).
    pub window_s: Option<u64>,
}

pub async fn query(State(state): State<SharedState>, Query(q): Query<MetricsQuery>) -> Json<Vec<SliceStats>> {
    let window_ms = q.window_s.unwrap_or(60).clamp(1, 3_600) * 1_000;
    Json(state.sink.query(q.model.as_deref(), window_ms, unix_ms(), true))
}
