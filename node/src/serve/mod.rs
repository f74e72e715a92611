//! The HTTP/1.1 + HTTP/2 front end (axum). One handler per route; the request path they share
//! lives in [`path`]; every error becomes a status and a JSON body in [`error`].
//!
//! - [`seed`]: `POST /api/v1/models/{model}/predict` (one row or many).
//! - [`v2`], [`v2_binary`]: the Open Inference Protocol (KServe V2) REST API with the binary
//!   tensor data extension.
//! - [`features`]: feature writes, reads and bulk ingest.
//! - [`feedback`]: outcomes of answered requests, for experiments.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`mesh`]: the mesh's routes (members, publish, drain, artifacts for peers); requests for
//!   models this node does not hold are forwarded by [`crate::mesh::forward`].
//! - Batch jobs (`/api/v1/batch…`) are routed here; their handlers live in [`crate::batch::http`].
//!
//! Every route passes [`crate::auth::layer::authorize`] first: credential, scope, model, rate.

pub mod auth_hook;
pub mod error;
pub mod features;
pub mod feedback;
pub mod health;
pub mod mesh;
pub mod path;
pub mod seed;
pub mod stream;
pub mod v2;
pub mod v2_binary;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::batch::http as batch;
use crate::node::NodeState;
use error::ApiError;

pub type AppState = Arc<NodeState>;

async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint")
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/models/{model}/predict", post(seed::predict))
        .route("/api/v1/models/{model}/stream", post(stream::stream).layer(DefaultBodyLimit::disable()))
        .route("/api/v1/node", get(health::node))
        .route("/api/v1/mesh/nodes", get(mesh::nodes))
        .route("/api/v1/mesh/catalog", post(mesh::publish))
        .route("/api/v1/admin/drain", post(mesh::drain))
        .route("/api/v1/artifacts/{digest}", get(mesh::artifact))
        .route("/api/v1/feedback", post(feedback::feedback))
        .route("/api/v1/features/{view}/{entity}", get(features::get).put(features::put))
        .route(
            "/api/v1/features/{view}/ingest",
            post(features::ingest).layer(DefaultBodyLimit::max(state.config.max_ingest_bytes)),
        )
        .route("/api/v1/batch", post(batch::submit).get(batch::list).layer(DefaultBodyLimit::disable()))
        .route("/api/v1/batch/{id}", get(batch::status))
        .route("/api/v1/batch/{id}/cancel", post(batch::cancel))
        .route("/api/v1/batch/{id}/result", get(batch::result))
        .route("/api/v1/batch/{id}/input", get(batch::input))
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{model}", get(v2::model_metadata))
        .route("/v2/models/{model}/ready", get(v2::model_ready))
        .route("/v2/models/{model}/infer", post(v2::infer))
        .route("/v2/models/{model}/versions/{version}", get(v2::model_metadata_version))
        .route("/v2/models/{model}/versions/{version}/ready", get(v2::model_ready_version))
        .route("/v2/models/{model}/versions/{version}/infer", post(v2::infer_version))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::mesh::forward::forward))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::layer::authorize))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::mesh::forward::name_server))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}

/// Add `Alt-Svc: h3=":port"` to every answer, so HTTP/1.1 and HTTP/2 clients learn of HTTP/3.
pub fn advertise_h3(router: Router, port: u16) -> Router {
    let value = axum::http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
        .unwrap_or(axum::http::HeaderValue::from_static("clear"));
    router.layer(axum::middleware::map_response(move |mut response: axum::response::Response| {
        let value = value.clone();
        async move {
            response.headers_mut().insert(axum::http::header::ALT_SVC, value);
            response
        }
    }))
}
