//! Experiments: `POST /api/v1/experiments` (start), `GET /api/v1/experiments[/{name}]`,
//! `POST /api/v1/experiments/{name}/stop`, `GET /api/v1/experiments/{name}/results` (per-arm
//! traffic, latency and outcomes with a 95 % interval and an always-valid p-value). A change
//! bumps the catalog epoch.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use meridian_gossip::{Catalog, Experiment};

use serde::{Deserialize, Serialize};

use super::metrics::unix_ms;
use super::{ApiError, SharedState};
use crate::sink::KEEP_MS;
use crate::stats::{msprt_p_value, Moments};

pub async fn list(State(state): State<SharedState>) -> Json<Vec<Experiment>> {
    Json(state.catalog.borrow().experiments.values().cloned().collect())
}

/// The experiment called `name`: the running one, else the last one stopped under that name
/// (whether it was stopped).
async fn find(state: &SharedState, name: &str) -> Result<(Experiment, bool), ApiError> {
    let running = state.catalog.borrow().experiments.values().find(|e| e.name == name).cloned();
    if let Some(e) = running {
        return Ok((e, false));
    }
    let owned = name.to_string();
    match state.registry_op(move |r| r.stopped_experiment(&owned)).await? {
        Some(e) => Ok((e, true)),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no experiment named {name:?}"))),
    }
}

pub async fn show(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<Experiment>, ApiError> {
    find(&state, &name).await.map(|(e, _)| Json(e))
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

/// One arm's figures in an experiment's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmResult {
    pub arm: String,
    pub version: u32,
    pub weight_bp: u32,
    pub requests: u64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub outcome: Moments,
    pub outcome_mean: Option<f64>,
    pub outcome_ci95: Option<(f64, f64)>,
    /// This arm's outcome mean minus the first arm's.
    pub difference: Option<f64>,
    /// Always-valid p-value of "no difference from the first arm" (mSPRT).
    pub p_value: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExperimentResults {
    pub experiment: Experiment,
    /// Whether the experiment was stopped (its results stay readable while control keeps the
    /// reports, an hour).
    #[serde(default)]
    pub stopped: bool,
    pub window_s: u64,
    pub test: String,
    pub arms: Vec<ArmResult>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    /// Seconds of reports (default: all control keeps, one hour).
    pub window_s: Option<u64>,
}

pub async fn results(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    Query(q): Query<ResultsQuery>,
) -> Result<Json<ExperimentResults>, ApiError> {
    let (experiment, stopped) = find(&state, &name).await?;
    let window_s = q.window_s.unwrap_or(KEEP_MS / 1_000).clamp(1, KEEP_MS / 1_000);
    let stats = state.sink.query(Some(&experiment.model), window_s * 1_000, unix_ms(), false);
    let mut arms: Vec<ArmResult> = experiment
        .arms
        .iter()
        .map(|arm| {
            let s = stats.iter().find(|s| s.arm == arm.name && s.version == arm.version);
            let outcome = s.map(|s| s.outcome).unwrap_or_default();
            ArmResult {
                arm: arm.name.clone(),
                version: arm.version,
                weight_bp: arm.weight_bp,
                requests: s.map_or(0, |s| s.requests),
                error_rate: s.map_or(0.0, |s| s.error_rate),
                p50_ms: s.map_or(0.0, |s| s.p50_ms),
                p99_ms: s.map_or(0.0, |s| s.p99_ms),
                outcome_mean: outcome.mean(),
                outcome_ci95: outcome.ci95(),
                outcome,
                difference: None,
                p_value: None,
            }
        })
        .collect();
    if let Some(first) = arms.first().map(|a| a.outcome) {
        for arm in arms.iter_mut().skip(1) {
            arm.difference = arm.outcome.mean().zip(first.mean()).map(|(b, a)| b - a);
            arm.p_value = msprt_p_value(&first, &arm.outcome, None);
        }
    }
    let test = "mSPRT with a normal mixture (tau^2 = pooled variance): always-valid p-values".to_string();
    Ok(Json(ExperimentResults { experiment, stopped, window_s, test, arms }))
}
