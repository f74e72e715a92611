//! The metrics sink: latency reports from every node, kept for a window and merged on demand
//! into percentiles and rates per (model, version, arm, region). HdrHistogram merges are exact,
//! so merged percentiles equal those of one histogram fed every sample. In memory: a control
//! restart loses the window, nodes keep reporting.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use meridian_gossip::report::LatencyReport;
use serde::{Deserialize, Serialize};

use crate::stats::Moments;

/// Reports older than this are forgotten.
pub const KEEP_MS: u64 = 3_600_000;
/// Most reports kept (all nodes together), whatever their age.
pub const MAX_REPORTS: usize = 100_000;

struct Decoded {
    end_ms: u64,
    region: String,
    slices: Vec<DecodedSlice>,
}

struct DecodedSlice {
    model: String,
    version: u32,
    arm: String,
    figures: Figures,
}

/// A slice's counts and histograms: one report's, or several merged.
struct Figures {
    requests: u64,
    errors: u64,
    degraded: u64,
    outcome: Moments,
    total: Histogram<u64>,
    compute: Histogram<u64>,
}

impl Figures {
    fn empty() -> Self {
        // Auto-resizing, so any node's range merges in (`new_from` would copy a deserialized
        // histogram's fixed range and refuse larger values).
        let empty = || Histogram::new(3).expect("valid HdrHistogram precision");
        Self {
            requests: 0,
            errors: 0,
            degraded: 0,
            outcome: Moments::default(),
            total: empty(),
            compute: empty(),
        }
    }

    fn add(&mut self, other: &Figures) -> Result<(), hdrhistogram::AdditionError> {
        self.requests += other.requests;
        self.errors += other.errors;
        self.degraded += other.degraded;
        self.outcome.add(&other.outcome);
        self.total.add(&other.total)?;
        self.compute.add(&other.compute)
    }
}

#[derive(Default)]
pub struct Sink {
    reports: Mutex<VecDeque<Decoded>>,
}

/// Merged figures of one slice over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceStats {
    pub model: String,
    pub version: u32,
    pub arm: String,
    pub region: String,
    pub requests: u64,
    pub errors: u64,
    pub degraded: u64,
    pub error_rate: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub compute_p50_ms: f64,
    pub compute_p99_ms: f64,
    /// Outcomes from feedback (accuracy for labels, mean reward) with a 95 % interval.
    pub outcome: Moments,
    pub outcome_mean: Option<f64>,
    pub outcome_ci95: Option<(f64, f64)>,
}

