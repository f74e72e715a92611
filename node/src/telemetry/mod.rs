//! Telemetry: Prometheus metrics, each defined once in [`metrics`] and documented in
//! `docs/metrics.md`; latency histograms reported upstream to control in [`histograms`].

pub mod histograms;
pub mod metrics;

pub use metrics::Metrics;
