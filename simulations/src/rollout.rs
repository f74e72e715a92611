//! A canary rollout across many nodes in many regions, driven by the real planner
//! (`meridian_control::rollout`). Nodes serve at a steady rate, report every interval (each with
//! its own phase), and their reports reach control after half the RTT to control's region.
//! Control judges the step every tick; its decision reaches each node after half the RTT (the
//! catalog long-poll is already open) plus a little processing. Virtual time in milliseconds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use meridian_control::rollout::{Action, Figures, Phase, RegionFigures, Rollout, RolloutSpec};

use crate::regions::{rtt_ms, REGIONS};
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub nodes: usize,
    pub control_region: usize,
    pub report_interval_ms: u64,
    pub tick_ms: u64,
    pub requests_per_node_per_s: u64,
    pub healthy_p99_ms: f64,
    /// A region where the canary is slow, and its p99 there.
    pub slow_canary_in: Option<(usize, f64)>,
    pub spec: RolloutSpec,
    pub seed: u64,
    /// Stop after this much virtual time.
    pub limit_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub phase: Phase,
    /// When control decided to promote or roll back.
    pub decided_ms: Option<u64>,
    /// When 99 % and 100 % of the nodes applied that decision.
    pub applied_99_ms: Option<u64>,
    pub applied_100_ms: Option<u64>,
    pub reports: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A node sends its report for the interval that just ended.
    Report { node: usize },
    /// A report reaches control.
    ReportArrives { region: usize, canary: u64, baseline: u64 },
    /// Control judges the current step.
    Tick,
    /// A node applies a catalog with this canary share (`final_decision`: promote/rollback).
    Catalog { node: usize, canary_bp: u32, final_decision: bool },
}

struct Sim<'a> {
    s: &'a Scenario,
    rng: Rng,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    region_of: Vec<usize>,
    share_bp: Vec<u32>,
    /// When each node last reported (its next report covers the time since).
    last_report: Vec<u64>,
    /// Canary and baseline requests per region reported since the step began.
    step_counts: Vec<(u64, u64)>,
    applied_final: usize,
}

impl Sim<'_> {
    fn at(&mut self, t: u64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, e)));
    }

    fn one_way(&mut self, region: usize) -> u64 {
        (rtt_ms(self.s.control_region, region) / 2.0) as u64 + self.rng.below(5)
    }

    fn broadcast(&mut self, now: u64, canary_bp: u32, final_decision: bool) {
        for node in 0..self.s.nodes {
            let delay = self.one_way(self.region_of[node]);
            self.at(now + delay, Event::Catalog { node, canary_bp, final_decision });
        }
    }

    fn figures(&self) -> Vec<RegionFigures> {
        self.step_counts
            .iter()
            .enumerate()
            .filter(|(_, (c, b))| c + b > 0)
            .map(|(r, (canary, baseline))| {
                let canary_p99 = match self.s.slow_canary_in {
                    Some((slow, p99)) if slow == r => p99,
                    _ => self.s.healthy_p99_ms,
                };
                RegionFigures {
                    region: REGIONS[r].0.to_string(),
                    canary: Figures { requests: *canary, errors: 0, p99_ms: canary_p99 },
                    baseline: Figures { requests: *baseline, errors: 0, p99_ms: self.s.healthy_p99_ms },
                }
            })
            .collect()
    }
}

impl Sim<'_> {
    fn handle(&mut self, now: u64, event: Event, rollout: &mut Rollout, out: &mut Outcome) {
        let s = self.s;
        match event {
            Event::Report { node } => {
                let served = s.requests_per_node_per_s * now.saturating_sub(self.last_report[node]) / 1_000;
                self.last_report[node] = now;
                let canary = served * u64::from(self.share_bp[node]) / 10_000;
                let region = self.region_of[node];
                let delay = self.one_way(region);
                self.at(now + delay, Event::ReportArrives { region, canary, baseline: served - canary });
                self.at(now + s.report_interval_ms, Event::Report { node });
            }
            Event::ReportArrives { region, canary, baseline } => {
                out.reports += 1;
                self.step_counts[region].0 += canary;
                self.step_counts[region].1 += baseline;
            }
            Event::Tick if out.decided_ms.is_none() => {
                match rollout.tick(now, &self.figures()) {
                    Some(Action::SetCanaryShare { canary_bp }) => {
                        self.step_counts.iter_mut().for_each(|c| *c = (0, 0));
                        self.broadcast(now, canary_bp, false);
                    }
                    Some(Action::Promote) => {
                        out.decided_ms = Some(now);
                        self.broadcast(now, 10_000, true);
                    }
                    Some(Action::RollBack { .. }) => {
                        out.decided_ms = Some(now);
                        self.broadcast(now, 0, true);
                    }
                    None => {}
                }
                self.at(now + s.tick_ms, Event::Tick);
            }
            Event::Tick => {}
            Event::Catalog { node, canary_bp, final_decision } => {
                self.share_bp[node] = canary_bp;
                if final_decision {
                    self.applied_final += 1;
                    if self.applied_final * 100 >= s.nodes * 99 && out.applied_99_ms.is_none() {
                        out.applied_99_ms = Some(now);
                    }
                    if self.applied_final == s.nodes {
                        out.applied_100_ms = Some(now);
                    }
                }
            }
        }
    }
}

