//! Forwarding: a prediction for a model this node does not serve goes to the nearest live peer
//! that holds its live version warm (by QUIC's RTT estimate from the mesh), over HTTP/3 on a
//! QUIC connection kept per peer (checked against `ca_file`), or over the node's shared HTTP
//! client when the peer has no QUIC endpoint or HTTP/3 fails. The answer comes back as the
//! peer gave it, with `x-meridian-node` naming the peer. A forwarded request carries
//! `x-meridian-forwarded` and is never forwarded again (no loops).
//!
//! Every request header travels but hop-by-hop ones. Buffered bodies (predict, infer) try up
//! to [`MAX_TRIES`] peers within one request timeout, moving on after a connect failure, a
//! timeout or a 503 (or a 404 from a peer that placement expects but that does not hold the
//! model yet); a stream body goes to the nearest peer only, over HTTP.

use axum::body::Body;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestExt;

use super::Target;
use crate::serve::error::ApiError;
use crate::serve::AppState;

/// Set on a request one node forwards to another: the forwarding node's id.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-meridian-forwarded");
/// Set on every answer: the node that served it.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-meridian-node");
/// Peers tried for one buffered request.
pub const MAX_TRIES: usize = 3;

/// Request headers a forward does not carry: hop-by-hop ones, and those the relay sets itself.
const NOT_CARRIED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    "x-meridian-forwarded",
];
/// Answer headers of a peer that do not travel back (they describe its connection).
const HOP_BY_HOP_ANSWER: [&str; 4] = ["connection", "transfer-encoding", "keep-alive", "alt-svc"];

fn is_model_route(route: &str) -> bool {
    matches!(
        route,
        "/api/v1/models/{model}/predict"
            | "/api/v1/models/{model}/stream"
            | "/v2/models/{model}/infer"
            | "/v2/models/{model}/versions/{version}/infer"
            // KServe clients ask for metadata and readiness before they infer.
            | "/v2/models/{model}"
            | "/v2/models/{model}/ready"
            | "/v2/models/{model}/versions/{version}"
            | "/v2/models/{model}/versions/{version}/ready"
    )
}

/// A draining node takes no new predictions, on any transport: 503, so clients move on.
pub fn refuse_if_draining(state: &crate::node::NodeState) -> Result<(), ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::unavailable(format!("node {} is draining; use another node", state.config.id)));
    }
    Ok(())
}

/// The middleware (inside auth): a draining node refuses new predictions with 503; a request
/// for a model not in this node's table goes to a peer when one holds it.
pub async fn forward(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let Some(route) = route.filter(|r| is_model_route(r)) else { return next.run(request).await };
    if let Err(e) = refuse_if_draining(&state) {
        return e.into_response();
    }
    let params = request.extract_parts::<RawPathParams>().await.ok();
    let model = params.and_then(|p| p.iter().find(|(k, _)| *k == "model").map(|(_, v)| v.to_string()));
    let Some(model) = model else { return next.run(request).await };
    if !super::wants_peer(&state, &model) {
        return next.run(request).await;
    }
    let forwarded = request.headers().contains_key(FORWARDED);
    let targets = if forwarded { Vec::new() } else { super::targets(&state, &model).await };
    if targets.is_empty() {
        load_on_demand(&state, &model).await;
        return next.run(request).await; // served here, or the handler says why not (503)
    }
    let streaming = route.ends_with("/stream");
    send(&state, targets, request, streaming).await
}

/// An on-demand model nobody can serve: load it here in one background task per model (later
/// requests wait for the same load), waiting for it up to the request timeout; it stays loaded.
pub(crate) async fn load_on_demand(state: &AppState, model: &str) {
    let catalog = state.table.load().catalog.clone();
    if !catalog.models.contains_key(model) || catalog.placement(model) != meridian_gossip::Placement::OnDemand
    {
        return;
    }
    let first = state.demanded.lock().map(|mut d| d.insert(model.to_string())).unwrap_or(false);
    if first {
        tracing::info!(model, "loading an on-demand model for its first request here");
        let state = state.clone();
        tokio::spawn(async move {
            let control = crate::sync::control::ControlClient::of_node(&state);
            crate::sync::adopt::adopt(&state, (*catalog).clone(), control.as_ref()).await;
        });
    }
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_millis(state.config.request_timeout_ms);
    while !state.table.load().models.contains_key(model) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The headers a forward carries: the request's, less hop-by-hop ones, plus who forwarded.
fn carried(from: &axum::http::HeaderMap, me: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in from {
        if !NOT_CARRIED.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(me) = HeaderValue::from_str(me) {
        headers.insert(FORWARDED, me);
    }
    headers
}

/// A buffered request on its way to a peer.
struct Outgoing {
    method: axum::http::Method,
    path: String,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

async fn send(state: &AppState, targets: Vec<Target>, request: Request, streaming: bool) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let headers = carried(&parts.headers, &state.config.id);
    if streaming {
        // A stream lasts as long as its caller sends: no overall deadline (the peer bounds
        // each chunk; the client connects within its connect timeout).
        let Some(t) = targets.first() else { return ApiError::unavailable("no peer").into_response() };
        let url = format!("{}{path}", t.url.trim_end_matches('/'));
        let body = reqwest::Body::wrap_stream(body.into_data_stream());
        let sent = state.peers.request(parts.method, url).headers(headers).body(body).send().await;
        state.metrics.forwarded(&t.id, "http", if sent.is_ok() { "answered" } else { "failed" });
        return match sent {
            Ok(resp) => relay(resp),
            Err(e) => unreachable_peer(&[(t.id.clone(), e.to_string())]),
        };
    }
    let body = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            let limit = state.config.max_body_bytes;
            return ApiError::too_large(format!("body above max_body_bytes ({limit})")).into_response();
        }
    };
    let out = Outgoing { method: parts.method, path, headers, body };
    // One deadline for the whole forward, however many peers it tries.
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_millis(state.config.request_timeout_ms);
    let mut failures = Vec::new();
    for t in targets.iter().take(MAX_TRIES) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let (transport, answer) = match h3_link(state, t).await {
            Some((mesh, addr, link)) => ("h3", via_h3(mesh, addr, &link, &out, left).await),
            // No HTTP/3 to this peer (none, or its connect failed: nothing was sent): HTTP.
            None => ("http", via_http(state, t, &out, left).await),
        };
        let outcome = match &answer {
            // A peer expected by placement but not yet holding the model may not know it yet.
            Ok(r) if r.status() == axum::http::StatusCode::NOT_FOUND && !t.warm => "unavailable",
            Ok(r) if r.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            Ok(_) => "answered",
            Err(_) => "failed",
        };
        state.metrics.forwarded(&t.id, transport, outcome);
        match answer {
            Ok(r) if outcome == "answered" => return r,
            Ok(r) => failures.push((t.id.clone(), r.status().to_string())),
            Err(e) => failures.push((t.id.clone(), e)),
        }
        tracing::debug!(peer = %t.id, "forward failed; trying the next peer");
    }
    unreachable_peer(&failures)
}

