//! The dynamic batching policy, a pure function of what is queued and how long the oldest
//! request has waited: run now, or wait a bounded time for more rows. The worker threads call
//! it; tests call it with made-up numbers, no threads.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Run as soon as this many rows are gathered.
    pub max_rows: usize,
    /// Never hold the oldest request longer than this for company; zero runs whatever is
    /// already queued at once (no added latency when idle).
    pub max_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// Wait at most this long for another request, then ask again.
    Wait(Duration),
}

impl BatchPolicy {
    /// `rows` gathered so far, the oldest waiting for `waited`.
    pub fn decide(&self, rows: usize, waited: Duration) -> Decision {
        if rows >= self.max_rows || waited >= self.max_delay {
            Decision::Run
        } else {
            Decision::Wait(self.max_delay - waited)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn runs_when_full_or_when_the_oldest_waited_long_enough() {
        let p = BatchPolicy { max_rows: 64, max_delay: 2 * MS };
        assert_eq!(p.decide(1, Duration::ZERO), Decision::Wait(2 * MS));
        assert_eq!(p.decide(10, MS), Decision::Wait(MS));
        assert_eq!(p.decide(64, Duration::ZERO), Decision::Run, "full");
        assert_eq!(p.decide(3, 2 * MS), Decision::Run, "waited enough");
        let greedy = BatchPolicy { max_rows: 64, max_delay: Duration::ZERO };
        assert_eq!(greedy.decide(1, Duration::ZERO), Decision::Run, "no delay configured: never wait");
    }
}
