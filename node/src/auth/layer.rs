//! Auth on the HTTP routes: [`access`] says what each route needs (one table, by route template,
//! shared by every transport that serves these routes), [`authorize`] is the axum middleware
//! that enforces it before the handler runs (and before the body is read).

use std::sync::Arc;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestExt;

use super::{LimitKind, Principal, Scope};
use crate::serve::error::{rate_headers, ApiError};
use crate::serve::AppState;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// `None`: open to anyone (health, metrics).
    pub scope: Option<Scope>,
    /// The route's `{model}` is checked against the principal's models.
    pub per_model: bool,
    /// The rate limit a request takes from.
    pub limit: Option<LimitKind>,
}

const OPEN: Access = Access { scope: None, per_model: false, limit: None };

const fn needs(scope: Scope) -> Access {
    Access { scope: Some(scope), per_model: false, limit: None }
}

const PREDICT: Access =
    Access { scope: Some(Scope::Predict), per_model: true, limit: Some(LimitKind::Predict) };
const MODEL_METADATA: Access = Access { scope: Some(Scope::Predict), per_model: true, limit: None };

/// What `method` on the route template `route` (axum's matched path) needs. A route missing
/// from this table needs `admin`, so a new route is closed until it is listed here.
pub fn access(method: &Method, route: &str) -> Access {
    match route {
        "/healthz" | "/readyz" | "/metrics" | "/v2" | "/v2/health/live" | "/v2/health/ready" => OPEN,
        "/api/v1/models/{model}/predict"
        | "/api/v1/models/{model}/stream"
        | "/v2/models/{model}/infer"
        | "/v2/models/{model}/versions/{version}/infer" => PREDICT,
        "/v2/models/{model}"
        | "/v2/models/{model}/ready"
        | "/v2/models/{model}/versions/{version}"
        | "/v2/models/{model}/versions/{version}/ready" => MODEL_METADATA,
        "/api/v1/node" | "/api/v1/feedback" | "/api/v1/mesh/nodes" => needs(Scope::Predict),
        // Signed by control (the signature is the credential) and verified before adoption;
        // artifacts are verified by digest, as from control.
        "/api/v1/mesh/catalog" | "/api/v1/artifacts/{digest}" => OPEN,
        "/api/v1/features/{view}/{entity}" if method == Method::GET => needs(Scope::Predict),
        "/api/v1/features/{view}/{entity}" | "/api/v1/features/{view}/ingest" => needs(Scope::FeaturesWrite),
        "/api/v1/batch" if method == Method::POST => {
            Access { scope: Some(Scope::Batch), per_model: false, limit: Some(LimitKind::Batch) }
        }
        // A spread job's shards fetch their input from the coordinating node: the job id (a
        // random 128-bit uuid) is the capability.
        "/api/v1/batch/{id}/input" => OPEN,
        "/api/v1/batch"
        | "/api/v1/batch/{id}"
        | "/api/v1/batch/{id}/cancel"
        | "/api/v1/batch/{id}/result" => needs(Scope::Batch),
        _ => needs(Scope::Admin),
    }
}

/// The middleware: authenticate, check the scope and model, take from the rate limit, put the
/// [`Principal`] in the request's extensions for the handler, add `RateLimit-*` to the answer.
pub async fn authorize(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // Unmatched paths reach the 404 fallback without a credential.
    let Some(route) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let access = access(request.method(), route.as_str());
    let Some(scope) = access.scope else { return next.run(request).await };
    // Auth off: anonymous may do anything, and only batch submissions have a bucket for it.
    if !state.auth.enabled() && access.limit != Some(LimitKind::Batch) {
        return next.run(request).await;
    }
    let model = if access.per_model {
        let params = request.extract_parts::<RawPathParams>().await.ok();
        params.and_then(|p| p.iter().find(|(k, _)| *k == "model").map(|(_, v)| v.to_string()))
    } else {
        None
    };
    let principal = match admit(&state, request.headers(), scope, model.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let rate = match access.limit {
        Some(kind) => match state.limits.check(&principal, model.as_deref().unwrap_or("*"), kind) {
            Ok(rate) => rate,
            Err(limited) => {
                state.metrics.rate_limited(kind.label());
                return ApiError::from(limited).into_response();
            }
        },
        None => None,
    };
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    if let Some(rate) = rate {
        for (name, value) in rate_headers(rate) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Authenticate the request's credential and check it may act with `scope` on `model`;
/// refusals are counted by reason.
fn admit(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    scope: Scope,
    model: Option<&str>,
) -> Result<Arc<Principal>, ApiError> {
    let admitted = state.auth.from_headers(headers).and_then(|p| p.allow(scope, model).map(|()| p));
    admitted.map_err(|e| {
        state.metrics.auth_failure(e.reason());
        tracing::debug!(reason = e.reason(), error = %e, "request refused");
        ApiError::from(e)
    })
}