/// The HTTP/3 connection kept to `target` (see [`super::Links`]); `None` when the peer has no
/// QUIC endpoint, this node no CA to check it with, or no connection could be made.
async fn h3_link<'a>(
    state: &'a AppState,
    target: &Target,
) -> Option<(&'a super::Mesh, std::net::SocketAddr, crate::client::H3Client)> {
    let (mesh, addr, ca) = (state.mesh.as_ref()?, target.quic?, state.config.ca_file.clone()?);
    let options = crate::client::ClientOptions {
        url: target.url.clone(),
        transport: crate::client::Transport::H3,
        ca: Some(ca),
        token: None,
        quic_addr: Some(addr),
        timeout: std::time::Duration::from_millis(state.config.request_timeout_ms),
    };
    let connect = crate::client::H3Client::connect(&options);
    match mesh.h3.get(addr, super::connect_timeout(state), connect).await {
        Ok(link) => Some((mesh, addr, link)),
        Err(e) => {
            tracing::debug!(peer = %target.id, error = %e, "no HTTP/3 link to peer; using HTTP");
            None
        }
    }
}

/// Relay over an HTTP/3 link. A failure drops the link (the next forward reconnects); the
/// request is not retried on this peer over HTTP, as the peer may have run it.
async fn via_h3(
    mesh: &super::Mesh,
    addr: std::net::SocketAddr,
    link: &crate::client::H3Client,
    out: &Outgoing,
    left: std::time::Duration,
) -> Result<Response, String> {
    let relayed = link.relay(out.method.clone(), &out.path, &out.headers, out.body.clone());
    match tokio::time::timeout(left, relayed).await {
        Ok(Ok((head, body))) => {
            let mut response = Response::from_parts(head, Body::from(body));
            // The peer's HTTP/3 version must not leak into our HTTP/1.1 or HTTP/2 answer.
            *response.version_mut() = axum::http::Version::default();
            for hop in HOP_BY_HOP_ANSWER {
                response.headers_mut().remove(hop);
            }
            Ok(response)
        }
        Ok(Err(e)) => {
            mesh.h3.forget(addr).await;
            Err(e.to_string())
        }
        Err(_) => Err(format!("no answer within {left:?}")),
    }
}

async fn via_http(
    state: &AppState,
    target: &Target,
    out: &Outgoing,
    left: std::time::Duration,
) -> Result<Response, String> {
    let url = format!("{}{}", target.url.trim_end_matches('/'), out.path);
    let request = state.peers.request(out.method.clone(), url).headers(out.headers.clone());
    request.body(out.body.clone()).timeout(left).send().await.map(relay).map_err(|e| e.to_string())
}

fn unreachable_peer(failures: &[(String, String)]) -> Response {
    let tried: Vec<String> = failures.iter().map(|(id, e)| format!("{id}: {e}")).collect();
    ApiError::unavailable(format!("no peer holding the model could answer ({})", tried.join("; ")))
        .into_response()
}

/// The peer's answer as ours: status, headers but hop-by-hop ones, the body streamed through.
fn relay(resp: reqwest::Response) -> Response {
    let mut out = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        if !HOP_BY_HOP_ANSWER.contains(&name.as_str()) {
            out = out.header(name.as_str(), value.as_bytes());
        }
    }
    out.body(Body::from_stream(resp.bytes_stream()))
        .unwrap_or_else(|e| ApiError::unavailable(format!("bad answer from peer: {e}")).into_response())
}

/// Name this node on every answer that does not already name another (a forwarded one).
pub async fn name_server(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if !response.headers().contains_key(SERVED_BY) {
        if let Ok(v) = HeaderValue::from_str(&state.config.id) {
            response.headers_mut().insert(SERVED_BY, v);
        }
    }
    response
}
