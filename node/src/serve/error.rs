//! The one mapping from failures to HTTP answers: a status and `{"error": "..."}` (both the
//! seed API and the Open Inference Protocol use that body), plus `Retry-After` on overload,
//! `WWW-Authenticate` on 401 and the `RateLimit-*` headers on 429.

use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meridian_models::ModelError;

use crate::auth::{AuthError, Limited, RateInfo};
use crate::inference::table::Resolved;
use crate::inference::SubmitError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u32>,
    /// More headers for the answer (`WWW-Authenticate`, `RateLimit-*`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The IETF draft's `RateLimit-Limit`, `-Remaining` and `-Reset` headers.
pub fn rate_headers(rate: RateInfo) -> [(HeaderName, HeaderValue); 3] {
    [
        (RATELIMIT_LIMIT, HeaderValue::from(rate.limit)),
        (RATELIMIT_REMAINING, HeaderValue::from(rate.remaining)),
        (RATELIMIT_RESET, HeaderValue::from(rate.reset_secs)),
    ]
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None, headers: Vec::new() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { retry_after: Some(1), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message) }
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// An error for a model name/version that did not resolve to a loaded model.
    pub fn unresolved(model: &str, version: Option<u32>, resolved: Resolved) -> Self {
        match resolved {
            Resolved::Model(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "resolved model reported as error")
            }
            Resolved::NoCatalog => Self::unavailable("this node has not received a catalog yet"),
            Resolved::NotLoaded(reason) => Self::unavailable(format!(
                "model {model:?} is deployed but not loaded on this node yet ({reason})"
            )),
            Resolved::UnknownModel => Self::not_found(format!("unknown model {model:?}")),
            Resolved::UnknownVersion { live } => Self::not_found(format!(
                "model {model:?} has no version {} on this node (live version: {live})",
                version.unwrap_or_default()
            )),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::QueueFull(_) => Self {
                retry_after: Some(1),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, format!("overloaded: {e}; retry later"))
            },
            SubmitError::Closed => Self::unavailable(e.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = e.status();
        let mut error = Self::new(status, e.to_string());
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match e {
                AuthError::Missing => "Bearer",
                _ => "Bearer error=\"invalid_token\"",
            };
            error.headers.push((header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge)));
        }
        error
    }
}

impl From<Limited> for ApiError {
    fn from(e: Limited) -> Self {
        let secs = e.retry_after_secs();
        let mut error =
            Self { retry_after: Some(secs), ..Self::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()) };
        error.headers.extend(rate_headers(RateInfo { limit: e.limit, remaining: 0, reset_secs: secs }));
        error
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Input(_) => Self::bad_request(e.to_string()),
            _ => {
                tracing::error!(error = %e, "inference failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large("the request body is larger than this node's max_body_bytes")
        } else {
            Self::new(status, format!("cannot read the request body: {}", e.body_text()))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Parse a JSON body into `T`, with the parser's line and column in the error.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty; expected a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// Most bytes of a framework error's text kept when it is rewritten as JSON.
const MAX_ERROR_TEXT: usize = 4096;

/// Every error answer as `{"error": "..."}`: axum's own rejections (a body over the limit, a
/// query string or multipart form that does not parse, a method a route does not take) come as
/// plain text or empty; their text (or the status's reason) becomes the JSON error.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        t => t.to_string(),
    };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(body))
}
