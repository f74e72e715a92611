//! The Open Inference Protocol (KServe V2) REST API, so existing clients (tritonclient, KServe
//! SDKs) work unchanged. Errors are `{"error": "..."}`: 404 unknown model or version, 400 bad
//! input, 503 not ready, 429 over limit.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use meridian_models::{InputBatch, OutputBatch, TensorData, TensorInfo};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::{parse_json, ApiError};
use super::path::{choose, parse_version, resolve, run, shadow, unit_of, Assignment, Observation};
use super::{v2_binary, AppState};
use crate::inference::LoadedModel;

pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "meridian",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.table.load().ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

fn tensor_metadata(t: &TensorInfo) -> Value {
    json!({ "name": t.name, "datatype": t.dtype.v2_name(), "shape": t.v2_shape() })
}

fn metadata(state: &AppState, name: &str, version: Option<u32>) -> Result<Json<Value>, ApiError> {
    let model = resolve(state, name, version)?;
    let table = state.table.load();
    let versions: Vec<String> = table
        .models
        .get(name)
        .map(|slot| slot.versions().map(|m| m.manifest.version.to_string()).collect())
        .unwrap_or_default();
    let sig = &model.manifest.signature;
    Ok(Json(json!({
        "name": name,
        "versions": versions,
        "platform": "onnx",
        "inputs": sig.inputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
        "outputs": sig.outputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
        "parameters": { "runtime": model.runtime_name(), "runtime_reason": model.runtime_reason, "features": model.manifest.spec.feature_names().collect::<Vec<_>>() },
    })))
}

pub async fn model_metadata(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    metadata(&state, &model, None)
}

pub async fn model_metadata_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    metadata(&state, &model, Some(parse_version(&version)?))
}

fn model_ready_answer(state: &AppState, name: &str, version: Option<u32>) -> Result<Json<Value>, ApiError> {
    let model = resolve(state, name, version)?;
    Ok(Json(json!({ "name": name, "version": model.manifest.version.to_string(), "ready": true })))
}

pub async fn model_ready(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    model_ready_answer(&state, &model, None)
}

pub async fn model_ready_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    model_ready_answer(&state, &model, Some(parse_version(&version)?))
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InferInput>,
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Option<Value>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Serialize)]
struct InferOutput {
    name: String,
    datatype: &'static str,
    shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

pub async fn infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_answer(state, model, None, headers, body).await
}

pub async fn infer_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match parse_version(&version) {
        Ok(v) => infer_answer(state, model, Some(v), headers, body).await,
        Err(e) => e.into_response(),
    }
}

async fn infer_answer(
    state: AppState,
    name: String,
    version: Option<u32>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut obs = Observation::start("v2");
    let result = infer_inner(&state, &name, version, headers, body, &mut obs).await;
    obs.finish(&state, result)
}

async fn infer_inner(
    state: &AppState,
    name: &str,
    version: Option<u32>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    obs: &mut Observation,
) -> Result<(Response, usize), ApiError> {
    let (json_part, binary) = v2_binary::split(&headers, body?)?;
    let request: InferRequest = parse_json(&json_part)?;
    // A pinned version bypasses experiments; otherwise the unit comes from `parameters.unit`
    // or a header, as in the seed API.
    let (model, assignment) = match version {
        Some(_) => (resolve(state, name, version)?, None),
        None => {
            let unit = unit_of(state, name, request.parameters.get("unit"), None, &headers);
            choose(state, name, unit.as_deref(), uuid::Uuid::new_v4().as_u128() as u64)?
        }
    };
    obs.served_by(&model, assignment.as_ref());
    let input = decode_input(&model, &request, &binary, state.config.max_rows_per_request)?;
    let rows = input.rows;
    let copy = assignment.as_ref().and_then(|a| a.shadow.clone()).map(|m| (m, input.clone()));
    let computed = run(state, &model, input).await?;
    obs.compute = Some(computed.compute);
    let out = computed.out;
    if let Some((shadow_model, copy)) = copy {
        shadow(state, shadow_model, "v2", copy);
    }
    Ok((encode_response(&model, &request, out, assignment.as_ref())?, rows))
}

fn decode_input(
    model: &LoadedModel,
    request: &InferRequest,
    binary: &[u8],
    limit: usize,
) -> Result<InputBatch, ApiError> {
    let (input, rows) = check_input(model, request)?;
    // Before anything is sized from the claimed shape.
    if rows > limit {
        return Err(ApiError::too_large(format!(
            "input {:?} has {rows} rows; the limit is {limit} per request",
            input.name
        )));
    }
    let width = model.width();
    let values = input_values(input, rows, width, binary)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ApiError::bad_request(format!(
            "input {:?}: element {i} (row {}, column {}) is not finite",
            input.name,
            i / width,
            i % width
        )));
    }
    Ok(InputBatch { rows, width, values })
}

/// The request's one input, checked against the model's: name, datatype, `[rows, width]`.
fn check_input<'r>(
    model: &LoadedModel,
    request: &'r InferRequest,
) -> Result<(&'r InferInput, usize), ApiError> {
    let expected = &model.manifest.signature.inputs[0];
    let describe = || format!("{:?} {} {:?}", expected.name, expected.dtype.v2_name(), expected.v2_shape());
    let [input] = request.inputs.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "the request has {} inputs; the model takes one: {}",
            request.inputs.len(),
            describe()
        )));
    };
    if input.name != expected.name {
        return Err(ApiError::bad_request(format!(
            "unknown input {:?}; the model takes {}",
            input.name,
            describe()
        )));
    }
    if input.datatype != "FP32" {
        let (name, dt) = (&input.name, &input.datatype);
        return Err(ApiError::bad_request(format!(
            "input {name:?} has datatype {dt}; the model takes {}",
            describe()
        )));
    }
    match input.shape.as_slice() {
        [rows, w] if *rows >= 1 && *w == model.width() as i64 => Ok((input, *rows as usize)),
        shape => Err(ApiError::bad_request(format!(
            "input {:?} has shape {shape:?}; the model takes {}",
            input.name,
            describe()
        ))),
    }
}

