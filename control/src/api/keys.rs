//! API keys: create (the key is in the answer, once), list, revoke. Each change publishes a new
//! catalog epoch, which is how nodes learn of it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde::Serialize;

use super::{ApiError, SharedState};
use crate::registry::keys::{KeyRecord, KeySpec};

/// The answer to a create: the key (shown once; control keeps only its hash) and its record.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub record: KeyRecord,
}

pub async fn create(
    State(state): State<SharedState>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let spec: KeySpec =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid key spec: {e}")))?;
    let now = super::models::rfc3339_now();
    let (key, record) = state.registry_op(move |r| r.create_key(spec, now)).await?;
    tracing::info!(key = %record.id, name = %record.name, scopes = %record.scopes, "API key created");
    Ok((StatusCode::CREATED, Json(CreatedKey { key, record })))
}

pub async fn list(State(state): State<SharedState>) -> Result<Json<Vec<KeyRecord>>, ApiError> {
    Ok(Json(state.registry_read(|r| r.keys()).await?))
}

pub async fn revoke(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<KeyRecord>, ApiError> {
    let now = super::models::rfc3339_now();
    let record = state.registry_op(move |r| r.revoke_key(&id, now)).await?;
    tracing::info!(key = %record.id, name = %record.name, "API key revoked");
    Ok(Json(record))
}
