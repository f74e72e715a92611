//! The native protocol's client side: one connection, `HELLO` once, a stream per request.

use bytes::Bytes;
use std::time::Duration;
use tokio::sync::mpsc;

use super::{quic_connect, Answer, ClientError, ClientOptions, Prediction, Rows};
use crate::native::frame::{encode, encode_f32_rows, Frame, Kind, VERSION};
use crate::native::io::FrameReader;
use crate::native::server::{ErrorFrame, Hello, Open, Welcome};

/// Answers larger than this are refused.
const MAX_ANSWER: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct NativeClient {
    conn: quinn::Connection,
    timeout: std::time::Duration,
    pub welcome: std::sync::Arc<Welcome>,
}

fn conn_error(e: impl std::fmt::Display) -> ClientError {
    ClientError::Connection(e.to_string())
}

fn error_of(frame: &Frame) -> ClientError {
    match serde_json::from_slice::<ErrorFrame>(&frame.payload) {
        Ok(e) => ClientError::Status { status: e.status, message: e.error, retry_after_ms: e.retry_after_ms },
        Err(e) => ClientError::Protocol(format!("ERROR frame: {e}")),
    }
}

/// The frame carrying `rows`.
fn rows_frame(rows: &Rows) -> Result<Bytes, ClientError> {
    Ok(match rows {
        Rows::Json(rows) => {
            encode(Kind::RowsJson, &serde_json::to_vec(rows).map_err(|e| ClientError::Setup(e.to_string()))?)
        }
        Rows::F32 { cols, values } => {
            let n = values.len().checked_div(*cols).unwrap_or(0);
            encode(Kind::RowsF32, &encode_f32_rows(n as u32, *cols as u32, values))
        }
    })
}

impl NativeClient {
    pub async fn connect(options: &ClientOptions) -> Result<Self, ClientError> {
        let conn = quic_connect(options, crate::transport::tls::ALPN_NATIVE).await?;
        let hello = Hello { version: VERSION, token: options.token.clone() };
        let handshake = async {
            let (mut send, recv) = conn.open_bi().await.map_err(conn_error)?;
            let payload = serde_json::to_vec(&hello).map_err(|e| ClientError::Setup(e.to_string()))?;
            send.write_all(&encode(Kind::Hello, &payload)).await.map_err(conn_error)?;
            let _ = send.finish();
            let mut reader = FrameReader::new(recv, 64 * 1024);
            match reader.next().await {
                Ok(Some(f)) if f.kind == Kind::Welcome => serde_json::from_slice::<Welcome>(&f.payload)
                    .map_err(|e| ClientError::Protocol(format!("WELCOME: {e}"))),
                Ok(Some(f)) if f.kind == Kind::Error => Err(error_of(&f)),
                Ok(Some(f)) => Err(ClientError::Protocol(format!("expected WELCOME, got {:?}", f.kind))),
                Ok(None) => Err(ClientError::Protocol("no WELCOME".into())),
                // A refused HELLO closes the connection with a code and the reason.
                Err(_) => Err(match conn.close_reason() {
                    Some(reason) => refused(&reason),
                    None => refused(&conn.closed().await),
                }),
            }
        };
        let welcome = match tokio::time::timeout(options.timeout, handshake).await {
            Ok(result) => result?,
            Err(_) => return Err(ClientError::Timeout(options.timeout)),
        };
        Ok(Self { conn, timeout: options.timeout, welcome: std::sync::Arc::new(welcome) })
    }

