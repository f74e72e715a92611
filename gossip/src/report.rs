//! Latency reports: what each node sends control every interval, per (model, version, arm)
//! slice of its region. Histograms travel as HdrHistogram V2 + DEFLATE serializations in base64,
//! so control can merge them without loss.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyReport {
    pub node: String,
    pub region: String,
    /// The interval the report covers, Unix milliseconds.
    pub start_ms: u64,
    pub end_ms: u64,
    pub slices: Vec<SliceReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceReport {
    pub model: String,
    pub version: u32,
    /// Experiment arm; empty without one.
    #[serde(default)]
    pub arm: String,
    pub requests: u64,
    pub errors: u64,
    pub degraded: u64,
    /// Request-path latency in microseconds (HdrHistogram V2 deflate, base64).
    pub total_us: String,
    /// The model's own compute time in microseconds, same encoding.
    pub compute_us: String,
    /// Outcomes from feedback: how many, their sum and sum of squares (1/0 for a correct /
    /// wrong label, or the reward), enough for a mean, a confidence interval and a test.
    #[serde(default)]
    pub outcomes: u64,
    #[serde(default)]
    pub outcome_sum: f64,
    #[serde(default)]
    pub outcome_sum_sq: f64,
}
