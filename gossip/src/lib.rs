//! meridian-gossip: the state every node shares, and (in the mesh issue) how it spreads.
//!
//! Owns today, no I/O:
//! - [`catalog`]: the desired state published by control: which version of each model is
//!   live, the previous one kept for instant rollback, an epoch that orders catalogs and a
//!   digest that tells two nodes whether they agree.
//! - [`experiment`]: A/B experiments and their sticky, stateless assignment.
//! - [`report`]: latency reports (HdrHistogram snapshots) from nodes to control.
//! - [`keys`]: API keys as nodes see them (hash, scopes, models, limits) and their format.
//! - [`node_info`]: what a node reports about itself (region, address, models loaded).
//! - [`mesh`]: SWIM membership (foca) and the replicated state (signed catalog, revoked keys,
//!   node info) as a sans-IO core driven by `now`, inputs and an RNG; anti-entropy pulls.
//!
//! - [`driver`] (feature `driver`, default): the QUIC driver of the mesh core: mutual TLS
//!   with the mesh CA, SWIM over QUIC datagrams, pulls over QUIC streams, on tokio.

pub mod catalog;
#[cfg(feature = "driver")]
pub mod driver;
pub mod experiment;
pub mod keys;
pub mod mesh;
pub mod node_info;
pub mod report;

pub use catalog::{Catalog, CatalogEntry, Placement};
pub use experiment::{Arm, Experiment};
pub use keys::{KeyEntry, KeyLimits, Scope, Scopes};
pub use node_info::{LoadedModel, MemberStatus, MeshNode, MeshView, NodeInfo};
