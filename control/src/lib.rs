//! meridian-control: the control service and the `meridian` CLI.
//!
//! - [`config`]: the control service's typed configuration.
//! - [`registry`]: model versions, artifacts and the catalog (sled + files).
//! - [`api`]: the operator and node-facing HTTP API (axum).
//! - [`directory`]: the nodes that reported in, for `meridian nodes`.
//! - [`sink`]: latency reports from nodes, merged into percentiles per slice.
//! - [`stats`]: confidence intervals and the sequential test for experiment results.
//! - [`rollout`]: the canary rollout planner (pure).
//! - [`server`]: `run(config, shutdown)`: bind, serve, stop.
//! - [`cli`]: the `meridian` command line (clients of the control and node APIs, `up`).
//!
//! Static stability: nodes keep serving their last catalog while control is down; control
//! being down stops publishing, nothing else.

pub mod api;
pub mod cli;
pub mod config;
pub mod directory;
pub mod registry;
pub mod rollout;
pub mod server;
pub mod signing;
pub mod sink;
pub mod stats;

pub use config::ControlConfig;
pub use server::{spawn, ControlHandle};
