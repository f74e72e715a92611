//! meridian-node: the serving daemon.
//!
//! - [`auth`]: who may call: JWTs and API keys to principals with scopes, per-key rate limits,
//!   the HTTP middleware that enforces both.
//! - [`batch`]: batch inference jobs: files in, predictions out, checkpointed in sled, run on
//!   the models' low-priority lane, optionally spread over a region's nodes.
//! - [`config`]: the node's typed configuration.
//! - [`features`]: the feature store client: L1, sled, Redis, circuit breaker.
//! - [`inference`]: loaded models, their worker threads and bounded queues, the serving table
//!   that says which version answers; models run on worker threads, never on the executor.
//! - [`serve`]: the HTTP/1.1 + HTTP/2 front end (seed API, Open Inference Protocol / KServe V2,
//!   health, metrics) over one request path; errors mapped to status codes in one place.
//! - [`sync`]: following control's catalog, fetching artifacts by digest, persisting the last
//!   good catalog so a restart serves with control down; heartbeats to control.
//! - [`telemetry`]: Prometheus metrics, defined once.
//! - [`transport`]: TLS 1.3, HTTP/1.1 over TLS, the QUIC endpoint with HTTP/3 and the native
//!   protocol ([`native`]).
//! - [`node`]: `spawn(config, shutdown)`: start everything, stop everything.

pub mod auth;
pub mod batch;
pub mod client;
pub mod config;
pub mod features;
pub mod inference;
pub mod mesh;
pub mod native;
pub mod node;
pub mod serve;
pub mod sync;
pub mod telemetry;
pub mod transport;

pub use config::NodeConfig;
pub use node::{spawn, NodeError, NodeHandle, NodeState};
