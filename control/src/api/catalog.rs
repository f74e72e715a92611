//! What nodes pull: the catalog (long-polled by epoch) and artifacts by digest.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meridian_gossip::mesh::SignedCatalog;
use meridian_gossip::Catalog;
use serde::Deserialize;

use super::{ApiError, SharedState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogQuery {
    /// Answer as soon as the catalog's epoch is above this (long-poll).
    pub after_epoch: Option<u64>,
    /// How long to wait for that, capped by `catalog_wait_max_ms`.
    pub wait_ms: Option<u64>,
}

pub async fn catalog(State(state): State<SharedState>, Query(query): Query<CatalogQuery>) -> Json<Catalog> {
    Json(wait_catalog(&state, &query).await)
}

/// The catalog as [`catalog`] answers it, signed with control's key: what nodes that run the
/// mesh fetch and publish to their peers.
/// Signed and encoded once per epoch, however many nodes ask.
pub async fn signed(State(state): State<SharedState>, Query(query): Query<CatalogQuery>) -> Response {
    let catalog = wait_catalog(&state, &query).await;
    let epoch = catalog.epoch;
    let cached = state.signed.lock().ok().and_then(|c| c.clone()).filter(|(e, _)| *e == epoch);
    let body = match cached {
        Some((_, body)) => body,
        None => {
            let signed: SignedCatalog = state.signing.sign_catalog(catalog);
            let body = bytes::Bytes::from(serde_json::to_vec(&signed).unwrap_or_default());
            if let Ok(mut slot) = state.signed.lock() {
                *slot = Some((epoch, body.clone()));
            }
            body
        }
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Control's public signing key: what nodes list in `mesh.control_keys`.
pub async fn control_key(State(state): State<SharedState>) -> Json<serde_json::Value> {
    let public = state.signing.public();
    Json(serde_json::json!({ "key_id": public.key_id(), "public_key": public.to_hex() }))
}

#[allow(clippy::let_and_return)] // the borrow of `rx` must end before `rx` drops
async fn wait_catalog(state: &SharedState, query: &CatalogQuery) -> Catalog {
    let mut rx = state.catalog.subscribe();
    if let Some(after) = query.after_epoch {
        let wait = query.wait_ms.unwrap_or(0).min(state.config.catalog_wait_max_ms);
        // A timeout or a closed channel both just answer with the current catalog.
        let changed = tokio::time::timeout(Duration::from_millis(wait), rx.wait_for(|c| c.epoch > after));
        tokio::select! {
            _ = changed => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
    let current = rx.borrow().clone();
    current
}

pub async fn artifact(
    State(state): State<SharedState>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    let path = state
        .registry
        .artifacts()
        .path(&digest)
        .ok_or_else(|| ApiError::bad_request(format!("{digest:?} is not a sha256 digest")))?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no artifact {digest}")))
        }
        Err(e) => return Err(ApiError::internal(format!("reading artifact {digest}: {e}"))),
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}
