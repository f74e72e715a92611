//! The Rust client of a node's prediction APIs, over the native QUIC protocol, HTTP/3 or
//! HTTP/1.1 (TLS or, for local development, plaintext): unary predictions and streams. The
//! `meridian` CLI and the load generator use it. Does network I/O.
//!
//! - [`Client`]: one node, one transport.
//! - [`MeshClient`] ([`mesh`]): the nodes of a mesh, nearest first, moving on to the next when
//!   one cannot answer; its decisions, without I/O, are in [`failover`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), meridian_node::client::ClientError> {
//! use meridian_node::client::{Client, ClientOptions, Rows, Transport};
//! let client = Client::connect(ClientOptions {
//!     url: "https://127.0.0.1:7071".into(),
//!     transport: Transport::Native,
//!     ca: Some("data/certs/ca.pem".into()),
//!     ..Default::default()
//! }).await?;
//! let answer = client.predict("breast-cancer-mlp", Rows::F32 { cols: 30, values: vec![0.0; 30] }).await?;
//! println!("{:?}", answer.predictions);
//! # Ok(()) }
//! ```

pub mod failover;
mod h3;
mod http1;
pub mod mesh;
mod native;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

pub use crate::native::server::ErrorFrame;
pub use failover::Candidate;
pub use h3::H3Client;
pub use mesh::{MeshClient, MeshOptions};
pub use native::NativeClient;

/// The response header naming the node that answered a prediction.
pub const SERVED_BY_HEADER: &str = "x-meridian-node";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The native protocol over QUIC (ALPN `meridian/1`).
    #[default]
    Native,
    /// HTTP/3 over QUIC.
    H3,
    /// HTTP/1.1 over TCP (TLS for `https://` URLs).
    Http1,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" | "quic" => Ok(Self::Native),
            "h3" | "http3" => Ok(Self::H3),
            "http1" | "h1" | "http" => Ok(Self::Http1),
            _ => Err(format!("transport {s:?}: use native, h3 or http1")),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::H3 => "h3",
            Self::Http1 => "http1",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The node: `https://host:port` (`http://` only for HTTP/1.1 to a development node). QUIC
    /// uses the same host and port over UDP unless `quic_addr` says otherwise.
    pub url: String,
    pub transport: Transport,
    /// PEM file of the CA to trust (e.g. the development CA of `meridian up`).
    pub ca: Option<PathBuf>,
    /// A JWT or API key.
    pub token: Option<String>,
    /// Where the node's QUIC endpoint is, when not at the URL's host and port.
    pub quic_addr: Option<SocketAddr>,
    /// Bound on connecting and on each request.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            url: "https://127.0.0.1:7071".into(),
            transport: Transport::Native,
            ca: None,
            token: None,
            quic_addr: None,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The node answered with an error.
    #[error("{status}: {message}")]
    Status { status: u16, message: String, retry_after_ms: Option<u64> },
    #[error("the node broke the protocol: {0}")]
    Protocol(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection: {0}")]
    Connection(String),
    /// No node to call: a [`MeshClient`] whose mesh has none alive and not draining.
    #[error("no node available: {0}")]
    Unavailable(String),
}

impl ClientError {
    /// The HTTP status of an answered error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Rows to predict: named features (JSON) or a dense f32 matrix in the model's feature order
/// (native protocol only).
#[derive(Debug, Clone)]
pub enum Rows {
    Json(Vec<Map<String, Value>>),
    F32 { cols: usize, values: Vec<f32> },
}

impl Rows {
    pub fn len(&self) -> usize {
        match self {
            Rows::Json(rows) => rows.len(),
            Rows::F32 { cols, values } => values.len().checked_div(*cols).unwrap_or(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub prediction: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// Predictions for the rows of one request or one stream chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub predictions: Vec<Prediction>,
    pub model: String,
    pub model_version: u32,
    pub served_by: String,
}

/// An answer to [`Client::post_full`].
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    pub status: u16,
    pub body: bytes::Bytes,
    /// The node that served it: its `x-meridian-node` header, when it sent one. A
    /// [`MeshClient`] fills in the node it called when the header is absent.
    pub node: Option<String>,
}

/// A connected client. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub enum Client {
    Native(native::NativeClient),
    H3(h3::H3Client),
    Http1(http1::Http1Client),
}

impl Client {
    pub async fn connect(options: ClientOptions) -> Result<Self, ClientError> {
        Ok(match options.transport {
            Transport::Native => Client::Native(native::NativeClient::connect(&options).await?),
            Transport::H3 => Client::H3(h3::H3Client::connect(&options).await?),
            Transport::Http1 => Client::Http1(http1::Http1Client::new(&options)?),
        })
    }

