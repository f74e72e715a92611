//! The rollout planner: raises a canary version's share of traffic step by step, holds each
//! step, and judges the canary against the baseline in every region on merged figures. A guard
//! breached in any region rolls back everywhere and says why; after the last step the canary is
//! promoted. Operators can pause, resume, promote, abort or roll back at any time.
//!
//! Pure: `tick(now, figures)` and `command(cmd, now)` return what to do; the caller does it.

use serde::{Deserialize, Serialize};

/// Basis points of traffic (10,000 = all of it).
pub const ALL_BP: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub model: String,
    /// The version serving now.
    pub baseline: u32,
    /// The version being rolled out.
    pub canary: u32,
    /// Canary shares in percent, ascending, ending at 100 (e.g. 1, 5, 25, 50, 100).
    pub steps: Vec<u32>,
    /// How long each step is held before the next.
    pub hold_ms: u64,
    /// The canary's p99 in a region may not exceed this.
    pub max_p99_ms: Option<f64>,
    /// The canary's p99 in a region may not exceed the baseline's p99 there times this.
    #[serde(default)]
    pub max_p99_ratio: Option<f64>,
    /// The canary's error rate in a region may not exceed this (0.01 = 1 %).
    pub max_error_rate: Option<f64>,
    /// A region is judged once its canary served this many requests in the step.
    pub min_requests: u64,
}

impl RolloutSpec {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.baseline == self.canary {
            p.push("the canary must be another version than the baseline".to_string());
        }
        if self.steps.is_empty() || self.steps.last() != Some(&100) {
            p.push("steps must end at 100".to_string());
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1]) || self.steps.first() == Some(&0) {
            p.push("steps must be strictly ascending percentages above 0".to_string());
        }
        if self.max_p99_ms.is_none() && self.max_p99_ratio.is_none() && self.max_error_rate.is_none() {
            p.push("give at least one guard: max_p99_ms, max_p99_ratio or max_error_rate".to_string());
        }
        p
    }
}

/// One version's figures in one region over the current step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionFigures {
    pub region: String,
    pub canary: Figures,
    pub baseline: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Holding step `step` since `since_ms`.
    Holding {
        step: usize,
        since_ms: u64,
    },
    /// Paused at `step` after holding it for `held_ms`.
    Paused {
        step: usize,
        held_ms: u64,
    },
    Promoted,
    RolledBack {
        reason: String,
    },
    Aborted,
}

/// For people: `holding step 1`, `paused at step 2 (held 6.6 s)`, `rolled back: <reason>`.
impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Holding { step, .. } => write!(f, "holding step {}", step + 1),
            Phase::Paused { step, held_ms } => {
                write!(f, "paused at step {} (held {:.1} s)", step + 1, *held_ms as f64 / 1000.0)
            }
            Phase::Promoted => f.write_str("promoted"),
            Phase::RolledBack { reason } => write!(f, "rolled back: {reason}"),
            Phase::Aborted => f.write_str("aborted"),
        }
    }
}

