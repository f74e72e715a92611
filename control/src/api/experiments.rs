//! Experiments: `POST /api/v1/experiments` (start), `GET /api/v1/experiments[/{name}]`,
//! `POST /api/v1/experiments/{name}/stop`. A change bumps the catalog epoch.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use meridian_gossip::{Catalog, Experiment};

use super::{ApiError, SharedState};

pub async fn list(State(state): State<SharedState>) -> Json<Vec<Experiment>> {
    Json(state.catalog.borrow().experiments.values().cloned().collect())
}

pub async fn show(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<Experiment>, ApiError> {
    let catalog = state.catalog.borrow();
    let found = catalog.experiments.values().find(|e| e.name == name).cloned();
    found
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no running experiment named {name:?}")))
}

pub async fn start(
    State(state): State<SharedState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Catalog>), ApiError> {
    let experiment: Experiment = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid experiment: {e}")))?;
    let catalog = state.registry_op(move |r| r.start_experiment(experiment)).await?;
    Ok((StatusCode::CREATED, Json(catalog)))
}

pub async fn stop(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<Catalog>, ApiError> {
    Ok(Json(state.registry_op(move |r| r.stop_experiment(&name)).await?))
}
