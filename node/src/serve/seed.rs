//! The seed API: `POST /api/v1/models/{model}/predict`.
//!
//! One row: `{"features": {"f1": 1.0, ...}}` →
//! `{"prediction", "confidence", "latency_ms", "model", "model_version", "request_id", "served_by"}`.
//! Many rows: `{"rows": [{"f1": 1.0, ...}, ...]}` → the same with `"predictions": [...]`.
//! By entity: `{"entity": {"patient_id": "p42"}, "features": {...}}`: the model's view features
//! are read from the feature store; request features override them; defaults fill the rest.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use meridian_models::features::{assemble_row, short_list, AssembleError};
use meridian_models::interpret::{predictions, Prediction};
use meridian_models::InputBatch;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

use super::error::{parse_json, ApiError};
use super::path::{choose, run, shadow, unit_of, Assignment, Observation};
use super::AppState;
use crate::features::row::StoredRow;
use crate::inference::requests::Served;
use crate::inference::LoadedModel;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    features: Option<Map<String, Value>>,
    rows: Option<Vec<Map<String, Value>>>,
    entity: Option<Map<String, Value>>,
    /// The experiment unit (e.g. the user id), when not in `entity` or a header.
    unit: Option<Value>,
}

#[derive(Debug, Serialize)]
struct Meta<'a> {
    latency_ms: f64,
    model: &'a str,
    model_version: u32,
    request_id: String,
    served_by: &'a str,
    /// The experiment arm that answered, and whether it was `sticky` or `random`.
    #[serde(skip_serializing_if = "Option::is_none")]
    arm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assignment: Option<&'static str>,
    /// Features that took the spec's default (one-row requests).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    defaulted: Vec<String>,
    /// Stored features came from a stale local copy because the shared store is unreachable.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    degraded: bool,
}

#[derive(Debug, Serialize)]
struct SingleResponse<'a> {
    #[serde(flatten)]
    prediction: Prediction,
    #[serde(flatten)]
    meta: Meta<'a>,
}

#[derive(Debug, Serialize)]
struct BatchResponse<'a> {
    predictions: Vec<Prediction>,
    #[serde(flatten)]
    meta: Meta<'a>,
}

pub async fn predict(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut obs = Observation::start("predict");
    let result = answer(&state, &model, &headers, body, &mut obs).await;
    obs.finish(&state, result)
}

async fn answer(
    state: &AppState,
    model_name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    obs: &mut Observation,
) -> Result<(Response, usize), ApiError> {
    let request: PredictRequest = parse_json(&body?)?;
    let request_id = uuid::Uuid::new_v4();
    // `uuid@node`: feedback sent to any node finds its way to the node that answered.
    let request_key = format!("{request_id}@{}", state.config.id);
    let unit = unit_of(state, model_name, request.unit.as_ref(), request.entity.as_ref(), headers);
    let (model, assignment) = choose(state, model_name, unit.as_deref(), request_id.as_u128() as u64)?;
    obs.served_by(&model, assignment.as_ref());
    let (rows, single) = rows_of(request.features, request.rows, request.entity.is_some())?;
    let limit = state.config.max_rows_per_request;
    if rows.len() > limit {
        return Err(ApiError::too_large(format!("{} rows in one request; the limit is {limit}", rows.len())));
    }
    let stored = lookup_entities(state, &model, request.entity.as_ref()).await?;
    obs.degraded = stored.degraded;
    let (input, defaulted) = to_batch(&model, &rows, single, &stored).map_err(|(_, e)| e)?;
    let n = input.rows;
    let (name, version) = (&model.manifest.name, model.manifest.version);
    let cached = if single { state.results.get(name, version, &input.values) } else { None };
    let mut predictions = match cached {
        Some(hit) => vec![hit],
        None => compute(state, &model, input, single, assignment.as_ref(), obs).await?,
    };
    let meta = Meta {
        latency_ms: obs.elapsed_ms(),
        model: &model.manifest.name,
        model_version: model.manifest.version,
        request_id: request_key.clone(),
        served_by: &state.config.id,
        arm: assignment.as_ref().map(|a| a.arm.clone()),
        assignment: assignment.as_ref().map(|a| a.how),
        defaulted,
        degraded: stored.degraded,
    };
    let response = match (single, predictions.pop()) {
        (true, Some(prediction)) => {
            // Only answers given under an experiment are remembered for feedback: outcomes
            // exist to compare arms, and remembering costs every request (~20 % of throughput).
            if let Some(a) = &assignment {
                let served = Served {
                    model: name.clone(),
                    version,
                    arm: a.arm.clone(),
                    prediction: prediction.prediction,
                    class: prediction.class,
                };
                state.requests.remember(request_key.clone(), served);
            }
            Json(SingleResponse { prediction, meta }).into_response()
        }
        (false, Some(last)) => {
            predictions.push(last);
            Json(BatchResponse { predictions, meta }).into_response()
        }
        (_, None) => return Err(ApiError::from(meridian_models::ModelError::Run("no predictions".into()))),
    };
    Ok((response, n))
}

