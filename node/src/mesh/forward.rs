//! Forwarding: a prediction for a model this node does not serve goes to the nearest live peer
//! that holds its live version warm (by QUIC's RTT estimate from the mesh), over HTTP/3 on a
//! QUIC connection kept per peer (checked against `ca_file`), or over the node's shared HTTP
//! client when the peer has no QUIC endpoint or HTTP/3 fails. The answer comes back as the
//! peer gave it, with `x-meridian-node` naming the peer. A forwarded request carries
//! `x-meridian-forwarded` and is never forwarded again (no loops).
//!
//! Buffered bodies (predict, infer) try up to [`MAX_TRIES`] peers, moving on after a connect
//! failure, a timeout or a 503; a stream body goes to the nearest peer only, over HTTP.

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

/// Request headers a forward carries (the rest are hop-by-hop or describe this connection).
const CARRIED: [&str; 6] = [
    "content-type",
    "authorization",
    "accept",
    "x-request-id",
    "x-meridian-unit",
    "inference-header-content-length",
];

fn is_model_route(route: &str) -> bool {
    matches!(
        route,
        "/api/v1/models/{model}/predict"
            | "/api/v1/models/{model}/stream"
            | "/v2/models/{model}/infer"
            | "/v2/models/{model}/versions/{version}/infer"
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
    if state.table.load().models.contains_key(&model) {
        return next.run(request).await;
    }
    let forwarded = request.headers().contains_key(FORWARDED);
    let targets = if forwarded { Vec::new() } else { super::targets(&state, &model).await };
    if targets.is_empty() {
        load_on_demand(&state, &model).await;
        return next.run(request).await; // served here, or the handler says why not (404, 503)
    }
    let streaming = route.ends_with("/stream");
    send(&state, targets, request, streaming).await
}

/// An on-demand model nobody can serve: load it here (bounded by the request timeout), and
/// keep it loaded from now on.
async fn load_on_demand(state: &AppState, model: &str) {
    let catalog = state.table.load().catalog.clone();
    if !catalog.models.contains_key(model) || catalog.placement(model) != meridian_gossip::Placement::OnDemand
    {
        return;
    }
    if let Ok(mut demanded) = state.demanded.lock() {
        demanded.insert(model.to_string());
    }
    tracing::info!(model, "loading an on-demand model for its first request here");
    let control =
        state.config.control_url.as_deref().map(|url| {
            crate::sync::control::ControlClient::with_client(url, state.peers.clone(), &state.config)
        });
    let timeout = std::time::Duration::from_millis(state.config.request_timeout_ms);
    let adopt = crate::sync::adopt::adopt(state, (*catalog).clone(), control.as_ref());
    if tokio::time::timeout(timeout, adopt).await.is_err() {
        tracing::warn!(model, "on-demand load still running after the request timeout");
    }
}

async fn send(state: &AppState, targets: Vec<Target>, request: Request, streaming: bool) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let mut headers = reqwest::header::HeaderMap::new();
    for name in CARRIED {
        if let Some(v) = parts.headers.get(name) {
            headers.insert(name, v.clone());
        }
    }
    if let Ok(me) = HeaderValue::from_str(&state.config.id) {
        headers.insert(FORWARDED, me);
    }
    let timeout = std::time::Duration::from_millis(state.config.request_timeout_ms);
    let build = |t: &Target| {
        state
            .peers
            .request(parts.method.clone(), format!("{}{path}", t.url.trim_end_matches('/')))
            .headers(headers.clone())
            .timeout(timeout)
    };
    if streaming {
        let Some(t) = targets.first() else { return ApiError::unavailable("no peer").into_response() };
        let body = reqwest::Body::wrap_stream(body.into_data_stream());
        return match build(t).body(body).send().await {
            Ok(resp) => {
                state.metrics.forwarded(&t.id, "http", "answered");
                relay(resp)
            }
            Err(e) => {
                state.metrics.forwarded(&t.id, "http", "failed");
                unreachable_peer(&[(t.id.clone(), e.to_string())])
            }
        };
    }
    let bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::too_large(format!(
                "body above max_body_bytes ({})",
                state.config.max_body_bytes
            ))
            .into_response()
        }
    };
    let mut failures = Vec::new();
    for t in targets.iter().take(MAX_TRIES) {
        let h3 = via_h3(state, t, &parts.method, &path, &headers, bytes.clone()).await;
        if let Some(Err(e)) = &h3 {
            state.metrics.forwarded(&t.id, "h3", "failed");
            tracing::debug!(peer = %t.id, error = %e, "HTTP/3 forward failed; trying HTTP");
        }
        let (transport, answer) = match h3 {
            Some(Ok(response)) => ("h3", Ok(response)),
            // No HTTP/3 to this peer (or it failed): the same peer over HTTP.
            Some(Err(_)) | None => {
                ("http", build(t).body(bytes.clone()).send().await.map(relay).map_err(|e| e.to_string()))
            }
        };
        match answer {
            Ok(response) if response.status() != axum::http::StatusCode::SERVICE_UNAVAILABLE => {
                state.metrics.forwarded(&t.id, transport, "answered");
                return response;
            }
            Ok(_) => {
                state.metrics.forwarded(&t.id, transport, "unavailable");
                failures.push((t.id.clone(), "503".to_string()));
            }
            Err(e) => {
                state.metrics.forwarded(&t.id, transport, "failed");
                failures.push((t.id.clone(), e));
            }
        }
        tracing::debug!(peer = %t.id, "forward failed; trying the next peer");
    }
    unreachable_peer(&failures)
}

/// Forward over HTTP/3 on a connection kept per peer; `None` when the peer has no QUIC
/// endpoint or this node no CA to check it with.
async fn via_h3(
    state: &AppState,
    target: &Target,
    method: &axum::http::Method,
    path: &str,
    headers: &reqwest::header::HeaderMap,
    body: bytes::Bytes,
) -> Option<Result<Response, String>> {
    let (mesh, addr, ca) = (state.mesh.as_ref()?, target.quic?, state.config.ca_file.clone()?);
    let cached = mesh.links.lock().await.get(&addr).cloned();
    let link = match cached {
        Some(link) => link,
        None => {
            let options = crate::client::ClientOptions {
                url: target.url.clone(),
                transport: crate::client::Transport::H3,
                ca: Some(ca),
                token: None,
                quic_addr: Some(addr),
                timeout: std::time::Duration::from_millis(state.config.request_timeout_ms),
            };
            match crate::client::H3Client::connect(&options).await {
                Ok(link) => {
                    mesh.links.lock().await.insert(addr, link.clone());
                    link
                }
                Err(e) => {
                    tracing::debug!(peer = %target.id, error = %e, "no HTTP/3 link to peer");
                    return Some(Err(e.to_string()));
                }
            }
        }
    };
    match link.relay(method.clone(), path, headers, body).await {
        Ok((head, body)) => {
            let mut response = Response::from_parts(head, Body::from(body));
            // The peer's HTTP/3 version must not leak into our HTTP/1.1 or HTTP/2 answer.
            *response.version_mut() = axum::http::Version::default();
            for hop in ["connection", "transfer-encoding", "keep-alive", "alt-svc"] {
                response.headers_mut().remove(hop);
            }
            Some(Ok(response))
        }
        Err(e) => {
            mesh.links.lock().await.remove(&addr);
            Some(Err(e.to_string()))
        }
    }
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
        if !matches!(name.as_str(), "connection" | "transfer-encoding" | "keep-alive" | "alt-svc") {
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
