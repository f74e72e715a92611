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
    /// `host:port` of the node's QUIC endpoint (HTTP/3 and the native protocol), when it has TLS.
    #[serde(default)]
    pub quic_addr: Option<String>,
    /// Set by `meridian nodes drain`: the node takes no new traffic and is about to leave.
    #[serde(default)]
    pub draining: bool,
}

/// A member's SWIM state as the answering node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    Alive,
    Suspect,
    Down,
}

impl MemberStatus {
    /// The name it has in JSON: `alive`, `suspect`, `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Down => "down",
        }
    }
}

/// One node in `GET /api/v1/mesh/nodes`: the answering node itself (`is_self`) or a member as
/// that node sees it, with the info the member last gossiped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshNode {
    pub id: String,
    pub region: String,
    pub state: MemberStatus,
    #[serde(rename = "self")]
    pub is_self: bool,
    /// The mesh (gossip) endpoint, `host:port` over UDP; absent without a mesh.
    pub mesh_addr: Option<String>,
    /// QUIC's smoothed RTT from the answering node, in ms, while a connection is open.
    pub rtt_ms: Option<f64>,
    /// The member's last gossiped info; absent until it has published one.
    pub info: Option<NodeInfo>,
}

/// The answer of `GET /api/v1/mesh/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshView {
    /// The answering node's id.
    pub node: String,
    /// Whether the answering node runs the mesh; without it `nodes` holds only itself.
    pub mesh: bool,
    /// The catalog epoch the answering node holds.
    pub catalog_epoch: u64,
    /// Every node it knows, itself included, sorted by region then id.
    pub nodes: Vec<MeshNode>,
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