/// Run the scenario to the planner's decision and until every node applied it (or the limit).
pub fn run(s: &Scenario) -> Outcome {
    let region_of: Vec<usize> = (0..s.nodes).map(|n| n % REGIONS.len()).collect();
    let mut sim = Sim {
        s,
        rng: Rng::new(s.seed),
        queue: BinaryHeap::new(),
        seq: 0,
        share_bp: vec![0; s.nodes],
        last_report: vec![0; s.nodes],
        step_counts: vec![(0, 0); REGIONS.len()],
        region_of,
        applied_final: 0,
    };
    let (mut rollout, first) = match Rollout::start(s.spec.clone(), 0) {
        Ok(started) => started,
        Err(_) => {
            return Outcome {
                phase: Phase::Aborted,
                decided_ms: None,
                applied_99_ms: None,
                applied_100_ms: None,
                reports: 0,
            }
        }
    };
    if let Action::SetCanaryShare { canary_bp } = first {
        sim.broadcast(0, canary_bp, false);
    }
    for node in 0..s.nodes {
        let phase = sim.rng.below(s.report_interval_ms);
        sim.at(phase, Event::Report { node });
    }
    sim.at(s.tick_ms, Event::Tick);
    let mut out = Outcome {
        phase: rollout.phase.clone(),
        decided_ms: None,
        applied_99_ms: None,
        applied_100_ms: None,
        reports: 0,
    };
    while let Some(Reverse((now, _, event))) = sim.queue.pop() {
        if now > s.limit_ms || out.applied_100_ms.is_some() {
            break;
        }
        sim.handle(now, event, &mut rollout, &mut out);
    }
    out.phase = rollout.phase;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(nodes: usize, slow: Option<(usize, f64)>) -> Scenario {
        Scenario {
            nodes,
            control_region: 0,
            report_interval_ms: 1_000,
            tick_ms: 500,
            requests_per_node_per_s: 200,
            healthy_p99_ms: 12.0,
            slow_canary_in: slow,
            spec: RolloutSpec {
                model: "ranker".into(),
                baseline: 1,
                canary: 2,
                steps: vec![1, 5, 25, 50, 100],
                hold_ms: 60_000,
                max_p99_ms: Some(50.0),
                max_p99_ratio: Some(2.0),
                max_error_rate: Some(0.01),
                min_requests: 20,
            },
            seed: 7,
            limit_ms: 3_600_000,
        }
    }

    #[test]
    fn a_canary_slow_in_one_region_is_rolled_back_on_all_1000_nodes_within_4_s() {
        let ap_southeast = 13;
        let out = run(&scenario(1_000, Some((ap_southeast, 90.0))));
        let Phase::RolledBack { reason } = &out.phase else { panic!("{:?}", out.phase) };
        assert!(reason.contains("ap-southeast"), "{reason}");
        let done = out.applied_100_ms.unwrap();
        assert!(done < 4_000, "rollback reached every node at {done} ms (simulated)");
        assert!(out.applied_99_ms.unwrap() <= done);
    }

    #[test]
    fn a_healthy_canary_is_promoted_on_every_node_after_all_holds() {
        let out = run(&scenario(1_000, None));
        assert_eq!(out.phase, Phase::Promoted);
        assert!(out.decided_ms.unwrap() >= 4 * 60_000, "{out:?}");
        assert!(out.applied_100_ms.is_some());
    }

    #[test]
    fn runs_are_reproducible() {
        let s = scenario(300, Some((5, 80.0)));
        assert_eq!(run(&s), run(&s));
    }
}