impl Phase {
    pub fn is_done(&self) -> bool {
        matches!(self, Phase::Promoted | Phase::RolledBack { .. } | Phase::Aborted)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Pause,
    Resume,
    Promote,
    Abort,
    Rollback,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Send `canary_bp` of the model's traffic to the canary, the rest to the baseline.
    SetCanaryShare { canary_bp: u32 },
    /// Make the canary the live version everywhere.
    Promote,
    /// All traffic back to the baseline everywhere, because of `reason`.
    RollBack { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub spec: RolloutSpec,
    pub phase: Phase,
}

impl Rollout {
    /// Start at the first step.
    pub fn start(spec: RolloutSpec, now_ms: u64) -> Result<(Self, Action), String> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let first = spec.steps[0] * 100;
        Ok((
            Rollout { spec, phase: Phase::Holding { step: 0, since_ms: now_ms } },
            Action::SetCanaryShare { canary_bp: first },
        ))
    }

    /// The canary's share now, in basis points.
    pub fn canary_bp(&self) -> u32 {
        match &self.phase {
            Phase::Holding { step, .. } | Phase::Paused { step, .. } => self.spec.steps[*step] * 100,
            Phase::Promoted => ALL_BP,
            Phase::RolledBack { .. } | Phase::Aborted => 0,
        }
    }

    /// A guard the canary breaches in some region, as the reason to roll back.
    fn breach(&self, figures: &[RegionFigures]) -> Option<String> {
        for r in figures.iter().filter(|r| r.canary.requests >= self.spec.min_requests.max(1)) {
            if let Some(max) = self.spec.max_p99_ms {
                if r.canary.p99_ms > max {
                    return Some(format!(
                        "canary v{} p99 {:.2} ms > {max} ms in {} (baseline {:.2} ms)",
                        self.spec.canary, r.canary.p99_ms, r.region, r.baseline.p99_ms
                    ));
                }
            }
            let judged_baseline = r.baseline.requests >= self.spec.min_requests.max(1);
            if let (Some(ratio), true) = (self.spec.max_p99_ratio, judged_baseline) {
                if r.canary.p99_ms > r.baseline.p99_ms * ratio {
                    return Some(format!(
                        "canary v{} p99 {:.2} ms > {ratio} × baseline {:.2} ms in {}",
                        self.spec.canary, r.canary.p99_ms, r.baseline.p99_ms, r.region
                    ));
                }
            }
            if let Some(max) = self.spec.max_error_rate {
                let rate = r.canary.errors as f64 / r.canary.requests as f64;
                if rate > max {
                    return Some(format!(
                        "canary v{} error rate {:.2}% > {:.2}% in {}",
                        self.spec.canary,
                        rate * 100.0,
                        max * 100.0,
                        r.region
                    ));
                }
            }
        }
        None
    }

    /// Judge the current step on `figures` (canary and baseline per region since the step
    /// began) and move on when its hold is over.
    pub fn tick(&mut self, now_ms: u64, figures: &[RegionFigures]) -> Option<Action> {
        let Phase::Holding { step, since_ms } = self.phase else { return None };
        if let Some(reason) = self.breach(figures) {
            self.phase = Phase::RolledBack { reason: reason.clone() };
            return Some(Action::RollBack { reason });
        }
        if now_ms.saturating_sub(since_ms) < self.spec.hold_ms {
            return None;
        }
        if step + 1 == self.spec.steps.len() {
            self.phase = Phase::Promoted;
            return Some(Action::Promote);
        }
        self.phase = Phase::Holding { step: step + 1, since_ms: now_ms };
        Some(Action::SetCanaryShare { canary_bp: self.spec.steps[step + 1] * 100 })
    }

    /// An operator's command.
    pub fn command(&mut self, cmd: Command, now_ms: u64) -> Result<Option<Action>, String> {
        if self.phase.is_done() {
            return Err(format!("the rollout is over ({:?})", self.phase));
        }
        let action = match (cmd, &self.phase) {
            (Command::Pause, Phase::Holding { step, since_ms }) => {
                self.phase = Phase::Paused { step: *step, held_ms: now_ms.saturating_sub(*since_ms) };
                None
            }
            (Command::Resume, Phase::Paused { step, held_ms }) => {
                self.phase = Phase::Holding { step: *step, since_ms: now_ms.saturating_sub(*held_ms) };
                None
            }
            (Command::Pause, _) | (Command::Resume, _) => {
                return Err(format!("cannot {} while {}", format!("{cmd:?}").to_lowercase(), self.phase))
            }
            (Command::Promote, _) => {
                self.phase = Phase::Promoted;
                Some(Action::Promote)
            }
            (Command::Abort, _) => {
                self.phase = Phase::Aborted;
                Some(Action::RollBack { reason: "aborted by an operator".to_string() })
            }
            (Command::Rollback, _) => {
                let reason = "rolled back by an operator".to_string();
                self.phase = Phase::RolledBack { reason: reason.clone() };
                Some(Action::RollBack { reason })
            }
        };
        Ok(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RolloutSpec {
        RolloutSpec {
            model: "m".into(),
            baseline: 1,
            canary: 2,
            steps: vec![1, 5, 25, 100],
            hold_ms: 1_000,
            max_p99_ms: Some(20.0),
            max_p99_ratio: Some(2.0),
            max_error_rate: Some(0.01),
            min_requests: 50,
        }
    }

    fn region(name: &str, requests: u64, errors: u64, p99_ms: f64) -> RegionFigures {
        RegionFigures {
            region: name.into(),
            canary: Figures { requests, errors, p99_ms },
            baseline: Figures { requests: requests * 10, errors: 0, p99_ms: 5.0 },
        }
    }

    #[test]
    fn a_healthy_canary_walks_every_step_to_promotion() {
        let (mut r, first) = Rollout::start(spec(), 0).unwrap();
        assert_eq!(first, Action::SetCanaryShare { canary_bp: 100 });
        let healthy = [region("eu", 500, 1, 6.0), region("us", 500, 0, 7.0)];
        assert_eq!(r.tick(500, &healthy), None, "still holding");
        let mut shares = vec![];
        let mut now = 1_000;
        while let Some(action) = r.tick(now, &healthy) {
            shares.push(action);
            now += 1_000;
        }
        assert_eq!(
            shares,
            [
                Action::SetCanaryShare { canary_bp: 500 },
                Action::SetCanaryShare { canary_bp: 2_500 },
                Action::SetCanaryShare { canary_bp: 10_000 },
                Action::Promote
            ]
        );
        assert_eq!(r.phase, Phase::Promoted);
    }

    #[test]
    fn a_breach_in_any_region_rolls_back_and_says_why() {
        let (mut r, _) = Rollout::start(spec(), 0).unwrap();
        let slow_in_ap = [region("eu", 500, 0, 6.0), region("ap", 500, 0, 45.0)];
        match r.tick(10, &slow_in_ap) {
            Some(Action::RollBack { reason }) => {
                assert!(reason.contains("ap") && reason.contains("p99"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.canary_bp(), 0);
        // Slower than twice the baseline (5 ms) while under the absolute guard.
        let (mut r, _) = Rollout::start(spec(), 0).unwrap();
        assert!(
            matches!(r.tick(10, &[region("eu", 500, 0, 11.0)]), Some(Action::RollBack { reason }) if reason.contains("× baseline"))
        );
        let (mut r, _) = Rollout::start(spec(), 0).unwrap();
        let failing = [region("us", 1_000, 50, 6.0)];
        assert!(
            matches!(r.tick(10, &failing), Some(Action::RollBack { reason }) if reason.contains("error rate"))
        );
        // Too few canary requests in a region: not judged yet.
        let (mut r, _) = Rollout::start(spec(), 0).unwrap();
        assert_eq!(r.tick(10, &[region("us", 10, 5, 99.0)]), None);
    }

    #[test]
    fn operators_pause_resume_promote_abort_and_roll_back() {
        let (mut r, _) = Rollout::start(spec(), 0).unwrap();
        r.command(Command::Pause, 400).unwrap();
        assert_eq!(r.tick(5_000, &[]), None, "paused rollouts do not advance");
        r.command(Command::Resume, 10_000).unwrap();
        assert_eq!(r.tick(10_599, &[]), None, "the hold resumes where it paused");
        assert_eq!(r.tick(10_600, &[]), Some(Action::SetCanaryShare { canary_bp: 500 }));
        let refused = r.command(Command::Resume, 10_700).unwrap_err();
        assert_eq!(refused, "cannot resume while holding step 2", "said for people, not in Debug");
        assert_eq!(r.command(Command::Promote, 11_000).unwrap(), Some(Action::Promote));
        assert!(r.command(Command::Abort, 11_001).is_err(), "over");
        let (mut r, _) = Rollout::start(spec(), 0).unwrap();
        assert!(matches!(r.command(Command::Rollback, 5).unwrap(), Some(Action::RollBack { .. })));
        let mut bad = spec();
        bad.steps = vec![5, 1, 100];
        assert!(Rollout::start(bad, 0).is_err());
    }
}