fn decode(text: &str, what: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("{what}: not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("{what}: not an HdrHistogram V2 serialization: {e:?}"))
}

impl Sink {
    /// Decode every slice of `report` first: a malformed one refuses the whole report, so a
    /// bad snapshot never reaches the merged figures.
    pub fn ingest(&self, report: LatencyReport, now_ms: u64) -> Result<usize, String> {
        if report.end_ms < report.start_ms {
            return Err("end_ms is before start_ms".to_string());
        }
        let mut slices = Vec::with_capacity(report.slices.len());
        for (i, s) in report.slices.into_iter().enumerate() {
            let at = format!("slices[{i}] ({} v{})", s.model, s.version);
            let total = decode(&s.total_us, &format!("{at} total_us"))?;
            let compute = decode(&s.compute_us, &format!("{at} compute_us"))?;
            if s.errors > s.requests || total.len() > s.requests {
                return Err(format!("{at}: counts do not add up"));
            }
            if !(s.outcome_sum.is_finite() && s.outcome_sum_sq.is_finite()) {
                return Err(format!("{at}: outcome sums are not finite"));
            }
            let outcome = Moments { n: s.outcomes, sum: s.outcome_sum, sum_sq: s.outcome_sum_sq };
            let figures = Figures {
                requests: s.requests,
                errors: s.errors,
                degraded: s.degraded,
                outcome,
                total,
                compute,
            };
            slices.push(DecodedSlice { model: s.model, version: s.version, arm: s.arm, figures });
        }
        let n = slices.len();
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.push_back(Decoded { end_ms: report.end_ms.min(now_ms), region: report.region, slices });
        while reports.len() > MAX_REPORTS || reports.front().is_some_and(|r| r.end_ms + KEEP_MS < now_ms) {
            reports.pop_front();
        }
        Ok(n)
    }

    /// Merged figures per (model, version, arm, region) of reports ending in the last
    /// `window_ms`, optionally for one model; with `by_region` false, regions are merged too
    /// (`region` is then `*`).
    pub fn query(
        &self,
        model: Option<&str>,
        window_ms: u64,
        now_ms: u64,
        by_region: bool,
    ) -> Vec<SliceStats> {
        type Key = (String, u32, String, String);
        let mut merged: BTreeMap<Key, Figures> = BTreeMap::new();
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let since = now_ms.saturating_sub(window_ms);
        for r in reports.iter().filter(|r| r.end_ms >= since) {
            for s in r.slices.iter().filter(|s| model.is_none_or(|m| m == s.model)) {
                let region = if by_region { r.region.clone() } else { "*".to_string() };
                let key = (s.model.clone(), s.version, s.arm.clone(), region);
                if merged.entry(key).or_insert_with(Figures::empty).add(&s.figures).is_err() {
                    tracing::warn!(model = %s.model, "a latency snapshot could not be merged");
                }
            }
        }
        let secs = (window_ms as f64 / 1e3).max(1e-3);
        let ms =
            |h: &Histogram<u64>, q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1e3 };
        merged
            .into_iter()
            .map(
                |(
                    (model, version, arm, region),
                    Figures { requests, errors, degraded, outcome, total, compute },
                )| {
                    SliceStats {
                        model,
                        version,
                        arm,
                        region,
                        requests,
                        errors,
                        degraded,
                        error_rate: if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
                        requests_per_s: requests as f64 / secs,
                        p50_ms: ms(&total, 0.5),
                        p90_ms: ms(&total, 0.9),
                        p99_ms: ms(&total, 0.99),
                        p999_ms: ms(&total, 0.999),
                        compute_p50_ms: ms(&compute, 0.5),
                        compute_p99_ms: ms(&compute, 0.99),
                        outcome_mean: outcome.mean(),
                        outcome_ci95: outcome.ci95(),
                        outcome,
                    }
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    use meridian_gossip::report::SliceReport;

    fn encode(h: &Histogram<u64>) -> String {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new().serialize(h, &mut bytes).unwrap();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn report(node: &str, samples: &[u64], errors: u64) -> LatencyReport {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for s in samples {
            h.record(*s).unwrap();
        }
        LatencyReport {
            node: node.into(),
            region: "eu".into(),
            start_ms: 0,
            end_ms: 1_000,
            slices: vec![SliceReport {
                model: "m".into(),
                version: 1,
                arm: String::new(),
                requests: samples.len() as u64 + errors,
                errors,
                degraded: 0,
                total_us: encode(&h),
                compute_us: encode(&h),
                outcomes: 0,
                outcome_sum: 0.0,
                outcome_sum_sq: 0.0,
            }],
        }
    }

    #[test]
    fn merged_percentiles_equal_those_of_one_histogram_fed_every_sample() {
        let sink = Sink::default();
        let mut all = Histogram::<u64>::new(3).unwrap();
        // Three nodes with different latency profiles (µs), one of them slow.
        let parts: Vec<Vec<u64>> = vec![
            (0..5_000).map(|i| 200 + i % 300).collect(),
            (0..3_000).map(|i| 900 + (i * 7) % 2_000).collect(),
            (0..500).map(|i| 20_000 + i * 13).collect(),
        ];
        for (i, part) in parts.iter().enumerate() {
            for s in part {
                all.record(*s).unwrap();
            }
            sink.ingest(report(&format!("n{i}"), part, 1), 1_000).unwrap();
        }
        let stats = sink.query(Some("m"), 60_000, 1_000, true);
        assert_eq!(stats.len(), 1);
        let s = &stats[0];
        assert_eq!(s.requests, 8_503);
        assert_eq!(s.errors, 3);
        for (got, q) in [(s.p50_ms, 0.5), (s.p90_ms, 0.9), (s.p99_ms, 0.99), (s.p999_ms, 0.999)] {
            assert_eq!(got, all.value_at_quantile(q) as f64 / 1e3, "quantile {q}");
        }
    }

    #[test]
    fn a_malformed_snapshot_is_refused_and_never_reaches_the_figures() {
        let sink = Sink::default();
        sink.ingest(report("a", &[100, 200, 300], 0), 1_000).unwrap();
        let before = sink.query(None, 60_000, 1_000, true);
        let mut bad = report("b", &[5_000_000], 0);
        bad.slices[0].total_us = "bm90IGEgaGlzdG9ncmFt".into();
        assert!(sink.ingest(bad, 1_000).unwrap_err().contains("HdrHistogram"));
        let mut lying = report("c", &[1, 2, 3], 0);
        lying.slices[0].requests = 1;
        assert!(sink.ingest(lying, 1_000).unwrap_err().contains("do not add up"));
        assert_eq!(sink.query(None, 60_000, 1_000, true), before);
    }
}
