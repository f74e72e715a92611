//! Auth for the front ends that are not axum routes (the native QUIC protocol): the client
//! authenticates once per connection (`HELLO`); each request then checks scope, model and rate
//! limit, with the same errors and metrics as the HTTP layer. The connection's credential is
//! checked again per request (a cached, sub-microsecond lookup), so a key revoked or a token
//! expired while a connection is open stops working on it too.

use std::sync::Arc;

use super::error::ApiError;
use crate::auth::{LimitKind, Principal, Scope};
use crate::node::NodeState;

/// What a connection authenticated with.
#[derive(Debug, Clone)]
pub struct Session {
    token: Option<String>,
    pub principal: Arc<Principal>,
}

fn authenticate(state: &NodeState, token: Option<&str>) -> Result<Arc<Principal>, ApiError> {
    state.auth.authenticate(token).map_err(|e| {
        state.metrics.auth_failure(e.reason());
        ApiError::from(e)
    })
}

/// The session of a connection whose `HELLO` carried `token` (anonymous when auth is off).
pub fn connection(state: &NodeState, token: Option<&str>) -> Result<Session, ApiError> {
    let principal = authenticate(state, token)?;
    Ok(Session { token: token.map(str::to_string), principal })
}

/// Whether the session may predict with `model` at all: credential still valid, scope,
/// allowed models. Checked when a stream opens.
pub fn permit(state: &NodeState, session: &Session, model: &str) -> Result<Arc<Principal>, ApiError> {
    let principal = authenticate(state, session.token.as_deref())?;
    if let Err(e) = principal.allow(Scope::Predict, Some(model)) {
        state.metrics.auth_failure(e.reason());
        return Err(e.into());
    }
    Ok(principal)
}

/// [`permit`] and the rate limit: checked for each rows frame.
pub fn request(state: &NodeState, session: &Session, model: &str) -> Result<(), ApiError> {
    let principal = permit(state, session, model)?;
    if let Err(limited) = state.limits.check(&principal, model, LimitKind::Predict) {
        state.metrics.rate_limited(LimitKind::Predict.label());
        return Err(limited.into());
    }
    Ok(())
}
