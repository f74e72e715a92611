//! Who is calling and what they may do: bearer JWTs and API keys in, a [`Principal`] out; and
//! per-key, per-model rate limits. No I/O on the request path (key files are read at start).
//!
//! - [`jwt`]: JWT verification (HS256, RS256, EdDSA; `exp`, `nbf`, `aud`, `iss`), keys from
//!   the config or a JWKS file, verified tokens cached until they expire.
//! - [`keys`]: API keys (`mk_<id>_<secret>`) checked against the catalog's key table.
//! - [`limits`]: token buckets (governor) per principal and model; 429 with `Retry-After`.
//! - [`layer`]: the HTTP side: which route needs which scope, the axum middleware, the mapping
//!   of refusals to 401/403/429 answers.
//!
//! A front end that is not the axum router (the native QUIC protocol) calls
//! [`Authenticator::authenticate`] once per connection, then [`Principal::allow`] and
//! [`limits::Limits::check`] for each request, and maps [`AuthError::status`] and
//! [`limits::Limited`] to its own error codes.

pub mod jwt;
pub mod keys;
pub mod layer;
pub mod limits;

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::{header, HeaderMap, StatusCode};
use meridian_gossip::Catalog;
use serde::{Deserialize, Serialize};

pub use limits::{LimitKind, Limited, Limits, LimitsConfig, RateInfo};
pub use meridian_gossip::keys::{KeyLimits, Scope, Scopes};

/// The `[auth]` section of a node's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Refuse requests without a valid credential. Turning it off is explicit: every request
    /// is then anonymous with every scope.
    pub enabled: bool,
    /// Accepted JWT issuers and their keys.
    pub jwt: Vec<jwt::JwtIssuer>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The API key this node sends to its peers (batch shards of a spread job); needs `batch`.
    pub peer_key: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { enabled: true, jwt: Vec::new(), leeway_secs: 30, peer_key: None }
    }
}

impl AuthConfig {
    /// Every problem with the section.
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self.jwt.iter().enumerate().flat_map(|(i, j)| j.problems(i)).collect();
        if self.leeway_secs > 600 {
            p.push("auth.leeway_secs must be at most 600".to_string());
        }
        if self.peer_key.as_deref().is_some_and(|k| meridian_gossip::keys::key_id(k).is_none()) {
            p.push("auth.peer_key is not an API key (mk_<id>_<secret>)".to_string());
        }
        p
    }
}

/// Who made a request: a key id, `jwt:<sub>`, or `anonymous` with auth off.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The key id, or `jwt:<sub>` for a token; rate limits are kept per id.
    pub id: String,
    pub scopes: Scopes,
    /// The only models this principal may use; `None`: every model.
    pub models: Option<BTreeSet<String>>,
    pub limits: KeyLimits,
    /// Unix seconds after which the credential is no longer valid (JWT `exp`).
    pub expires_at: Option<u64>,
}

impl Principal {
    /// The principal of every request when auth is off: all scopes, every model, no predict
    /// limit (there is no key to keep one per), the default batch submission limit.
    pub fn anonymous() -> Self {
        Self {
            id: "anonymous".to_string(),
            scopes: Scopes::all(),
            models: None,
            limits: KeyLimits { predict_per_second: Some(0), batch_per_minute: None },
            expires_at: None,
        }
    }

    /// Whether this principal may act with `scope` (on `model`, when there is one).
    pub fn allow(&self, scope: Scope, model: Option<&str>) -> Result<(), AuthError> {
        if !self.scopes.contains(scope) {
            return Err(AuthError::MissingScope(scope));
        }
        match (model, &self.models) {
            (Some(m), Some(allowed)) if !allowed.contains(m) => {
                Err(AuthError::ModelNotAllowed(m.to_string()))
            }
            _ => Ok(()),
        }
    }
}

