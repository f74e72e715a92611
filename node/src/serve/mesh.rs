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

/// Artifact downloads served at once by this process; more get 503 (peers try another).
static DOWNLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// `GET /api/v1/artifacts/{digest}`: an artifact this node holds, streamed from disk, for
/// peers adopting a catalog (they verify the digest). Open, as on control.
pub async fn artifact(
    State(state): State<AppState>,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!("{digest:?} is not a sha256 digest")));
    }
    let Some(path) = state.store.artifact_path(&digest) else {
        return Err(ApiError::not_found("this node does not hold that artifact"));
    };
    let permit = DOWNLOADS
        .try_acquire()
        .map_err(|_| ApiError::unavailable("too many artifact downloads at once; try another peer"))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::not_found(format!("this node does not hold that artifact ({e})")))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| ApiError::not_found(format!("this node does not hold that artifact ({e})")))?;
    if !meta.is_file() {
        return Err(ApiError::not_found("this node does not hold that artifact"));
    }
    let len = meta.len();
    // The permit is held until the body has been sent.
    let stream = futures_util::StreamExt::map(tokio_util::io::ReaderStream::new(file), move |chunk| {
        let _held = &permit;
        chunk
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
