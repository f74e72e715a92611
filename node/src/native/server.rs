//! The node's side of the native protocol: authenticate the connection once (`HELLO`), then
//! serve each bidirectional stream as a request or a stream of row chunks, answered in order.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_models::InputBatch;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::code;
use super::frame::{decode_f32_rows, encode, Frame, FrameError, Kind, VERSION};
use super::io::{FrameReader, ReadError};
use crate::inference::LoadedModel;
use crate::serve::auth_hook::Session;
use crate::serve::error::ApiError;
use crate::serve::path::choose;
use crate::serve::stream::{start, Pending, DEPTH};
use crate::serve::AppState;

/// A connection that sends no `HELLO` within this is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// A JWT or an API key; the node's auth decides whether it is needed.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u32,
    pub node: String,
    pub region: String,
    pub max_frame_bytes: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Open {
    pub model: String,
    #[serde(default)]
    pub version: Option<u32>,
    /// The experiment unit (e.g. a user id): a stream goes to one arm.
    #[serde(default)]
    pub unit: Option<String>,
    /// Set by a node that relays the stream to a peer holding the model (never relayed again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_by: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResultFrame<P> {
    pub predictions: Vec<P>,
    pub model: String,
    pub model_version: u32,
    pub served_by: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// The HTTP status of the same failure, or a connection/stream code (below 16).
    pub code: u32,
    pub status: u16,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

pub fn error_frame(e: &ApiError) -> Bytes {
    let status = e.status.as_u16();
    let body = ErrorFrame {
        code: u32::from(status),
        status,
        error: e.message.clone(),
        retry_after_ms: e.retry_after.map(|s| u64::from(s) * 1000),
    };
    encode(Kind::Error, &serde_json::to_vec(&body).unwrap_or_default())
}

/// Serve one connection until the peer closes it or the node shuts down.
pub async fn serve_connection(state: AppState, conn: quinn::Connection) {
    let session = match tokio::time::timeout(HELLO_TIMEOUT, handshake(&state, &conn)).await {
        Ok(Ok(session)) => Arc::new(session),
        Ok(Err((c, reason))) => {
            tracing::debug!(peer = %conn.remote_address(), code = c, %reason, "native connection refused");
            conn.close(c.into(), reason.as_bytes());
            return;
        }
        Err(_) => {
            conn.close(code::HELLO_TIMEOUT.into(), b"no HELLO within 10 s");
            return;
        }
    };
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => { tokio::spawn(request(state.clone(), session.clone(), send, recv)); }
                Err(_) => break,
            },
            () = state.shutdown.cancelled() => {
                conn.close(code::SHUTTING_DOWN.into(), b"the node is shutting down");
                break;
            }
        }
    }
}

/// The first stream: `HELLO` in, `WELCOME` out. Errors: the code and reason to close with.
async fn handshake(state: &AppState, conn: &quinn::Connection) -> Result<Session, (u32, String)> {
    let (mut send, recv) = conn.accept_bi().await.map_err(|e| (code::PROTOCOL, e.to_string()))?;
    let mut reader = FrameReader::new(recv, 64 * 1024);
    let frame = match reader.next().await {
        Ok(Some(f)) if f.kind == Kind::Hello => f,
        Ok(Some(f)) => return Err((code::PROTOCOL, format!("expected HELLO, got {:?}", f.kind))),
        Ok(None) => return Err((code::PROTOCOL, "the stream ended before HELLO".into())),
        Err(e) => return Err((code::PROTOCOL, e.to_string())),
    };
    let hello: Hello =
        serde_json::from_slice(&frame.payload).map_err(|e| (code::PROTOCOL, format!("HELLO: {e}")))?;
    if hello.version != VERSION {
        return Err((
            code::UNSUPPORTED_VERSION,
            format!("version {} (this node speaks {VERSION})", hello.version),
        ));
    }
    let session = crate::serve::auth_hook::connection(state, hello.token.as_deref())
        .map_err(|e| (code::UNAUTHENTICATED, e.message))?;
    let welcome = Welcome {
        version: VERSION,
        node: state.config.id.clone(),
        region: state.config.region.clone(),
        max_frame_bytes: state.config.max_body_bytes,
    };
    let bytes = encode(Kind::Welcome, &serde_json::to_vec(&welcome).unwrap_or_default());
    send.write_all(&bytes).await.map_err(|e| (code::PROTOCOL, e.to_string()))?;
    let _ = send.finish();
    Ok(session)
}

type Item = Result<Pending, ApiError>;

