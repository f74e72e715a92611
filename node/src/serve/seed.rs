//! The seed API: `POST /api/v1/models/{model}/predict`.
//!
//! One row: `{"features": {"f1": 1.0, ...}}` →
//! `{"prediction", "confidence", "latency_ms", "model", "model_version", "request_id", "served_by"}`.
//! Many rows: `{"rows": [{"f1": 1.0, ...}, ...]}` → the same with `"predictions": [...]`.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use meridian_models::interpret::{predictions, Prediction};
use meridian_models::InputBatch;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{parse_json, ApiError};
use super::path::{resolve, run, Observation};
use super::AppState;
use crate::inference::LoadedModel;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    features: Option<Map<String, Value>>,
    rows: Option<Vec<Map<String, Value>>>,
    entity: Option<Value>,
}

#[derive(Debug, Serialize)]
struct Meta<'a> {
    latency_ms: f64,
    model: &'a str,
    model_version: u32,
    request_id: String,
    served_by: &'a str,
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
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut obs = Observation::start("predict");
    let result = answer(&state, &model, body, &mut obs).await;
    obs.finish(&state, result)
}

async fn answer(
    state: &AppState,
    model_name: &str,
    body: Result<Bytes, BytesRejection>,
    obs: &mut Observation,
) -> Result<(Response, usize), ApiError> {
    let request: PredictRequest = parse_json(&body?)?;
    if request.entity.is_some() {
        return Err(ApiError::bad_request(
            "\"entity\" lookups need a feature store, which this node does not have; send \"features\"",
        ));
    }
    let model = resolve(state, model_name, None)?;
    obs.served_by(&model);
    let (rows, single) = match (request.features, request.rows) {
        (Some(features), None) => (vec![features], true),
        (None, Some(rows)) if !rows.is_empty() => (rows, false),
        (None, Some(_)) => return Err(ApiError::bad_request("\"rows\" is empty")),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("send either \"features\" (one row) or \"rows\", not both"))
        }
        (None, None) => {
            return Err(ApiError::bad_request("the request needs \"features\" (one row) or \"rows\""))
        }
    };
    let limit = state.config.max_rows_per_request;
    if rows.len() > limit {
        return Err(ApiError::too_large(format!("{} rows in one request; the limit is {limit}", rows.len())));
    }
    let input = to_batch(&model, &rows, single)?;
    let n = input.rows;
    let out = run(state, &model, input).await?;
    let mut predictions = predictions(&model.manifest.spec.output, &out)?;
    let meta = Meta {
        latency_ms: obs.elapsed_ms(),
        model: &model.manifest.name,
        model_version: model.manifest.version,
        request_id: uuid::Uuid::new_v4().to_string(),
        served_by: &state.config.id,
    };
    let response = match (single, predictions.pop()) {
        (true, Some(prediction)) => Json(SingleResponse { prediction, meta }).into_response(),
        (false, Some(last)) => {
            predictions.push(last);
            Json(BatchResponse { predictions, meta }).into_response()
        }
        (_, None) => return Err(ApiError::from(meridian_models::ModelError::Run("no predictions".into()))),
    };
    Ok((response, n))
}

/// Rows of named features → the model's input columns, naming every unknown, missing or
/// non-numeric feature.
fn to_batch(model: &LoadedModel, rows: &[Map<String, Value>], single: bool) -> Result<InputBatch, ApiError> {
    let width = model.width();
    let mut values = vec![f32::NAN; rows.len() * width];
    for (r, row) in rows.iter().enumerate() {
        let at = |msg: String| {
            if single {
                msg
            } else {
                format!("rows[{r}]: {msg}")
            }
        };
        let out = &mut values[r * width..(r + 1) * width];
        let mut unknown = Vec::new();
        for (name, value) in row {
            let Some(&col) = model.columns.get(name) else {
                unknown.push(name.as_str());
                continue;
            };
            let v = value.as_f64().ok_or_else(|| {
                ApiError::bad_request(at(format!("feature {name:?} must be a number, got {value}")))
            })?;
            let v32 = v as f32;
            if !v32.is_finite() {
                return Err(ApiError::bad_request(at(format!(
                    "feature {name:?} = {v} is not a finite 32-bit float"
                ))));
            }
            out[col] = v32;
        }
        if !unknown.is_empty() {
            return Err(ApiError::bad_request(at(format!(
                "unknown features {unknown:?}; model {:?} takes {:?}",
                model.manifest.name, model.manifest.spec.features
            ))));
        }
        if row.len() < width {
            let missing: Vec<&str> = model
                .manifest
                .spec
                .features
                .iter()
                .filter(|f| !row.contains_key(f.as_str()))
                .map(String::as_str)
                .collect();
            return Err(ApiError::bad_request(at(format!("missing features {missing:?}"))));
        }
    }
    Ok(InputBatch { rows: rows.len(), width, values })
}
