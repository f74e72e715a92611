//! Who may use control's API: the operator routes need a credential with the `admin` scope
//! (an API key from the registry, the bootstrap admin key, or a JWT of a configured issuer);
//! a node's reports (heartbeats, latency reports) need the `node` scope (its `auth.peer_key`);
//! what nodes read stays open (catalog, artifacts, the node list).
//! Uses the node's [`Authenticator`], fed with control's own catalog.

use std::path::Path;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use meridian_gossip::keys::{key_hash_hex, Scope, Scopes};
use meridian_gossip::Catalog;
use meridian_node::auth::{AuthConfig, Authenticator, Principal};

use super::{ApiError, SharedState};
use crate::config::ControlConfig;
use crate::registry::keys::KeySpec;
use crate::registry::{Registry, RegistryError};

/// Where control writes the admin key it creates at first start.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Whether `method` on `route` (axum's matched path) is open: what nodes call, and health.
pub fn is_open(method: &Method, route: &str) -> bool {
    matches!(
        (method, route),
        (_, "/healthz")
            | (&Method::GET, "/api/v1/catalog")
            | (&Method::GET, "/api/v1/catalog/signed")
            | (&Method::GET, "/api/v1/mesh/control-key")
            | (&Method::GET, "/api/v1/artifacts/{digest}")
            | (&Method::GET, "/api/v1/nodes")
    )
}

/// Whether `route` is a node's report to control, which needs the `node` scope: anyone who
/// could post one could point a node id at any URL or feed a canary's judgement.
fn is_node_report(method: &Method, route: &str) -> bool {
    method == Method::POST && matches!(route, "/api/v1/nodes/heartbeat" | "/api/v1/metrics/report")
}

/// The authenticator of control's API: the config's JWT issuers and bootstrap key, the
/// catalog's keys.
pub fn authenticator(config: &ControlConfig, catalog: &Catalog) -> Result<Authenticator, String> {
    let auth =
        AuthConfig { enabled: config.auth.enabled, jwt: config.auth.jwt.clone(), ..AuthConfig::default() };
    let mut authenticator = Authenticator::new(&auth)?;
    if let Some(hash) = &config.auth.admin_key_sha256 {
        let principal = Principal {
            id: "bootstrap-admin".to_string(),
            scopes: Scopes::all(),
            models: None,
            limits: Default::default(),
            expires_at: None,
        };
        authenticator.add_static_key(hash, principal)?;
    }
    authenticator.adopt(catalog);
    Ok(authenticator)
}

/// With auth on and no way in (no bootstrap key configured, no active admin key stored),
/// create an admin key and write it to `<data_dir>/admin.key` (mode 0600).
pub fn ensure_admin_key(config: &ControlConfig, registry: &Registry) -> Result<(), RegistryError> {
    if !config.auth.enabled || config.auth.admin_key_sha256.is_some() {
        return Ok(());
    }
    let keys = registry.keys()?;
    if keys.iter().any(|k| k.revoked_at.is_none() && k.scopes.contains(Scope::Admin)) {
        return Ok(());
    }
    let spec = KeySpec { name: "bootstrap-admin".into(), scopes: Scopes::all(), ..KeySpec::default() };
    let (key, record) = registry.create_key(spec, super::models::rfc3339_now())?;
    let path = config.data_dir.join(ADMIN_KEY_FILE);
    write_private(&path, &key)?;
    tracing::warn!(key = %record.id, path = %path.display(), "created an admin API key (auth is on and there was none)");
    Ok(())
}

pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(format!("{text}\n").as_bytes())
}

/// The middleware: open routes pass; the rest need `admin`.
pub async fn authorize(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|r| r.as_str().to_string());
    let open = route.as_deref().is_none_or(|r| is_open(request.method(), r)); // None: the 404 fallback
    if open || !state.auth.enabled() {
        return next.run(request).await;
    }
    let scope = if route.as_deref().is_some_and(|r| is_node_report(request.method(), r)) {
        Scope::Node
    } else {
        Scope::Admin
    };
    let admitted = state.auth.from_headers(request.headers()).and_then(|p| p.allow(scope, None));
    match admitted {
        Ok(()) => next.run(request).await,
        Err(e) => {
            tracing::debug!(reason = e.reason(), error = %e, "operator request refused");
            let mut response = ApiError::new(e.status(), e.to_string()).into_response();
            if e.status() == axum::http::StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

/// The sha256 control stores for `key`, as `admin_key_sha256` wants it.
pub fn admin_key_sha256(key: &str) -> String {
    key_hash_hex(key.trim())
}
