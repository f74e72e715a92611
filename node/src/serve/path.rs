//! The request path every front end shares: resolve the model, queue the rows on its workers,
//! wait (bounded) for the answer, and record the outcome.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use meridian_models::InputBatch;
use tokio::time::Instant;

use super::error::ApiError;
use crate::inference::table::Resolved;
use crate::inference::worker::Computed;
use crate::inference::LoadedModel;
use crate::node::NodeState;
use crate::telemetry::histograms::Sample;
use crate::telemetry::metrics::Outcome;

/// The loaded model answering for `name` at `version` (the live one when `None`).
pub fn resolve(state: &NodeState, name: &str, version: Option<u32>) -> Result<Arc<LoadedModel>, ApiError> {
    match state.table.load().resolve(name, version) {
        Resolved::Model(m) => Ok(m),
        other => Err(ApiError::unresolved(name, version, other)),
    }
}

/// Which arm of a running experiment answers a request.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub arm: String,
    /// `sticky` (hashed from the unit) or `random` (the request had no unit).
    pub how: &'static str,
    /// The shadow version, when the experiment has one loaded here.
    pub shadow: Option<Arc<LoadedModel>>,
}

/// The model answering an unpinned request for `name`: the live version, or the arm of the
/// model's running experiment that `unit` hashes to (a random arm when there is no unit;
/// `random` is any number the caller drew, e.g. from the request id).
pub fn choose(
    state: &NodeState,
    name: &str,
    unit: Option<&str>,
    random: u64,
) -> Result<(Arc<LoadedModel>, Option<Assignment>), ApiError> {
    let table = state.table.load();
    let Some(experiment) = table.catalog.experiments.get(name) else {
        drop(table);
        return Ok((resolve(state, name, None)?, None));
    };
    let (bucket, how) = match unit {
        Some(u) => (meridian_gossip::experiment::bucket(&experiment.salt, u), "sticky"),
        None => ((random % u64::from(meridian_gossip::experiment::BUCKETS)) as u32, "random"),
    };
    let Some(arm) = experiment.arm_for_bucket(bucket) else {
        return Ok((resolve(state, name, None)?, None));
    };
    let model = match table.resolve(name, Some(arm.version)) {
        Resolved::Model(m) => m,
        other => return Err(ApiError::unresolved(name, Some(arm.version), other)),
    };
    let shadow = experiment.shadow.and_then(|v| match table.resolve(name, Some(v)) {
        Resolved::Model(m) => Some(m),
        _ => None,
    });
    Ok((model, Some(Assignment { arm: arm.name.clone(), how, shadow })))
}

/// The experiment unit of a request for `name`, when the model runs an experiment: an explicit
/// `unit` value, else the experiment's unit key in the entity, else a header of that name or
/// `x-meridian-unit`.
pub fn unit_of(
    state: &NodeState,
    name: &str,
    explicit: Option<&serde_json::Value>,
    entity: Option<&serde_json::Map<String, serde_json::Value>>,
    headers: &axum::http::HeaderMap,
) -> Option<String> {
    let table = state.table.load();
    let key = &table.catalog.experiments.get(name)?.unit_key;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    explicit.and_then(text).or_else(|| entity.and_then(|e| e.get(key)).and_then(text)).or_else(|| {
        let header = headers.get(key.as_str()).or_else(|| headers.get("x-meridian-unit"))?;
        header.to_str().ok().map(str::to_string)
    })
}

/// Send a copy of `input` to the shadow version and record its outcome under arm `shadow`.
/// Never awaited by the caller: a full shadow queue drops the copy, a failure is only counted.
pub fn shadow(state: &Arc<NodeState>, model: Arc<LoadedModel>, api: &'static str, input: InputBatch) {
    let started = Instant::now();
    let rows = input.rows;
    let (name, version) = (model.manifest.name.clone(), model.manifest.version.to_string());
    let Ok(reply) = model.pool.submit(input) else {
        let outcome =
            Outcome { model: &name, version: &version, arm: "shadow", api, code: 429, seconds: 0.0, rows: 0 };
        state.metrics.observe(&outcome);
        return;
    };
    let state = state.clone();
    let timeout = Duration::from_millis(state.config.request_timeout_ms);
    tokio::spawn(async move {
        let code = match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(Ok(_))) => 200,
            Ok(Ok(Err(_))) => 500,
            _ => 503,
        };
        let secs = started.elapsed().as_secs_f64();
        let rows = if code == 200 { rows } else { 0 };
        let outcome =
            Outcome { model: &name, version: &version, arm: "shadow", api, code, seconds: secs, rows };
        state.metrics.observe(&outcome);
    });
}

/// Parse a version from a URL segment.
pub fn parse_version(raw: &str) -> Result<u32, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request(format!("version {raw:?} is not a positive integer")))
}

/// Run `input` through `model`'s workers.
pub async fn run(state: &NodeState, model: &LoadedModel, input: InputBatch) -> Result<Computed, ApiError> {
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
    /// The experiment arm, when one answered.
    arm: Option<String>,
    /// The model's compute time for the batch this request ran in.
    pub compute: Option<Duration>,
    /// Stored features came from a stale copy.
    pub degraded: bool,
}

impl Observation {
    pub fn start(api: &'static str) -> Self {
        Self { started: Instant::now(), api, served: None, arm: None, compute: None, degraded: false }
    }

    pub fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1e3
    }

    pub fn served_by(&mut self, model: &LoadedModel, assignment: Option<&Assignment>) {
        self.served = Some((model.manifest.name.clone(), model.manifest.version));
        self.arm = assignment.map(|a| a.arm.clone());
    }

    /// Record the outcome (the answer and the rows it scored, or the error) and answer.
    pub fn finish(self, state: &NodeState, result: Result<(Response, usize), ApiError>) -> Response {
        let (response, code, rows) = match result {
            Ok((response, rows)) => (response, 200, rows),
            Err(e) => {
                let code = e.status.as_u16();
                (e.into_response(), code, 0)
            }
        };
        self.record(state, code, rows);
        response
    }

    /// Record an outcome: `code` is the HTTP status it had or would have had.
    pub fn record(self, state: &NodeState, code: u16, rows: usize) {
        let (model, version) = match &self.served {
            Some((m, v)) => (m.as_str(), v.to_string()),
            None => ("_unresolved", String::new()),
        };
        let secs = self.started.elapsed().as_secs_f64();
        let arm = self.arm.as_deref().unwrap_or_default();
        let outcome = Outcome { model, version: &version, arm, api: self.api, code, seconds: secs, rows };
        state.metrics.observe(&outcome);
        // A client's mistake (4xx) says nothing about the model version: it is neither a
        // latency nor an error of it (else bad requests could roll a healthy canary back).
        // 408 and 429 are the version's own: it did not answer in time, or its queue was full.
        let clients_fault = (400..500).contains(&code) && code != 408 && code != 429;
        if let Some((_, v)) = self.served.as_ref().filter(|_| !clients_fault) {
            state.histograms.record(Sample {
                model,
                version: *v,
                arm,
                total_us: (secs * 1e6) as u64,
                compute_us: self.compute.map(|c| c.as_micros() as u64),
                ok: code == 200,
                degraded: self.degraded,
            });
        }
    }
}
