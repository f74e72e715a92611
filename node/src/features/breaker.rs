//! A circuit breaker for the shared feature store, as a plain state machine: the caller passes
//! the time in. Closed: calls go through; `failures_to_open` consecutive failures open it.
//! Open: calls are refused (served from the local cache instead) until `open_for` has passed,
//! then one probe is let through (half-open): success closes, failure opens again.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
    failures_to_open: u32,
    open_for: Duration,
}

impl Breaker {
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            state: BreakerState::Closed,
            failures: 0,
            opened_at: None,
            failures_to_open: failures_to_open.max(1),
            open_for,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go to the store now. In the open state, the first call after
    /// `open_for` becomes the half-open probe; others keep being refused until it reports. A
    /// probe that never reports (its caller went away) is replaced after another `open_for`.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen | BreakerState::Open => {
                let due = self.opened_at.is_none_or(|t| now.saturating_duration_since(t) >= self.open_for);
                if due {
                    self.state = BreakerState::HalfOpen;
                    // The probe's own deadline: counted from when it was let through.
                    self.opened_at = Some(now);
                }
                due
            }
        }
    }

    pub fn success(&mut self) {
        self.state = BreakerState::Closed;
        self.failures = 0;
        self.opened_at = None;
    }

    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        if self.state == BreakerState::HalfOpen || self.failures >= self.failures_to_open {
            self.state = BreakerState::Open;
            self.opened_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_probes_after_the_wait_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(2));
        b.failure(t0);
        b.failure(t0);
        b.success();
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.state(), BreakerState::Closed, "failures must be consecutive");
        b.failure(t0);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(t0 + Duration::from_secs(1)));
        assert!(b.allow(t0 + Duration::from_secs(2)), "one probe after the wait");
        assert!(!b.allow(t0 + Duration::from_secs(3)), "only one probe at a time");
        assert!(b.allow(t0 + Duration::from_secs(4)), "a probe that never reported is replaced");
        b.failure(t0 + Duration::from_secs(2));
        assert_eq!(b.state(), BreakerState::Open, "a failed probe opens again");
        assert!(!b.allow(t0 + Duration::from_secs(3)));
        assert!(b.allow(t0 + Duration::from_secs(4)));
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(t0 + Duration::from_secs(4)));
    }
}