    /// Predict `rows` with the live version of `model` (one request).
    pub async fn predict(&self, model: &str, rows: Rows) -> Result<Answer, ClientError> {
        if let Client::Native(c) = self {
            return c.predict(model, rows).await;
        }
        let body = serde_json::to_vec(&seed_body(&rows)?).map_err(|e| ClientError::Setup(e.to_string()))?;
        let posted =
            self.post_full(&format!("/api/v1/models/{}/predict", segment(model)), body.into()).await?;
        parse_seed(posted.status, &posted.body)
    }

    /// Send a raw request body to a path (`/v2/models/m/infer`, ...) over HTTP/3 or HTTP/1.1:
    /// the status and the body. For the load generator and tests of one route on every transport.
    pub async fn post(&self, path: &str, body: bytes::Bytes) -> Result<(u16, bytes::Bytes), ClientError> {
        self.post_full(path, body).await.map(|p| (p.status, p.body))
    }

    /// [`Self::post`], with the node that served the answer (its `x-meridian-node` header).
    pub async fn post_full(&self, path: &str, body: bytes::Bytes) -> Result<Posted, ClientError> {
        match self {
            Client::Native(_) => Err(ClientError::Setup("post() is for the HTTP transports".into())),
            Client::H3(c) => c.post(path, body).await,
            Client::Http1(c) => c.post(path, body).await,
        }
    }