    /// A new request stream on the authenticated connection, for a caller that writes and
    /// reads the frames itself (a node relaying a stream to a peer).
    pub async fn open_raw(&self) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        self.conn.open_bi().await.map_err(|e| self.lost(e))
    }

    pub async fn predict(&self, model: &str, rows: Rows) -> Result<Answer, ClientError> {
        let work = async {
            let (mut send, recv) = self.conn.open_bi().await.map_err(|e| self.lost(e))?;
            let mut wire = open_frame(model)?.to_vec();
            wire.extend_from_slice(&rows_frame(&rows)?);
            // A node that refuses the request (a frame over its limit, say) answers ERROR and
            // stops reading: the write then fails, and the answer says why.
            let written = send.write_all(&wire).await;
            let _ = send.finish();
            let mut reader = FrameReader::new(recv, MAX_ANSWER);
            if let Err(e) = written {
                return match tokio::time::timeout(Duration::from_secs(2), reader.next()).await {
                    Ok(Ok(Some(f))) if f.kind == Kind::Error => Err(error_of(&f)),
                    _ => Err(self.lost(e)),
                };
            }
            match reader.next().await {
                Ok(Some(f)) if f.kind == Kind::Result => serde_json::from_slice(&f.payload)
                    .map_err(|e| ClientError::Protocol(format!("RESULT: {e}"))),
                Ok(Some(f)) if f.kind == Kind::Error => Err(error_of(&f)),
                Ok(Some(f)) => Err(ClientError::Protocol(format!("expected RESULT, got {:?}", f.kind))),
                Ok(None) => Err(ClientError::Protocol("the stream ended without an answer".into())),
                Err(e) => Err(self.lost(e)),
            }
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| ClientError::Timeout(self.timeout))?
    }

    /// An error explained by the connection's close reason when it is closed.
    fn lost(&self, e: impl std::fmt::Display) -> ClientError {
        match self.conn.close_reason() {
            Some(reason) => refused(&reason),
            None => conn_error(e),
        }
    }

    pub async fn stream(
        &self,
        model: &str,
        mut chunks: mpsc::Receiver<Rows>,
    ) -> Result<mpsc::Receiver<Result<Vec<Prediction>, ClientError>>, ClientError> {
        let (mut send, recv) = self.conn.open_bi().await.map_err(|e| self.lost(e))?;
        send.write_all(&open_frame(model)?).await.map_err(|e| self.lost(e))?;
        let (tx, rx) = mpsc::channel(super::super::serve::stream::DEPTH);
        let writer_tx = tx.clone();
        tokio::spawn(async move {
            while let Some(rows) = chunks.recv().await {
                let frame = match rows_frame(&rows) {
                    Ok(f) => f,
                    Err(e) => return writer_tx.send(Err(e)).await.unwrap_or(()),
                };
                if send.write_all(&frame).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
        });
        tokio::spawn(async move {
            let mut reader = FrameReader::new(recv, MAX_ANSWER);
            loop {
                let item = match reader.next().await {
                    Ok(Some(f)) if f.kind == Kind::Result => serde_json::from_slice::<Answer>(&f.payload)
                        .map(|a| a.predictions)
                        .map_err(|e| ClientError::Protocol(format!("RESULT: {e}"))),
                    Ok(Some(f)) if f.kind == Kind::Error => Err(error_of(&f)),
                    Ok(Some(f)) => Err(ClientError::Protocol(format!("unexpected {:?}", f.kind))),
                    Ok(None) => return,
                    Err(e) => Err(conn_error(e)),
                };
                if !super::forward(&tx, item).await {
                    return;
                }
            }
        });
        Ok(rx)
    }
}

fn open_frame(model: &str) -> Result<Bytes, ClientError> {
    let open = Open { model: model.to_string(), version: None, unit: None, forwarded_by: None };
    Ok(encode(Kind::Open, &serde_json::to_vec(&open).map_err(|e| ClientError::Setup(e.to_string()))?))
}

/// A closed connection as an error: the node's code and reason when it closed it.
fn refused(reason: &quinn::ConnectionError) -> ClientError {
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            let message = String::from_utf8_lossy(&close.reason).into_owned();
            let status = match code as u32 {
                crate::native::code::UNAUTHENTICATED => 401,
                crate::native::code::FRAME_TOO_LARGE => 413,
                crate::native::code::SHUTTING_DOWN => 503,
                _ => 400,
            };
            ClientError::Status { status, message: format!("{message} (code {code})"), retry_after_ms: None }
        }
        other => ClientError::Connection(other.to_string()),
    }
}
