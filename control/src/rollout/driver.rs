//! The rollout driver: every tick it feeds each active rollout the merged figures of its current
//! step, per region, and carries out what the planner decides. Rollout state lives in sled, so
//! a restarted control picks up where it stopped.

use std::sync::Arc;
use std::time::Duration;

use super::planner::{Figures, Phase, RegionFigures, Rollout};
use crate::api::metrics::unix_ms;
use crate::api::{ApiError, ControlState};
use crate::sink::SliceStats;

fn figures(stats: &[SliceStats], version: u32, arm: &str) -> Figures {
    stats.iter().find(|s| s.version == version && s.arm == arm).map_or_else(Figures::default, |s| Figures {
        requests: s.requests,
        errors: s.errors,
        p99_ms: s.p99_ms,
    })
}

/// Canary and baseline figures per region since `since_ms`.
pub fn region_figures(
    state: &ControlState,
    rollout: &Rollout,
    since_ms: u64,
    now_ms: u64,
) -> Vec<RegionFigures> {
    let window = now_ms.saturating_sub(since_ms).max(1_000);
    let stats = state.sink.query(Some(&rollout.spec.model), window, now_ms, true);
    let mut regions: Vec<String> = stats.iter().map(|s| s.region.clone()).collect();
    regions.sort();
    regions.dedup();
    regions
        .into_iter()
        .map(|region| {
            let here: Vec<SliceStats> = stats.iter().filter(|s| s.region == region).cloned().collect();
            RegionFigures {
                canary: figures(&here, rollout.spec.canary, "canary"),
                baseline: figures(&here, rollout.spec.baseline, "baseline"),
                region,
            }
        })
        .collect()
}

/// One planner step for every active rollout.
pub async fn step_all(state: &Arc<ControlState>) -> Result<(), ApiError> {
    for mut rollout in state.registry_read(|r| r.active_rollouts()).await? {
        let Phase::Holding { since_ms, .. } = rollout.phase else { continue };
        let now = unix_ms();
        let figures = region_figures(state, &rollout, since_ms, now);
        if let Some(action) = rollout.tick(now, &figures) {
            tracing::info!(model = %rollout.spec.model, ?action, "rollout step");
            state
                .registry_op(move |r| {
                    r.apply_rollout_action(&rollout.spec, &action)?;
                    r.save_rollout(&rollout)
                })
                .await?;
        }
    }
    Ok(())
}

/// Drive rollouts every `every` until control stops.
pub async fn drive(state: Arc<ControlState>, every: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = state.shutdown.cancelled() => return,
        }
        if let Err(e) = step_all(&state).await {
            tracing::warn!(error = %e.message, "rollout step failed");
        }
    }
}
