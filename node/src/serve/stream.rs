//! Streaming inference, shared by `POST /api/v1/models/{model}/stream` (NDJSON in, NDJSON out,
//! on HTTP/1.1 and HTTP/3) and the native QUIC protocol: rows arrive in chunks, each chunk is
//! queued on the model's workers as it arrives, and predictions leave in order as they are
//! computed. At most [`DEPTH`] chunks are in flight per stream; past that the reader stops
//! reading, so a client that does not read its answers stalls its own sending (TCP or QUIC flow
//! control) instead of making the node buffer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use meridian_models::interpret::{predictions, Prediction};
use meridian_models::InputBatch;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::error::ApiError;
use super::path::{parse_version, resolve, Observation};
use super::AppState;
use crate::inference::worker::JobResult;
use crate::inference::{LoadedModel, SubmitError};
use crate::node::NodeState;

/// Chunks in flight per stream.
pub const DEPTH: usize = 8;
/// Rows the NDJSON reader gathers into one chunk at most.
const CHUNK_ROWS: usize = 256;

/// A chunk queued on a model, awaiting its answer.
pub struct Pending {
    reply: oneshot::Receiver<JobResult>,
    model: Arc<LoadedModel>,
    obs: Observation,
    rows: usize,
}

/// Queue `input` on `model`. A full queue makes a stream wait (it is flow-controlled), not fail;
/// the wait is bounded by the request timeout.
pub async fn start(
    state: &NodeState,
    model: &Arc<LoadedModel>,
    input: InputBatch,
    api: &'static str,
) -> Result<Pending, ApiError> {
    let mut obs = Observation::start(api);
    obs.served_by(model, None);
    let limit = state.config.max_rows_per_request;
    if input.rows > limit {
        return Err(ApiError::too_large(format!("{} rows in one chunk; the limit is {limit}", input.rows)));
    }
    let rows = input.rows;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(state.config.request_timeout_ms);
    let mut input = Some(input);
    loop {
        if state.shutdown.is_cancelled() {
            return Err(ApiError::unavailable("this node is shutting down"));
        }
        let Some(batch) = input.take() else { return Err(ApiError::unavailable("no input")) };
        match model.pool.try_submit(batch) {
            Ok(reply) => return Ok(Pending { reply, model: model.clone(), obs, rows }),
            Err((SubmitError::QueueFull(_), back)) if tokio::time::Instant::now() < deadline => {
                input = Some(back);
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

impl Pending {
    /// The chunk's predictions, in row order; the outcome is recorded in the metrics.
    pub async fn finish(self, state: &NodeState) -> Result<Vec<Prediction>, ApiError> {
        let timeout = Duration::from_millis(state.config.request_timeout_ms);
        let result = match tokio::time::timeout(timeout, self.reply).await {
            Ok(Ok(Ok(computed))) => {
                predictions(&self.model.manifest.spec.output, &computed.out).map_err(ApiError::from)
            }
            Ok(Ok(Err(e))) => Err(ApiError::from(e)),
            Ok(Err(_)) => Err(ApiError::unavailable("the model was unloaded while this stream ran")),
            Err(_) => Err(ApiError::unavailable(format!("no answer within {} ms", timeout.as_millis()))),
        };
        let code = result.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200);
        self.obs.record(state, code, if code == 200 { self.rows } else { 0 });
        result
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    version: Option<String>,
}

/// `POST /api/v1/models/{model}/stream`: one JSON object of features per line in, one
/// prediction per line out, in order. An error ends the output with `{"error", "line"}`.
pub async fn stream(
    State(state): State<AppState>,
    Path(model): Path<String>,
    Query(query): Query<StreamQuery>,
    body: Body,
) -> Response {
    let version = match query.version.as_deref().map(parse_version).transpose() {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let model = match resolve(&state, &model, version) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = mpsc::channel::<Result<Pending, (usize, ApiError)>>(DEPTH);
    tokio::spawn(read_ndjson(state.clone(), model, body, tx));
    let out = futures_util::stream::unfold((rx, state, false), |(mut rx, state, done)| async move {
        if done {
            return None;
        }
        let (bytes, done) = match rx.recv().await? {
            Ok(pending) => match pending.finish(&state).await {
                Ok(predictions) => (ndjson(&predictions), false),
                Err(e) => (error_line(&e, None), true),
            },
            Err((line, e)) => (error_line(&e, Some(line)), true),
        };
        Some((Ok::<_, std::convert::Infallible>(bytes), (rx, state, done)))
    });
    let mut response = Body::from_stream(out).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    response
}

fn ndjson(predictions: &[Prediction]) -> Bytes {
    let mut out = Vec::with_capacity(predictions.len() * 48);
    for p in predictions {
        let _ = serde_json::to_writer(&mut out, p);
        out.push(b'\n');
    }
    Bytes::from(out)
}

fn error_line(e: &ApiError, line: Option<usize>) -> Bytes {
    let mut v = serde_json::json!({ "error": e.message, "status": e.status.as_u16() });
    if let Some(line) = line {
        v["line"] = line.into();
    }
    let mut out = serde_json::to_vec(&v).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// Split the body into lines, gather them into chunks (up to [`CHUNK_ROWS`], or what has
/// arrived), and queue each chunk. Stops at the first error or when the answer is dropped.
async fn read_ndjson(
    state: AppState,
    model: Arc<LoadedModel>,
    body: Body,
    tx: mpsc::Sender<Result<Pending, (usize, ApiError)>>,
) {
    let max_line = state.config.max_body_bytes;
    let mut data = body.into_data_stream();
    // Each gathered row with its line number (blank lines are skipped, so they differ).
    let (mut buf, mut rows, mut line_no) =
        (BytesMut::new(), Vec::<(usize, Map<String, Value>)>::new(), 0usize);
    loop {
        let next = data.next().await;
        let ended = match next {
            Some(Ok(bytes)) => {
                buf.extend_from_slice(&bytes);
                false
            }
            Some(Err(e)) => {
                let _ = tx.send(Err((line_no + 1, ApiError::bad_request(format!("body: {e}"))))).await;
                return;
            }
            None => true,
        };
        if ended && !buf.is_empty() && !buf.ends_with(b"\n") {
            buf.extend_from_slice(b"\n");
        }
        while let Some(at) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(at + 1);
            line_no += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Map<String, Value>>(text) {
                Ok(row) => rows.push((line_no, row)),
                Err(e) => {
                    // The lines before it are answered first.
                    if !queue(&state, &model, &mut rows, &tx).await {
                        return;
                    }
                    let e =
                        ApiError::bad_request(format!("line {line_no}: not a JSON object of features: {e}"));
                    let _ = tx.send(Err((line_no, e))).await;
                    return;
                }
            }
            if rows.len() >= CHUNK_ROWS && !queue(&state, &model, &mut rows, &tx).await {
                return;
            }
        }
        if buf.len() > max_line {
            if !queue(&state, &model, &mut rows, &tx).await {
                return;
            }
            let e = ApiError::too_large(format!("line {} is longer than {max_line} bytes", line_no + 1));
            let _ = tx.send(Err((line_no + 1, e))).await;
            return;
        }
        if !queue(&state, &model, &mut rows, &tx).await {
            return;
        }
        if ended {
            return;
        }
    }
}

/// Queue the gathered rows as one chunk (nothing when there are none); false when the stream
/// must stop. A row the model refuses ends the stream with its line, after the rows before it
/// in the chunk were queued, so every line before the bad one is answered.
async fn queue(
    state: &NodeState,
    model: &Arc<LoadedModel>,
    rows: &mut Vec<(usize, Map<String, Value>)>,
    tx: &mpsc::Sender<Result<Pending, (usize, ApiError)>>,
) -> bool {
    if rows.is_empty() {
        return true;
    }
    let (lines, chunk): (Vec<usize>, Vec<Map<String, Value>>) = std::mem::take(rows).into_iter().unzip();
    let (good, refused) = match super::seed::plain_batch(model, &chunk) {
        Ok(input) => (Some(input), None),
        Err((i, e)) => {
            let before = if i == 0 { None } else { super::seed::plain_batch(model, &chunk[..i]).ok() };
            (before, Some((lines[i], on_line(e, i, lines[i]))))
        }
    };
    if let Some(input) = good {
        let pending = start(state, model, input, "stream").await.map_err(|e| (lines[0], e));
        let failed = pending.is_err();
        if tx.send(pending).await.is_err() || failed {
            return false;
        }
    }
    match refused {
        Some(error) => {
            let _ = tx.send(Err(error)).await;
            false
        }
        None => true,
    }
}

/// A chunk's error about its row `i` (`rows[i]: ...`) → `line N: ...` in the stream.
fn on_line(mut e: ApiError, i: usize, line: usize) -> ApiError {
    if let Some(tail) = e.message.strip_prefix(&format!("rows[{i}]")) {
        e.message = format!("line {line}{tail}");
    }
    e
}
