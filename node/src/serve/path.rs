//! The request path every front end shares: resolve the model, queue the rows on its workers,
//! wait (bounded) for the answer, and record the outcome.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use meridian_models::{InputBatch, OutputBatch};
use tokio::time::Instant;

use super::error::ApiError;
use crate::inference::table::Resolved;
use crate::inference::LoadedModel;
use crate::node::NodeState;

/// The loaded model answering for `name` at `version` (the live one when `None`).
pub fn resolve(state: &NodeState, name: &str, version: Option<u32>) -> Result<Arc<LoadedModel>, ApiError> {
    match state.table.load().resolve(name, version) {
        Resolved::Model(m) => Ok(m),
        other => Err(ApiError::unresolved(name, version, other)),
    }
}

/// Parse a version from a URL segment.
pub fn parse_version(raw: &str) -> Result<u32, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request(format!("version {raw:?} is not a positive integer")))
}

/// Run `input` through `model`'s workers.
pub async fn run(state: &NodeState, model: &LoadedModel, input: InputBatch) -> Result<OutputBatch, ApiError> {
    let limit = state.config.max_rows_per_request;
    if input.rows > limit {
        return Err(ApiError::too_large(format!("{} rows in one request; the limit is {limit}", input.rows)));
    }
    if state.shutdown.is_cancelled() {
        return Err(ApiError::unavailable("this node is shutting down"));
    }
    let reply = model.pool.submit(input)?;
    let timeout = Duration::from_millis(state.config.request_timeout_ms);
    match tokio::time::timeout(timeout, reply).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(_)) => Err(ApiError::unavailable("the model was unloaded while this request waited")),
        Err(_) => Err(ApiError::unavailable(format!(
            "no answer within {} ms; the model is overloaded",
            state.config.request_timeout_ms
        ))),
    }
}

/// Timing and labels of one request, recorded when it is answered.
pub struct Observation {
    started: Instant,
    api: &'static str,
    /// The model and version that served it, once resolved. Unresolved requests are labelled
    /// `_unresolved`: names from URLs never become metric labels.
    served: Option<(String, u32)>,
}

impl Observation {
    pub fn start(api: &'static str) -> Self {
        Self { started: Instant::now(), api, served: None }
    }

    pub fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1e3
    }

    pub fn served_by(&mut self, model: &LoadedModel) {
        self.served = Some((model.manifest.name.clone(), model.manifest.version));
    }

    /// Record the outcome (the answer and the rows it scored, or the error) and answer.
    pub fn finish(self, state: &NodeState, result: Result<(Response, usize), ApiError>) -> Response {
        let (model, version) = match &self.served {
            Some((m, v)) => (m.as_str(), v.to_string()),
            None => ("_unresolved", String::new()),
        };
        let secs = self.started.elapsed().as_secs_f64();
        let (response, code, rows) = match result {
            Ok((response, rows)) => (response, 200, rows),
            Err(e) => {
                let code = e.status.as_u16();
                (e.into_response(), code, 0)
            }
        };
        state.metrics.observe(model, &version, self.api, code, secs, rows);
        response
    }
}