/// The request's rows, and whether it is the one-row form.
fn rows_of(
    features: Option<Map<String, Value>>,
    rows: Option<Vec<Map<String, Value>>>,
    has_entity: bool,
) -> Result<(Vec<Map<String, Value>>, bool), ApiError> {
    match (features, rows) {
        (Some(features), None) => Ok((vec![features], true)),
        (None, None) if has_entity => Ok((vec![Map::new()], true)),
        (None, Some(rows)) if rows.is_empty() => Err(ApiError::bad_request("\"rows\" is empty")),
        (None, Some(_)) if has_entity => {
            Err(ApiError::bad_request("\"entity\" goes with one row (\"features\"), not with \"rows\""))
        }
        (None, Some(rows)) => Ok((rows, false)),
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("send either \"features\" (one row) or \"rows\", not both"))
        }
        (None, None) => Err(ApiError::bad_request("the request needs \"features\", \"entity\" or \"rows\"")),
    }
}

/// Run the model (and the shadow copy, after), filling the result cache for one-row requests.
async fn compute(
    state: &AppState,
    model: &LoadedModel,
    input: InputBatch,
    single: bool,
    assignment: Option<&Assignment>,
    obs: &mut Observation,
) -> Result<Vec<Prediction>, ApiError> {
    let key = single.then(|| input.values.clone());
    let copy = assignment.and_then(|a| a.shadow.clone()).map(|m| (m, input.clone()));
    let computed = run(state, model, input).await?;
    obs.compute = Some(computed.compute);
    if let Some((shadow_model, copy)) = copy {
        shadow(state, shadow_model, "predict", copy);
    }
    let predictions = predictions(&model.manifest.spec.output, &computed.out)?;
    if let (Some(values), [p]) = (key, predictions.as_slice()) {
        state.results.insert(&model.manifest.name, model.manifest.version, &values, *p);
    }
    Ok(predictions)
}

/// Rows read from the feature store for one request, by view.
#[derive(Debug, Default)]
struct Stored {
    rows: HashMap<String, Option<Arc<StoredRow>>>,
    degraded: bool,
}

/// Look up the request's entity in every view the model reads, concurrently.
async fn lookup_entities(
    state: &AppState,
    model: &LoadedModel,
    entity: Option<&Map<String, Value>>,
) -> Result<Stored, ApiError> {
    let Some(entity) = entity else { return Ok(Stored::default()) };
    let wanted = model.manifest.spec.views();
    if wanted.is_empty() {
        return Err(ApiError::bad_request(format!(
            "model {:?} reads no feature views; send its \"features\"",
            model.manifest.name
        )));
    }
    let table = state.table.load();
    let mut lookups = Vec::new();
    for name in wanted {
        let view = table.catalog.views.get(name).cloned().ok_or_else(|| {
            ApiError::unavailable(format!("feature view {name:?} is not in this node's catalog yet"))
        })?;
        let id = match entity.get(&view.entity) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "\"entity\" needs a string or number {:?} for feature view {name:?}",
                    view.entity
                )))
            }
        };
        lookups.push(async move {
            let found = state.features.get(&view, &id).await;
            (view.name, found)
        });
    }
    drop(table);
    let mut stored = Stored::default();
    for (view, found) in futures_util::future::join_all(lookups).await {
        state.metrics.feature_lookup(found.tier.label(), found.row.is_some());
        stored.degraded |= found.degraded;
        stored.rows.insert(view, found.row);
    }
    Ok(stored)
}

/// Rows of named features (defaults filling the gaps) → the model's input columns: the
/// streaming front ends' rows. An error says which row it is about (its message starts
/// `rows[i]: `).
pub(crate) fn plain_batch(
    model: &LoadedModel,
    rows: &[Map<String, Value>],
) -> Result<InputBatch, (usize, ApiError)> {
    Ok(to_batch(model, rows, false, &Stored::default())?.0)
}

/// Rows of named features (with stored values and defaults) → the model's input columns; an
/// error comes with the index of the row it is about.
fn to_batch(
    model: &LoadedModel,
    rows: &[Map<String, Value>],
    single: bool,
    stored: &Stored,
) -> Result<(InputBatch, Vec<String>), (usize, ApiError)> {
    let width = model.width();
    let features = &model.manifest.spec.features;
    let mut values = Vec::with_capacity(rows.len() * width);
    let mut defaulted = Vec::new();
    let lookup = |view: &str, feature: &str| stored.rows.get(view)?.as_ref()?.values.get(feature).cloned();
    for (r, row) in rows.iter().enumerate() {
        let at = |msg: String| if single { msg } else { format!("rows[{r}]: {msg}") };
        match assemble_row(features, width, row, lookup) {
            Ok(assembled) => {
                values.extend_from_slice(&assembled.values);
                if single {
                    defaulted = assembled.defaulted;
                }
            }
            Err(AssembleError::Unknown(names)) => {
                let takes: Vec<&str> = model.manifest.spec.feature_names().collect();
                let msg = format!(
                    "unknown features {}; model {:?} takes {}",
                    short_list(&names),
                    model.manifest.name,
                    short_list(&takes)
                );
                return Err((r, ApiError::bad_request(at(msg))));
            }
            Err(e @ AssembleError::Missing(_)) => {
                return Err((r, ApiError::unprocessable(at(e.to_string()))))
            }
            Err(e @ AssembleError::Invalid(_)) => return Err((r, ApiError::bad_request(at(e.to_string())))),
        }
    }
    Ok((InputBatch { rows: rows.len(), width, values }, defaulted))
}
