//! The per-key limit on batch submissions: a token bucket per key (governor's GCRA), the key
//! being the caller's `Authorization` or `x-api-key` header value until API keys exist, else
//! `anonymous`. Over the limit: 429 with `Retry-After`. Keys are pruned when the map grows.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

/// Distinct keys remembered before idle ones are pruned.
const PRUNE_AT: usize = 10_000;

type Limiter<C> = RateLimiter<
    String,
    governor::state::keyed::DashMapStateStore<String>,
    C,
    governor::middleware::NoOpMiddleware<<C as Clock>::Instant>,
>;

pub struct SubmitLimit<C: Clock = DefaultClock> {
    limiter: Option<Limiter<C>>,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for SubmitLimit<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubmitLimit")
    }
}

/// The key a request is limited under.
pub fn key_of(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "anonymous".to_string(), str::to_string)
}

impl SubmitLimit<DefaultClock> {
    /// `per_minute` submissions per key (burst of as many); 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self::with_clock(per_minute, DefaultClock::default())
    }
}

impl<C: Clock + Clone> SubmitLimit<C> {
    pub fn with_clock(per_minute: u32, clock: C) -> Self {
        let limiter = NonZeroU32::new(per_minute)
            .map(|n| RateLimiter::dashmap_with_clock(Quota::per_minute(n), clock.clone()));
        Self { limiter, clock }
    }

    /// Take one submission for `key`; `Err(wait)` when over the limit.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if limiter.len() >= PRUNE_AT {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_string()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn each_key_gets_its_own_bucket_refilled_over_the_minute() {
        let clock = FakeRelativeClock::default();
        let limit = SubmitLimit::with_clock(3, clock.clone());
        for _ in 0..3 {
            limit.check("a").unwrap();
        }
        let wait = limit.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20), "{wait:?}");
        limit.check("b").unwrap();
        clock.advance(Duration::from_secs(20));
        limit.check("a").unwrap();
        assert!(limit.check("a").is_err());
        let off = SubmitLimit::with_clock(0, clock);
        for _ in 0..1000 {
            off.check("a").unwrap();
        }
    }

    #[test]
    fn the_key_is_the_credential_header_or_anonymous() {
        let mut h = HeaderMap::new();
        assert_eq!(key_of(&h), "anonymous");
        h.insert("x-api-key", "k1".parse().unwrap());
        assert_eq!(key_of(&h), "k1");
        h.insert("authorization", "Bearer t".parse().unwrap());
        assert_eq!(key_of(&h), "Bearer t");
    }
}
