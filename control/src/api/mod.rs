//! Control's HTTP API, used by the CLI and by nodes. JSON in and out; errors are
//! `{"error": "..."}` with the status chosen in one place ([`ApiError`]).
//!
//! - [`models`]: push, list, show, deploy, rollback, archive.
//! - [`catalog`]: the catalog (long-poll) and artifacts by digest, for nodes.
//! - [`experiments`]: A/B experiments.
//! - [`metrics`]: latency reports in, merged percentiles out.
//! - [`rollouts`]: canary rollouts.
//! - [`views`]: feature view definitions.
//! - [`nodes`]: node heartbeats and the node list.
//! - [`keys`]: API keys: create, list, revoke.
//! - [`auth`]: the operator routes need an `admin` credential; the node routes stay open.

pub mod auth;
pub mod catalog;
pub mod experiments;
pub mod keys;
pub mod metrics;
pub mod models;
pub mod nodes;
pub mod rollouts;
pub mod views;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_gossip::Catalog;
use tokio::sync::watch;

use crate::config::ControlConfig;
use crate::directory::Directory;
use crate::registry::{Registry, RegistryError};

pub struct ControlState {
    pub config: ControlConfig,
    pub registry: Registry,
    /// The current catalog; nodes long-poll on it.
    pub catalog: watch::Sender<Catalog>,
    pub directory: Directory,
    pub sink: crate::sink::Sink,
    /// Cancelled when control stops: long-polls answer at once instead of holding shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Credentials of operator requests; its key table follows the catalog.
    pub auth: meridian_node::auth::Authenticator,
    /// Signs every catalog served to nodes that run the mesh.
    pub signing: meridian_gossip::mesh::ControlKey,
    /// The signed catalog as last served, JSON, with its epoch.
    pub signed: std::sync::Mutex<Option<(u64, bytes::Bytes)>>,
}

pub type SharedState = Arc<ControlState>;

impl ControlState {
    /// Run a read of the registry off the executor (sled may block).
    pub async fn registry_read<T: Send + 'static>(
        self: &Arc<Self>,
        op: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let state = self.clone();
        let result = tokio::task::spawn_blocking(move || op(&state.registry))
            .await
            .map_err(|e| ApiError::internal(format!("registry task failed: {e}")))?;
        Ok(result?)
    }

    /// Run a registry change off the executor (sled flushes and tract validation block), then
    /// publish the catalog if the change made a newer one.
    pub async fn registry_op<T: Send + 'static>(
        self: &Arc<Self>,
        op: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (result, catalog) = self.registry_read(move |r| Ok((op(r), r.catalog()))).await?;
        if let Ok(catalog) = catalog {
            self.catalog.send_if_modified(|current| {
                let newer = current.is_superseded_by(&catalog);
                if newer {
                    self.auth.adopt(&catalog);
                    *current = catalog;
                }
                newer
            });
        }
        Ok(result?)
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match e {
            RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RegistryError::Conflict(_) => StatusCode::CONFLICT,
            RegistryError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "registry failure");
        }
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

pub fn router(state: SharedState) -> Router {
    let max_artifact = state.config.max_artifact_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/models", get(models::list))
        .route("/api/v1/models/{name}", get(models::show))
        .route(
            "/api/v1/models/{name}/versions",
            post(models::push).layer(DefaultBodyLimit::max(max_artifact + (1 << 20))),
        )
        .route("/api/v1/models/{name}/versions/{version}", get(models::show_version))
        .route("/api/v1/models/{name}/versions/{version}/archive", post(models::archive))
        .route("/api/v1/models/{name}/deploy", post(models::deploy))
        .route("/api/v1/models/{name}/rollback", post(models::rollback))
        .route("/api/v1/models/{name}/placement", axum::routing::put(models::place))
        .route("/api/v1/catalog", get(catalog::catalog))
        .route("/api/v1/catalog/signed", get(catalog::signed))
        .route("/api/v1/mesh/control-key", get(catalog::control_key))
        .route("/api/v1/artifacts/{digest}", get(catalog::artifact))
        .route("/api/v1/experiments", get(experiments::list).post(experiments::start))
        .route("/api/v1/experiments/{name}", get(experiments::show))
        .route("/api/v1/experiments/{name}/stop", post(experiments::stop))
        .route("/api/v1/experiments/{name}/results", get(experiments::results))
        .route("/api/v1/rollouts", post(rollouts::start))
        .route("/api/v1/rollouts/{model}", get(rollouts::show))
        .route("/api/v1/rollouts/{model}/{command}", post(rollouts::command))
        .route("/api/v1/metrics", get(metrics::query))
        .route("/api/v1/metrics/report", post(metrics::report))
        .route("/api/v1/views", get(views::list))
        .route("/api/v1/views/{name}", axum::routing::put(views::put))
        .route("/api/v1/nodes", get(nodes::list))
        .route("/api/v1/nodes/heartbeat", post(nodes::heartbeat))
        .route("/api/v1/keys", get(keys::list).post(keys::create))
        .route("/api/v1/keys/{id}", axum::routing::delete(keys::revoke))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authorize))
        .layer(axum::middleware::map_response(meridian_node::serve::error::json_errors))
        .with_state(state)
}
