//! The mesh's routes on every node: the membership view, publishing a signed catalog, drain,
//! and artifacts for peers.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meridian_gossip::driver::MeshError;
use meridian_gossip::mesh::{Rejection, SignedCatalog};
use serde_json::json;

use super::error::ApiError;
use super::AppState;

/// `GET /api/v1/mesh/nodes`: this node and the members it knows, with state, RTT and info.
pub async fn nodes(State(state): State<AppState>) -> Json<meridian_gossip::MeshView> {
    Json(crate::mesh::view(&state).await)
}

/// `POST /api/v1/mesh/catalog`: publish a catalog control signed into the mesh through this
/// node. The signature is the credential: a forged, unknown-key or stale catalog is refused
/// and nothing changes.
pub async fn publish(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let Some(mesh) = &state.mesh else {
        return Err(ApiError::new(StatusCode::CONFLICT, "this node does not run the mesh (no mesh.listen)"));
    };
    let signed: SignedCatalog = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body is not a signed catalog: {e}")))?;
    match mesh.handle.publish_catalog(signed).await {
        Ok(epoch) => Ok((StatusCode::OK, Json(json!({ "epoch": epoch }))).into_response()),
        Err(MeshError::Rejected(r)) => {
            let status = match r {
                Rejection::UnknownKey(_) | Rejection::BadSignature => StatusCode::FORBIDDEN,
                Rejection::Stale { .. } => StatusCode::CONFLICT,
                Rejection::Malformed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            Err(ApiError::new(status, format!("catalog refused: {r}")))
        }
        Err(MeshError::Stopped) => Err(ApiError::unavailable("the mesh has stopped on this node")),
    }
}

/// `POST /api/v1/admin/drain`: stop taking new traffic and leave the mesh after
/// `mesh.drain_grace_ms`.
pub async fn drain(State(state): State<AppState>) -> impl IntoResponse {
    let grace = state.config.mesh.drain_grace_ms;
    tokio::spawn(crate::mesh::tasks::drain(state.clone()));
    (
        StatusCode::ACCEPTED,
        Json(json!({ "node": state.config.id, "draining": true, "leave_after_ms": grace })),
    )
}

/// `GET /api/v1/artifacts/{digest}`: an artifact this node holds, for peers adopting a catalog
/// (they verify the digest). Open, as on control.
pub async fn artifact(
    State(state): State<AppState>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!("{digest:?} is not a sha256 digest")));
    }
    let store = state.clone();
    let found = tokio::task::spawn_blocking(move || store.store.artifact(&digest)).await.map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("artifact read failed: {e}"))
    })?;
    match found {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()),
        None => Err(ApiError::not_found("this node does not hold that artifact")),
    }
}