/// The input's `count` values, from JSON `data` or from the binary part.
fn input_values(input: &InferInput, rows: usize, width: usize, binary: &[u8]) -> Result<Vec<f32>, ApiError> {
    match (input.parameters.get("binary_data_size"), &input.data) {
        (Some(size), None) => {
            let size = size
                .as_u64()
                .ok_or_else(|| ApiError::bad_request("binary_data_size must be a non-negative integer"))?;
            if size != binary.len() as u64 {
                return Err(ApiError::bad_request(format!(
                    "binary_data_size is {size} but {} bytes follow the JSON header",
                    binary.len()
                )));
            }
            v2_binary::f32s(binary, rows * width, &input.name)
        }
        (None, Some(data)) => json_values(data, rows, width, &input.name),
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request(format!("input {:?} has both data and binary_data_size", input.name)))
        }
        (None, None) => Err(ApiError::bad_request(format!("input {:?} has no data", input.name))),
    }
}

/// The values of JSON `data` for a `[rows, width]` input: flat (`rows · width` numbers) or
/// nested to the shape (`rows` arrays of `width` numbers); a ragged nesting is refused.
fn json_values(data: &Value, rows: usize, width: usize, input: &str) -> Result<Vec<f32>, ApiError> {
    let count = rows * width;
    let Value::Array(items) = data else {
        return Err(ApiError::bad_request(format!("input {input:?}: data must be an array of numbers")));
    };
    let number = |v: &Value, at: usize| match v {
        Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN) as f32),
        other => {
            Err(ApiError::bad_request(format!("input {input:?}: element {at} is {other}, not a number")))
        }
    };
    if items.first().is_some_and(Value::is_array) {
        if items.len() != rows {
            return Err(ApiError::bad_request(format!(
                "input {input:?}: the shape needs {rows} rows, data has {}",
                items.len()
            )));
        }
        let mut out = Vec::with_capacity(count);
        for (r, row) in items.iter().enumerate() {
            match row {
                Value::Array(values) if values.len() == width => {
                    for v in values {
                        out.push(number(v, out.len())?);
                    }
                }
                Value::Array(values) => {
                    return Err(ApiError::bad_request(format!(
                        "input {input:?}: row {r} has {} values, the shape needs {width}",
                        values.len()
                    )))
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "input {input:?}: row {r} is {other}, not an array of {width} numbers"
                    )))
                }
            }
        }
        return Ok(out);
    }
    if items.len() != count {
        return Err(ApiError::bad_request(format!(
            "input {input:?}: the shape needs {count} values, data has {}",
            items.len()
        )));
    }
    items.iter().enumerate().map(|(i, v)| number(v, i)).collect()
}

fn json_data(data: &TensorData) -> Value {
    match data {
        TensorData::F32(v) => json!(v),
        TensorData::F64(v) => json!(v),
        TensorData::I32(v) => json!(v),
        TensorData::I64(v) => json!(v),
        TensorData::Bool(v) => json!(v),
    }
}

/// The outputs the request asked for (all when it named none), each with whether it goes
/// back in binary form.
fn requested_outputs<'a>(request: &'a InferRequest, out: &'a OutputBatch) -> Vec<(&'a str, bool)> {
    let all_binary = request.parameters.get("binary_data_output").and_then(Value::as_bool) == Some(true);
    match &request.outputs {
        Some(list) => list
            .iter()
            .map(|o| {
                let binary = o.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(all_binary);
                (o.name.as_str(), binary)
            })
            .collect(),
        None => out.tensors.iter().map(|t| (t.name.as_str(), all_binary)).collect(),
    }
}

fn encode_response(
    model: &LoadedModel,
    request: &InferRequest,
    out: OutputBatch,
    assignment: Option<&Assignment>,
) -> Result<Response, ApiError> {
    let mut outputs = Vec::new();
    let mut binary = Vec::new();
    for (name, as_binary) in requested_outputs(request, &out) {
        let signature = &model.manifest.signature;
        let (tensor, info) = out.tensor(name).zip(signature.output(name)).ok_or_else(|| {
            let names: Vec<_> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
            ApiError::bad_request(format!("unknown output {name:?}; the model has {names:?}"))
        })?;
        let (data, parameters) = if as_binary {
            let bytes = v2_binary::encode(&tensor.data);
            let parameters = json!({ "binary_data_size": bytes.len() });
            binary.extend_from_slice(&bytes);
            (None, Some(parameters))
        } else {
            (Some(json_data(&tensor.data)), None)
        };
        let (datatype, shape) = (info.dtype.v2_name(), tensor.shape.clone());
        outputs.push(InferOutput { name: tensor.name.clone(), datatype, shape, data, parameters });
    }
    let mut body = json!({
        "model_name": model.manifest.name,
        "model_version": model.manifest.version.to_string(),
        "outputs": outputs,
    });
    if let Some(id) = &request.id {
        body["id"] = json!(id);
    }
    if let Some(a) = assignment {
        body["parameters"] = json!({ "arm": a.arm, "assignment": a.how });
    }
    let mut payload = serde_json::to_vec(&body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if binary.is_empty() {
        return Ok(
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], payload).into_response()
        );
    }
    let header_len = payload.len();
    payload.extend_from_slice(&binary);
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (header::HeaderName::from_static(v2_binary::HEADER), HeaderValue::from(header_len)),
    ];
    Ok((headers, payload).into_response())
}
