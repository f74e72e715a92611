//! Telemetry: Prometheus metrics, each defined once in [`metrics`] and documented in
//! `docs/metrics.md`.

pub mod metrics;

pub use metrics::Metrics;