/// One request stream: `OPEN`, then rows frames until the client finishes its side.
async fn request(
    state: AppState,
    session: Arc<Session>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let mut reader = FrameReader::new(recv, state.config.max_body_bytes);
    let model = match open(&state, &mut reader, &session).await {
        Ok(Some(Opened::Here(model))) => model,
        Ok(Some(Opened::Peer(open, peer))) => {
            if let Err(e) = crate::mesh::relay::relay(&state, open, peer, reader, send).await {
                tracing::debug!(error = %e, "native relay ended with an error");
            }
            return;
        }
        Ok(None) => return,
        Err((e, stop)) => {
            let _ = send.write_all(&error_frame(&e)).await;
            let _ = send.finish();
            if let Some(c) = stop {
                let _ = reader.into_inner().stop(c.into());
            }
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel::<Item>(DEPTH);
    let writer_state = state.clone();
    let (name, version) = (model.manifest.name.clone(), model.manifest.version);
    let writer = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            let frame = match item {
                Ok(pending) => match pending.finish(&writer_state).await {
                    Ok(predictions) => {
                        let body = ResultFrame {
                            predictions,
                            model: name.clone(),
                            model_version: version,
                            served_by: writer_state.config.id.clone(),
                        };
                        encode(Kind::Result, &serde_json::to_vec(&body).unwrap_or_default())
                    }
                    Err(e) => error_frame(&e),
                },
                Err(e) => error_frame(&e),
            };
            if send.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    let stop = read_rows(&state, &model, &mut reader, &session, &tx).await;
    drop(tx);
    let _ = writer.await;
    if let Some(c) = stop {
        let _ = reader.into_inner().stop(c.into());
    }
}

type OpenError = (ApiError, Option<u32>);

/// Where a request stream is served.
enum Opened {
    Here(Arc<LoadedModel>),
    /// Relayed to a peer that holds the model (this node does not).
    Peer(Open, crate::mesh::relay::Peer),
}

async fn open(
    state: &AppState,
    reader: &mut FrameReader<quinn::RecvStream>,
    session: &Session,
) -> Result<Option<Opened>, OpenError> {
    let frame = match reader.next().await {
        Ok(Some(f)) if f.kind == Kind::Open => f,
        Ok(Some(f)) => {
            let e = ApiError::bad_request(format!("a request stream starts with OPEN, not {:?}", f.kind));
            return Err((e, Some(code::PROTOCOL)));
        }
        Ok(None) => return Ok(None),
        Err(e) => return Err(read_error(&e)),
    };
    let open: Open = serde_json::from_slice(&frame.payload)
        .map_err(|e| (ApiError::bad_request(format!("OPEN: {e}")), None))?;
    crate::serve::auth_hook::permit(state, session, &open.model).map_err(|e| (e, None))?;
    crate::mesh::forward::refuse_if_draining(state).map_err(|e| (e, None))?;
    let resolve = |open: &Open| match open.version {
        Some(v) => crate::serve::path::resolve(state, &open.model, Some(v)),
        None => choose(state, &open.model, open.unit.as_deref(), rand_u64()).map(|(m, _)| m),
    };
    if let Ok(model) = resolve(&open) {
        return Ok(Some(Opened::Here(model)));
    }
    if let Some(peer) = crate::mesh::relay::peer_for(state, &open).await {
        return Ok(Some(Opened::Peer(open, peer)));
    }
    crate::mesh::forward::load_on_demand(state, &open.model).await;
    resolve(&open).map(|m| Some(Opened::Here(m))).map_err(|e| (e, None))
}

fn rand_u64() -> u64 {
    uuid::Uuid::new_v4().as_u128() as u64
}

fn read_error(e: &ReadError) -> OpenError {
    match e {
        ReadError::Frame(f @ FrameError::TooLarge { .. }) => {
            (ApiError::too_large(f.to_string()), Some(code::FRAME_TOO_LARGE))
        }
        ReadError::Frame(f) => (ApiError::bad_request(f.to_string()), Some(code::PROTOCOL)),
        ReadError::Io(io) => (ApiError::bad_request(io.to_string()), Some(code::PROTOCOL)),
    }
}

/// Queue every rows frame until the client finishes its side; the stop code when the stream
/// cannot continue.
async fn read_rows(
    state: &AppState,
    model: &Arc<LoadedModel>,
    reader: &mut FrameReader<quinn::RecvStream>,
    session: &Session,
    tx: &mpsc::Sender<Item>,
) -> Option<u32> {
    // Errors name the rows frame (1-based): the answers come one per frame, in order.
    let mut frames = 0usize;
    loop {
        let (item, stop) = match reader.next().await {
            Ok(Some(frame)) => match rows_of(model, &frame) {
                Ok(input) => match crate::serve::auth_hook::request(state, session, &model.manifest.name) {
                    Ok(()) => (start(state, model, input, "native").await, None),
                    Err(e) => (Err(e), None),
                },
                Err((mut e, stop)) => {
                    e.message = format!("rows frame {}: {}", frames + 1, e.message);
                    (Err(e), stop)
                }
            },
            Ok(None) => return None,
            Err(e) => {
                let (e, stop) = read_error(&e);
                (Err(e), stop)
            }
        };
        frames += 1;
        if tx.send(item).await.is_err() || stop.is_some() {
            return stop;
        }
    }
}

fn rows_of(model: &LoadedModel, frame: &Frame) -> Result<InputBatch, OpenError> {
    match frame.kind {
        Kind::RowsJson => {
            let rows: Vec<Map<String, Value>> = serde_json::from_slice(&frame.payload).map_err(|e| {
                (ApiError::bad_request(format!("ROWS_JSON: not an array of feature objects: {e}")), None)
            })?;
            if rows.is_empty() {
                return Err((ApiError::bad_request("ROWS_JSON: no rows"), None));
            }
            crate::serve::seed::plain_batch(model, &rows).map_err(|(_, e)| (e, None))
        }
        Kind::RowsF32 => {
            let (rows, cols, values) =
                decode_f32_rows(&frame.payload).map_err(|e| (ApiError::bad_request(e.to_string()), None))?;
            let width = model.width();
            if cols != width || rows == 0 {
                let msg = format!("ROWS_F32: {rows} rows × {cols} columns; model {:?} takes {width} columns and at least one row", model.manifest.name);
                return Err((ApiError::bad_request(msg), None));
            }
            Ok(InputBatch { rows, width, values })
        }
        other => Err((
            ApiError::bad_request(format!("expected ROWS_JSON or ROWS_F32, got {other:?}")),
            Some(code::PROTOCOL),
        )),
    }
}