/// Why a credential was refused. 401 for the credential itself, 403 for what it may not do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs a credential: `Authorization: Bearer <token or API key>` or `x-api-key`")]
    Missing,
    #[error("the credential is malformed: {0}")]
    Malformed(String),
    #[error("the credential is not valid: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's audience is not accepted here")]
    WrongAudience,
    #[error("the token's issuer is not accepted here")]
    WrongIssuer,
    #[error("API key {0} has been revoked")]
    Revoked(String),
    #[error("unknown API key {0}")]
    UnknownKey(String),
    #[error("the credential lacks the `{0}` scope")]
    MissingScope(Scope),
    #[error("the credential may not use model {0:?}")]
    ModelNotAllowed(String),
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::MissingScope(_) | AuthError::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `reason` label of `meridian_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::Invalid(_) => "invalid",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongAudience => "audience",
            AuthError::WrongIssuer => "issuer",
            AuthError::Revoked(_) => "revoked",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::MissingScope(_) => "scope",
            AuthError::ModelNotAllowed(_) => "model",
        }
    }
}

/// Wall-clock unix seconds; tests pass a fixed one.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

#[allow(clippy::disallowed_methods)]
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Turns credentials into principals. Shared by every front end of a node (and by control).
pub struct Authenticator {
    enabled: bool,
    jwt: jwt::Verifier,
    keys: ArcSwap<keys::KeyTable>,
    /// Keys from configuration rather than the catalog (control's bootstrap admin key).
    static_keys: Vec<([u8; 32], Arc<Principal>)>,
    anonymous: Arc<Principal>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authenticator(enabled: {})", self.enabled)
    }
}

impl Authenticator {
    /// Read the JWT keys the config names; an error names the file or setting at fault.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        Self::with_clock(config, Arc::new(unix_secs))
    }

    pub fn with_clock(config: &AuthConfig, clock: WallClock) -> Result<Self, String> {
        Ok(Self {
            enabled: config.enabled,
            jwt: jwt::Verifier::new(&config.jwt, config.leeway_secs, clock)?,
            keys: ArcSwap::from_pointee(keys::KeyTable::default()),
            static_keys: Vec::new(),
            anonymous: Arc::new(Principal::anonymous()),
        })
    }

    /// Accept `key_sha256` (hex sha256 of a key's text) as `principal`, besides the catalog's keys.
    pub fn add_static_key(&mut self, key_sha256: &str, principal: Principal) -> Result<(), String> {
        let bytes = hex::decode(key_sha256.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
        let hash = bytes.ok_or_else(|| format!("{key_sha256:?} is not a hex sha256"))?;
        self.static_keys.push((hash, Arc::new(principal)));
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Take the key table of a newer catalog: new keys work, revoked ones stop. Never goes
    /// back to an older epoch's table (a revoked key must stay revoked whatever adopts late).
    pub fn adopt(&self, catalog: &Catalog) {
        if catalog.epoch > self.keys.load().epoch() {
            self.keys.store(Arc::new(keys::KeyTable::from_catalog(catalog)));
        }
    }

    /// The principal of a raw credential (a JWT or an API key); anonymous when auth is off.
    pub fn authenticate(&self, credential: Option<&str>) -> Result<Arc<Principal>, AuthError> {
        if !self.enabled {
            return Ok(self.anonymous.clone());
        }
        let credential = credential.map(str::trim).filter(|c| !c.is_empty()).ok_or(AuthError::Missing)?;
        if credential.starts_with(meridian_gossip::keys::KEY_PREFIX) {
            let table = self.keys.load();
            match table.verify(credential) {
                Err(AuthError::UnknownKey(id)) => {
                    self.static_key(credential).ok_or(AuthError::UnknownKey(id))
                }
                verified => verified,
            }
        } else {
            self.jwt.verify(credential)
        }
    }

    fn static_key(&self, credential: &str) -> Option<Arc<Principal>> {
        use subtle::ConstantTimeEq;
        let hash = meridian_gossip::keys::key_hash(credential);
        self.static_keys.iter().find(|(h, _)| bool::from(h.ct_eq(&hash))).map(|(_, p)| p.clone())
    }

    /// The credential of an HTTP request: `Authorization: Bearer <token>` or `x-api-key`.
    pub fn from_headers(&self, headers: &HeaderMap) -> Result<Arc<Principal>, AuthError> {
        if !self.enabled {
            return Ok(self.anonymous.clone());
        }
        self.authenticate(credential_of(headers)?)
    }
}

/// The raw credential in `headers`, if any.
pub fn credential_of(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| AuthError::Malformed("Authorization is not ASCII".into()))?;
        let (scheme, token) = text.trim().split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed("Authorization must use the Bearer scheme".into()));
        }
        return Ok(Some(token));
    }
    match headers.get("x-api-key") {
        Some(v) => v.to_str().map(Some).map_err(|_| AuthError::Malformed("x-api-key is not ASCII".into())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