    /// Stream rows to `model`: chunks go out as they come from `chunks`, answers come back in
    /// order on the returned channel (one per chunk on the native protocol; per line over
    /// HTTP, gathered by arrival). The channel ends after the last answer or the first error.
    pub async fn stream(
        &self,
        model: &str,
        chunks: mpsc::Receiver<Rows>,
    ) -> Result<mpsc::Receiver<Result<Vec<Prediction>, ClientError>>, ClientError> {
        match self {
            Client::Native(c) => c.stream(model, chunks).await,
            Client::H3(c) => c.stream(model, chunks).await,
            Client::Http1(c) => c.stream(model, chunks).await,
        }
    }
}

/// The seed API's body for rows.
fn seed_body(rows: &Rows) -> Result<Value, ClientError> {
    match rows {
        Rows::Json(rows) => Ok(serde_json::json!({ "rows": rows })),
        Rows::F32 { .. } => Err(ClientError::Setup(
            "f32 rows go over the native protocol; over HTTP send named features".into(),
        )),
    }
}

/// A seed API answer (`{"predictions": [...], "model", ...}` or one-row form) or its error body.
fn parse_seed(status: u16, body: &[u8]) -> Result<Answer, ClientError> {
    if !(200..300).contains(&status) {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        return Err(ClientError::Status { status, message, retry_after_ms: None });
    }
    serde_json::from_slice(body).map_err(|e| ClientError::Protocol(format!("predict answer: {e}")))
}

/// NDJSON lines of rows for the HTTP stream route.
fn ndjson(rows: &Rows) -> Result<bytes::Bytes, ClientError> {
    let Rows::Json(rows) = rows else {
        return Err(ClientError::Setup("f32 rows stream over the native protocol only".into()));
    };
    let mut out = Vec::with_capacity(rows.len() * 64);
    for row in rows {
        serde_json::to_writer(&mut out, row).map_err(|e| ClientError::Setup(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out.into())
}

/// One line of the HTTP stream's answer: a prediction or the error that ended it.
fn stream_line(line: &[u8]) -> Result<Prediction, ClientError> {
    let v: Value =
        serde_json::from_slice(line).map_err(|e| ClientError::Protocol(format!("stream line: {e}")))?;
    if let Some(error) = v.get("error") {
        let status = v["status"].as_u64().unwrap_or(500) as u16;
        let message = error.as_str().unwrap_or_default().to_string();
        let message = match v.get("line") {
            Some(line) => format!("{message} (line {line})"),
            None => message,
        };
        return Err(ClientError::Status { status, message, retry_after_ms: None });
    }
    serde_json::from_value(v).map_err(|e| ClientError::Protocol(format!("stream line: {e}")))
}

/// NDJSON lines split across chunks → predictions, as lines complete.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    buf: BytesMut,
}

impl Lines {
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<Prediction>, ClientError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
            let line = self.buf.split_to(at + 1);
            if line.len() > 1 {
                out.push(stream_line(&line[..line.len() - 1])?);
            }
        }
        if self.buf.len() > h3::MAX_ANSWER {
            return Err(ClientError::Protocol("an answer line over 64 MiB".into()));
        }
        Ok(out)
    }
}

/// Pass one stream answer on to the caller; false when the stream is over (an error, or the
/// caller gone). Reads that completed no line are not passed on.
async fn forward(
    tx: &mpsc::Sender<Result<Vec<Prediction>, ClientError>>,
    item: Result<Vec<Prediction>, ClientError>,
) -> bool {
    if matches!(&item, Ok(v) if v.is_empty()) {
        return true;
    }
    let stop = item.is_err();
    tx.send(item).await.is_ok() && !stop
}

/// Host and port of a URL (`https://host:port/...`).
fn host_port(url: &str) -> Result<(String, u16), ClientError> {
    let bad = || ClientError::Setup(format!("URL {url:?} is not http(s)://host:port"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let authority = rest.split('/').next().ok_or_else(bad)?;
    let default = if scheme == "https" { 443 } else { 80 };
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            let port = port.parse().map_err(|_| bad())?;
            Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
        }
        _ => Ok((authority.to_string(), default)),
    }
}

/// The rustls client config for `options` (its CA, TLS 1.3) offering `alpn`.
fn tls_config(options: &ClientOptions, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, ClientError> {
    let roots = match &options.ca {
        Some(path) => {
            crate::transport::tls::read_certs(path).map_err(|e| ClientError::Setup(e.to_string()))?
        }
        None => Vec::new(),
    };
    crate::transport::tls::client_config(&roots, alpn).map_err(|e| ClientError::Setup(e.to_string()))
}

/// A QUIC connection to the node with `alpn`.
/// How long a client keeps an idle pooled connection: under the listeners' header timeout
/// (`header_timeout_ms`, 10 s by default), which closes idle keep-alive connections, so a
/// request is never sent on a connection the node is closing.
pub const POOL_IDLE: Duration = Duration::from_secs(5);

/// Longest wait for a node to answer a connection (TCP or QUIC handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn quic_connect(options: &ClientOptions, alpn: &[u8]) -> Result<quinn::Connection, ClientError> {
    let (host, port) = host_port(&options.url)?;
    let addr = match options.quic_addr {
        Some(a) => a,
        None => tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(|| ClientError::Connect { url: options.url.clone(), reason: "no address".into() })?,
    };
    let tls = tls_config(options, &[alpn])?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(std::sync::Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    config.transport_config(std::sync::Arc::new(transport));
    let bind: SocketAddr = if addr.is_ipv6() { "[::]:0".parse() } else { "0.0.0.0:0".parse() }
        .map_err(|_| ClientError::Setup("bind address".into()))?;
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| ClientError::Setup(e.to_string()))?;
    endpoint.set_default_client_config(config);
    let connect = |reason: String| ClientError::Connect { url: options.url.clone(), reason };
    let connecting = endpoint.connect(addr, &host).map_err(|e| connect(e.to_string()))?;
    // Like HTTP/1.1's connect timeout: a node that does not answer the handshake is not there.
    let limit = CONNECT_TIMEOUT.min(options.timeout);
    match tokio::time::timeout(limit, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(connect(e.to_string())),
        Err(_) => Err(connect(format!("no QUIC handshake with {addr} within {} s", limit.as_secs_f64()))),
    }
}

/// Characters a URL path segment keeps as they are: RFC 3986's unreserved ones.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `name` as one URL path segment: `/`, `?`, `#`, `%` and the rest escaped, so a name can
/// never reach another route. `.` and `..` cannot be sent at all (URL parsing resolves them,
/// escaped or not); names of models, views and experiments never start with '.'.
pub fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

#[cfg(test)]
mod segment_tests {
    #[test]
    fn names_stay_one_path_segment() {
        assert_eq!(super::segment("breast-cancer-mlp_v2.1~x"), "breast-cancer-mlp_v2.1~x");
        assert_eq!(super::segment("nosuch/../cancer"), "nosuch%2F..%2Fcancer");
        assert_eq!(super::segment("a?b#c%d e"), "a%3Fb%23c%25d%20e");
    }
}
