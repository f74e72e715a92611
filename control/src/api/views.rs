//! Feature view definitions: `PUT /api/v1/views/{name}` (JSON), `GET /api/v1/views`. A change
//! bumps the catalog epoch and reaches every node with it.

use axum::extract::{Path, State};
use axum::Json;
use bytes::Bytes;
use meridian_gossip::Catalog;
use meridian_models::features::FeatureView;

use super::{ApiError, SharedState};

pub async fn list(State(state): State<SharedState>) -> Json<Vec<FeatureView>> {
    Json(state.catalog.borrow().views.values().cloned().collect())
}

pub async fn put(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Catalog>, ApiError> {
    let view: FeatureView = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid feature view: {e}")))?;
    if view.name != name {
        return Err(ApiError::bad_request(format!(
            "the view is named {:?} but was sent to {name:?}",
            view.name
        )));
    }
    Ok(Json(state.registry_op(move |r| r.put_view(view)).await?))
}
