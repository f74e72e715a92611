//! What a node says about itself: to control (heartbeats) and to its peers (the mesh gossips
//! it when it changes). Fields added later carry serde defaults so older readers and writers
//! keep working; the mesh encodes it with postcard, so no field may use
//! `skip_serializing_if` (a test in `mesh::state` catches that).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub region: String,
    /// Base URL of the node's HTTP front end, e.g. `http://127.0.0.1:8081`.
    pub http_url: String,
    /// Epoch of the catalog the node serves.
    pub catalog_epoch: u64,
    /// Whether every live model of that catalog is loaded and warm.
    pub ready: bool,
    pub models: Vec<LoadedModel>,
    /// Requests in the node's model queues when the report was made.
    pub queued: u64,
    /// Whether a GPU adapter serves models on this node.
    #[serde(default)]
    pub gpu: bool,
    /// Freshness: the mesh core stamps each version the node publishes (a restarted node's
    /// versions count again from 1 under a later identity generation). Peers keep the newest.
    #[serde(default)]
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadedModel {
    pub name: String,
    pub version: u32,
    /// Which runtime serves it (`tract-cpu`, ...).
    pub runtime: String,
    /// Why that runtime (the GPU's reason for refusing the model, a config setting, ...).
    #[serde(default)]
    pub runtime_reason: String,
    /// Whether this version answers requests without a version pinned.
    pub live: bool,
    /// Whether it is loaded and warmed up (ready to serve without a cold start).
    #[serde(default)]
    pub warm: bool,
}
