//! Rate limits: a token bucket (governor's GCRA) per principal and model for predictions, per
//! principal for batch submissions. The rate is the key's own limit, else the model's
//! (`[limits.models.<name>]`), else the node's default; the burst is one period's worth.
//! Over the limit: [`Limited`] (429 with `Retry-After`). Memory is bounded: buckets that have
//! refilled (indistinguishable from new ones) are pruned once there are many.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::Principal;

/// Buckets kept before idle ones are pruned; checked every `PRUNE_EVERY` checks.
const PRUNE_AT: usize = 10_000;
const PRUNE_EVERY: u64 = 1_024;

/// `[limits]`: the defaults of every key, and per-model overrides.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Predictions per second per key and model (burst: as many); 0 turns the limit off.
    pub predict_per_second: u32,
    /// Batch job submissions per minute per key (burst: as many); 0 turns the limit off.
    pub batch_per_minute: u32,
    /// `[limits.models.<name>]`: a model's own default, for keys without their own limit.
    pub models: BTreeMap<String, ModelLimits>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { predict_per_second: 1_000, batch_per_minute: 100, models: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelLimits {
    pub predict_per_second: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Predict,
    Batch,
}

impl LimitKind {
    /// The `kind` label of `meridian_rate_limited_total`.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Predict => "predict",
            LimitKind::Batch => "batch",
        }
    }

    fn period(self) -> Duration {
        match self {
            LimitKind::Predict => Duration::from_secs(1),
            LimitKind::Batch => Duration::from_secs(60),
        }
    }
}

/// Where a principal stands after an allowed request (the `RateLimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Requests per period (`RateLimit-Limit`).
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u32,
}

/// A refused request: how long to wait, under which limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("over the {} rate limit ({limit} per {}); retry in {:.3} s", kind.label(), if *kind == LimitKind::Predict { "second" } else { "minute" }, retry_after.as_secs_f64())]
pub struct Limited {
    pub kind: LimitKind,
    pub limit: u32,
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds to wait, at least 1 (`Retry-After` has no fractions).
    pub fn retry_after_secs(&self) -> u32 {
        (self.retry_after.as_secs_f64().ceil() as u32).max(1)
    }
}

/// One limiter per (kind, rate) in use.
type Buckets<C> = RwLock<HashMap<(LimitKind, u32), Arc<Keyed<C>>>>;

type Keyed<C> =
    RateLimiter<String, governor::state::keyed::DashMapStateStore<String>, C, StateInformationMiddleware>;

pub struct Limits<C: Clock = DefaultClock> {
    config: LimitsConfig,
    /// One keyed limiter per distinct rate in use: governor's quota is per limiter, and keys
    /// and models with their own rates are few.
    buckets: Buckets<C>,
    checks: AtomicU64,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for Limits<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limits")
    }
}

impl Limits<DefaultClock> {
    pub fn new(config: LimitsConfig) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    pub fn with_clock(config: LimitsConfig, clock: C) -> Self {
        Self { config, buckets: RwLock::default(), checks: AtomicU64::new(0), clock }
    }

    /// The rate that applies to `principal` on `model`; 0: no limit.
    pub fn rate(&self, principal: &Principal, model: &str, kind: LimitKind) -> u32 {
        match kind {
            LimitKind::Predict => principal
                .limits
                .predict_per_second
                .or_else(|| self.config.models.get(model).and_then(|m| m.predict_per_second))
                .unwrap_or(self.config.predict_per_second),
            LimitKind::Batch => principal.limits.batch_per_minute.unwrap_or(self.config.batch_per_minute),
        }
    }

    /// Take one request from the bucket of (`principal`, `model`) (batch: of `principal`).
    /// `Ok(None)` when no limit applies.
    pub fn check(
        &self,
        principal: &Principal,
        model: &str,
        kind: LimitKind,
    ) -> Result<Option<RateInfo>, Limited> {
        let Some(rate) = NonZeroU32::new(self.rate(principal, model, kind)) else { return Ok(None) };
        let limiter = self.bucket(kind, rate);
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == 0 && limiter.len() >= PRUNE_AT {
            limiter.retain_recent();
        }
        let key = match kind {
            LimitKind::Predict => format!("{}\0{model}", principal.id),
            LimitKind::Batch => principal.id.clone(),
        };
        let limit = rate.get();
        match limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(limit);
                let to_refill = kind.period().as_secs_f64() * f64::from(limit - remaining) / f64::from(limit);
                Ok(Some(RateInfo { limit, remaining, reset_secs: to_refill.ceil() as u32 }))
            }
            Err(not_until) => {
                Err(Limited { kind, limit, retry_after: not_until.wait_time_from(self.clock.now()) })
            }
        }
    }

    fn bucket(&self, kind: LimitKind, rate: NonZeroU32) -> Arc<Keyed<C>> {
        let read = self.buckets.read().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = read.get(&(kind, rate.get())) {
            return b.clone();
        }
        drop(read);
        let mut write = self.buckets.write().unwrap_or_else(|p| p.into_inner());
        write
            .entry((kind, rate.get()))
            .or_insert_with(|| {
                let quota = match kind {
                    LimitKind::Predict => Quota::per_second(rate),
                    LimitKind::Batch => Quota::per_minute(rate),
                };
                Arc::new(
                    RateLimiter::dashmap_with_clock(quota, self.clock.clone())
                        .with_middleware::<StateInformationMiddleware>(),
                )
            })
            .clone()
    }
}
