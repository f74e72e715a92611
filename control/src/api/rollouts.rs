//! Canary rollouts: `POST /api/v1/rollouts` (start, JSON `RolloutSpec`),
//! `GET /api/v1/rollouts/{model}` (state, current step's figures per region),
//! `POST /api/v1/rollouts/{model}/{pause|resume|promote|abort|rollback}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::metrics::unix_ms;
use super::{ApiError, SharedState};
use crate::registry::RegistryError;
use crate::rollout::driver::region_figures;
use crate::rollout::{Command, Phase, RegionFigures, Rollout, RolloutSpec};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub rollout: Rollout,
    pub canary_bp: u32,
    /// Time left in the current step's hold.
    pub hold_left_ms: Option<u64>,
    /// The current step's figures per region.
    pub regions: Vec<RegionFigures>,
}

fn status(state: &SharedState, rollout: Rollout) -> RolloutStatus {
    let now = unix_ms();
    let (hold_left_ms, since) = match rollout.phase {
        Phase::Holding { since_ms, .. } => {
            (Some(rollout.spec.hold_ms.saturating_sub(now.saturating_sub(since_ms))), since_ms)
        }
        _ => (None, now.saturating_sub(60_000)),
    };
    let regions = region_figures(state, &rollout, since, now);
    RolloutStatus { canary_bp: rollout.canary_bp(), hold_left_ms, regions, rollout }
}

pub async fn start(
    State(state): State<SharedState>,
    body: Bytes,
) -> Result<(StatusCode, Json<RolloutStatus>), ApiError> {
    let spec: RolloutSpec =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid rollout: {e}")))?;
    let rollout = state
        .registry_op(move |r| {
            r.check_rollout(&spec)?;
            let (rollout, action) = Rollout::start(spec, unix_ms()).map_err(RegistryError::Invalid)?;
            r.apply_rollout_action(&rollout.spec, &action)?;
            r.save_rollout(&rollout)?;
            Ok(rollout)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(status(&state, rollout))))
}

pub async fn show(
    State(state): State<SharedState>,
    Path(model): Path<String>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let lookup = model.clone();
    let rollout = state
        .registry_read(move |r| r.rollout(&lookup))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no rollout of {model:?}")))?;
    Ok(Json(status(&state, rollout)))
}

pub async fn command(
    State(state): State<SharedState>,
    Path((model, command)): Path<(String, String)>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let cmd: Command = serde_json::from_value(serde_json::Value::String(command.clone())).map_err(|_| {
        ApiError::bad_request(format!(
            "unknown command {command:?}: pause, resume, promote, abort or rollback"
        ))
    })?;
    let rollout = state
        .registry_op(move |r| {
            let mut rollout = r
                .rollout(&model)?
                .ok_or_else(|| RegistryError::NotFound(format!("no rollout of {model:?}")))?;
            let action = rollout.command(cmd, unix_ms()).map_err(RegistryError::Conflict)?;
            if let Some(action) = action {
                r.apply_rollout_action(&rollout.spec, &action)?;
            }
            r.save_rollout(&rollout)?;
            Ok(rollout)
        })
        .await?;
    Ok(Json(status(&state, rollout)))
}
