//! Where the non-HTTP front ends ask auth: once per connection, then per request.
//! (Auth itself arrives with the auth module; until then every caller is admitted.)

use super::error::ApiError;
use crate::node::NodeState;

/// Who a connection authenticated as.
#[derive(Debug, Clone, Default)]
pub struct Principal;

pub fn connection(_state: &NodeState, _token: Option<&str>) -> Result<Principal, ApiError> {
    Ok(Principal)
}

pub fn request(_state: &NodeState, _principal: &Principal, _model: &str) -> Result<(), ApiError> {
    Ok(())
}
