//! Latency histograms per (model, version, arm) of this node, drained into a
//! [`LatencyReport`] every interval for control to merge across nodes and regions.
//! Recording is a mutex, three map lookups without allocation, and two HdrHistogram records.

use std::sync::Mutex;

use base64::Engine;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use meridian_gossip::report::{LatencyReport, SliceReport};
use rustc_hash::FxHashMap;

/// One request's figures, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub model: &'a str,
    pub version: u32,
    pub arm: &'a str,
    pub total_us: u64,
    pub compute_us: Option<u64>,
    pub ok: bool,
    pub degraded: bool,
}

struct Slice {
    requests: u64,
    errors: u64,
    degraded: u64,
    outcomes: u64,
    outcome_sum: f64,
    outcome_sum_sq: f64,
    total: Histogram<u64>,
    compute: Histogram<u64>,
}

impl Slice {
    fn new() -> Self {
        // 3 significant digits is always a valid precision: this cannot fail.
        let h = || Histogram::new(3).expect("valid HdrHistogram precision");
        Self {
            requests: 0,
            errors: 0,
            degraded: 0,
            outcomes: 0,
            outcome_sum: 0.0,
            outcome_sum_sq: 0.0,
            total: h(),
            compute: h(),
        }
    }
}

// FxHash: these keys are our own model and arm names, not attacker-chosen, and the default
// SipHash was a third of the recording cost.
type Slices = FxHashMap<String, FxHashMap<u32, FxHashMap<String, Slice>>>;

#[derive(Default)]
pub struct Recorder {
    slices: Mutex<Slices>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

fn record(h: &mut Histogram<u64>, value: u64) {
    let value = value.max(1);
    if h.record(value).is_err() {
        h.saturating_record(value);
    }
}

fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    if V2DeflateSerializer::new().serialize(h, &mut bytes).is_err() {
        bytes.clear();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The slice of (model, version, arm), created if new (the feedback path; `record` inlines a
/// faster lookup that the borrow checker only accepts inside one function body).
fn slice<'a>(slices: &'a mut Slices, model: &str, version: u32, arm: &str) -> &'a mut Slice {
    if !slices.contains_key(model) {
        slices.insert(model.to_string(), FxHashMap::default());
    }
    let by_arm = slices.get_mut(model).expect("inserted above").entry(version).or_default();
    if !by_arm.contains_key(arm) {
        by_arm.insert(arm.to_string(), Slice::new());
    }
    by_arm.get_mut(arm).expect("inserted above")
}

impl Recorder {
    /// An outcome from feedback for a request `model` v`version` (`arm`) answered.
    pub fn record_outcome(&self, model: &str, version: u32, arm: &str, value: f64) {
        let mut slices = self.slices.lock().unwrap_or_else(|p| p.into_inner());
        let slice = slice(&mut slices, model, version, arm);
        slice.outcomes += 1;
        slice.outcome_sum += value;
        slice.outcome_sum_sq += value * value;
    }

    pub fn record(&self, s: Sample<'_>) {
        let mut slices = self.slices.lock().unwrap_or_else(|p| p.into_inner());
        // The hot path: one hash per level, keys allocated only for a new slice.
        let by_version = match slices.get_mut(s.model) {
            Some(v) => v,
            None => slices.entry(s.model.to_string()).or_default(),
        };
        let by_arm = by_version.entry(s.version).or_default();
        let slice = match by_arm.get_mut(s.arm) {
            Some(slice) => slice,
            None => by_arm.entry(s.arm.to_string()).or_insert_with(Slice::new),
        };
        slice.requests += 1;
        slice.degraded += u64::from(s.degraded);
        if s.ok {
            // `record` grows an auto-resizing histogram; `saturating_record` would clamp every
            // value to the fresh histogram's tiny initial range.
            record(&mut slice.total, s.total_us);
            if let Some(c) = s.compute_us {
                record(&mut slice.compute, c);
            }
        } else {
            slice.errors += 1;
        }
    }

    /// Everything recorded since the last call, as a report; `None` when nothing was.
    pub fn take(&self, node: &str, region: &str, start_ms: u64, end_ms: u64) -> Option<LatencyReport> {
        let taken = std::mem::take(&mut *self.slices.lock().unwrap_or_else(|p| p.into_inner()));
        let mut out = Vec::new();
        for (model, versions) in taken {
            for (version, arms) in versions {
                for (arm, s) in arms {
                    out.push(SliceReport {
                        model: model.clone(),
                        version,
                        arm,
                        requests: s.requests,
                        errors: s.errors,
                        degraded: s.degraded,
                        total_us: encode(&s.total),
                        compute_us: encode(&s.compute),
                        outcomes: s.outcomes,
                        outcome_sum: s.outcome_sum,
                        outcome_sum_sq: s.outcome_sum_sq,
                    });
                }
            }
        }
        (!out.is_empty()).then(|| LatencyReport {
            node: node.to_string(),
            region: region.to_string(),
            start_ms,
            end_ms,
            slices: out,
        })
    }
}
