//! `POST /api/v1/feedback`: the outcome of a request this node answered, for the per-arm
//! results of experiments. `{"request_id": "...", "label": 1}` scores a classifier's answer
//! (1 when the predicted class is the label, else 0); `{"request_id": "...", "reward": 0.7}`
//! records a reward. One outcome per request id, within the node's feedback window. Feedback
//! sent to another node (another region) is relayed once to the node that answered.

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{parse_json, ApiError};
use super::AppState;
use crate::inference::requests::Served;
use crate::sync::control::ControlClient;
use meridian_models::OutputSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    request_id: String,
    /// The true class: its index, or its name from the model's spec.
    label: Option<Value>,
    reward: Option<f64>,
}

/// Marks feedback relayed from another node, so it is relayed at most once.
const RELAYED: &str = "x-meridian-relayed";

pub async fn feedback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let fb: Feedback = parse_json(&body)?;
    // Ids are `uuid@node`: anything much longer is not one of ours (and is not echoed back).
    if fb.request_id.len() > 256 {
        return Err(ApiError::bad_request(format!(
            "request_id has {} characters; ids this node hands out have under 256",
            fb.request_id.len()
        )));
    }
    if fb.label.is_some() == fb.reward.is_some() {
        return Err(ApiError::bad_request("feedback needs exactly one of \"label\" or \"reward\""));
    }
    if fb.reward.is_some_and(|r| !r.is_finite()) {
        return Err(ApiError::bad_request("\"reward\" must be a finite number"));
    }
    let Some(served) = state.requests.take(&fb.request_id) else {
        if let Some(relayed) = relay(&state, &fb.request_id, &headers, body).await {
            return relayed;
        }
        return Err(ApiError::not_found(format!(
            "unknown or expired request id {:?}: a node keeps one-row request ids for {} s, and each takes one outcome",
            fb.request_id,
            state.requests.ttl().as_secs()
        )));
    };
    let outcome = match (fb.reward, &fb.label) {
        (Some(reward), _) => reward,
        (None, label) => score_label(&state, &served, label.as_ref().unwrap_or(&Value::Null))?,
    };
    state.histograms.record_outcome(&served.model, served.version, &served.arm, outcome);
    Ok(Json(json!({
        "recorded": true,
        "model": served.model,
        "model_version": served.version,
        "arm": served.arm,
        "outcome": outcome,
        "recorded_by": state.config.id,
    }))
    .into_response())
}

/// Feedback for a request another node answered (`uuid@node`): hand it to that node, found in
/// the mesh or control's node directory, with this node's `auth.peer_key`, and pass its answer
/// back. `None` when it is ours or cannot go.
async fn relay(
    state: &AppState,
    request_id: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<Result<Response, ApiError>> {
    let (_, node) = request_id.rsplit_once('@')?;
    if node == state.config.id || headers.contains_key(RELAYED) {
        return None;
    }
    // The relay presents this node's own credential, never the caller's: a node's address can
    // come from control's directory, which any heartbeat can write.
    let credential = state.config.auth.peer_key.clone();
    if state.auth.enabled() && credential.is_none() {
        return Some(Err(ApiError::unavailable(format!(
            "request {request_id:?} was answered by node {node:?}: send its feedback there \
             (this node has no auth.peer_key to relay it with)"
        ))));
    }
    let url = match node_url(state, node).await {
        Ok(Some(url)) => url,
        Ok(None) => return None,
        Err(e) => return Some(Err(ApiError::unavailable(format!("cannot find node {node:?}: {e}")))),
    };
    let mut request = state
        .peers
        .post(format!("{url}/api/v1/feedback"))
        .timeout(std::time::Duration::from_secs(5))
        .header(RELAYED, state.config.id.as_str())
        .header("content-type", "application/json");
    if let Some(key) = credential {
        request = request.bearer_auth(key);
    }
    let sent = request.body(body).send().await;
    Some(match sent {
        Ok(resp) => {
            let status = axum::http::StatusCode::from_u16(resp.status().as_u16())
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            let bytes = resp.bytes().await.unwrap_or_default();
            Ok((status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response())
        }
        Err(e) => Err(ApiError::unavailable(format!("node {node:?} did not take the feedback: {e}"))),
    })
}

/// Where node `id` serves HTTP: from the mesh (members authenticate with the mesh
/// certificate) when this node runs one and knows it, else from control's directory.
async fn node_url(state: &AppState, id: &str) -> Result<Option<String>, String> {
    if let Some(mesh) = &state.mesh {
        let members = mesh.members().await;
        let known = members.iter().filter(|m| m.node == id).find_map(|m| m.info.as_ref());
        if let Some(record) = known {
            return Ok(Some(record.info.http_url.clone()));
        }
    }
    let Some(control) = ControlClient::of_node(state) else { return Ok(None) };
    control.node_url(id).await.map_err(|e| e.to_string())
}

/// 1 when the classifier's predicted class is `label` (an index, or a class name), else 0.
fn score_label(state: &AppState, served: &Served, label: &Value) -> Result<f64, ApiError> {
    let Some(predicted) = served.class else {
        return Err(ApiError::bad_request(format!(
            "model {:?} is not a classifier: send \"reward\", not \"label\"",
            served.model
        )));
    };
    let table = state.table.load();
    let classes = table
        .models
        .get(&served.model)
        .and_then(|slot| slot.versions().find(|m| m.manifest.version == served.version))
        .map(|m| match &m.manifest.spec.output {
            OutputSpec::Classifier { classes, .. } => classes.clone(),
            OutputSpec::Regressor { .. } => Vec::new(),
        })
        .unwrap_or_default();
    let index = match label {
        Value::Number(n) => n.as_u64().map(|i| i as usize),
        Value::String(name) => classes.iter().position(|c| c == name),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::bad_request(format!("label {label} is not a class index or one of {classes:?}"))
    })?;
    Ok(f64::from(u8::from(index == predicted)))
}
