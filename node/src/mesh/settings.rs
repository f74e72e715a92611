//! `[mesh]` in the node's config: where the mesh endpoint listens, whom to join through, the
//! mesh certificate, and the control keys catalogs must be signed with.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Timing profile of the mesh (see `meridian_gossip::mesh::MeshConfig`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshProfile {
    /// Nodes across continents: probes wait for 260 ms round trips; a crash is known in ~4 s.
    #[default]
    Wan,
    /// One LAN or one host: shorter periods; a crash is known in ~2 s.
    Lan,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshSettings {
    /// UDP address of the mesh endpoint. The node joins a mesh only when this is set.
    pub listen: Option<SocketAddr>,
    /// The address peers reach the mesh endpoint at, when not the bound one (NAT, 0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// Mesh addresses (`host:port`, UDP) of a few nodes to join through, resolved at start;
    /// this node's own is skipped, so every node may list the same seeds.
    pub seeds: Vec<String>,
    /// This node's mesh certificate and key (PEM), signed by the mesh CA; default `tls.cert`
    /// and `tls.key`. Peers refuse a node without one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The mesh CA (PEM) peers' certificates must chain to; default `ca_file`.
    pub ca: Option<PathBuf>,
    /// Name checked in peers' certificates; default: the peer's IP address (mesh
    /// certificates then carry their node's IP as a SAN).
    pub server_name: Option<String>,
    /// Control's public catalog-signing keys, hex (`GET /api/v1/mesh/control-key` on control).
    /// Several during a key rotation.
    pub control_keys: Vec<String>,
    pub profile: MeshProfile,
    /// About how many nodes the mesh has (sizes gossip fan-out and transmissions).
    pub expected_nodes: u32,
    /// After `meridian nodes drain`: how long the node keeps answering (for requests already
    /// routed to it) before it leaves the mesh.
    pub drain_grace_ms: u64,
    /// Also gossip this node's info this often when only its queue depth changed; 0 (the
    /// default): only when something else changes (models loaded or warm, catalog epoch, ready,
    /// draining), which goes out at once. Every info change costs every node of the mesh
    /// `max_transmissions` × ~150 bytes: at 1,000 nodes a refresh every 30 s would be ~60 KB/s
    /// per node (docs/simulations.md), so keep it off or long outside small meshes.
    pub info_refresh_ms: u64,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            listen: None,
            advertise: None,
            seeds: Vec::new(),
            cert: None,
            key: None,
            ca: None,
            server_name: None,
            control_keys: Vec::new(),
            profile: MeshProfile::Wan,
            expected_nodes: 100,
            drain_grace_ms: 2_000,
            info_refresh_ms: 0,
        }
    }
}

impl MeshSettings {
    pub fn enabled(&self) -> bool {
        self.listen.is_some()
    }

    /// Every problem with the mesh settings of `config`, at once.
    pub fn problems(&self, config: &crate::NodeConfig) -> Vec<String> {
        let mut p = Vec::new();
        if !self.enabled() {
            return p;
        }
        let (cert, key, ca) = self.files(config);
        if cert.is_none() || key.is_none() {
            p.push(
                "mesh: a mesh certificate is needed (mesh.cert and mesh.key, or tls.cert and tls.key)".into(),
            );
        }
        if ca.is_none() {
            p.push("mesh: the mesh CA is needed (mesh.ca or ca_file)".into());
        }
        if self.control_keys.is_empty() {
            p.push("mesh.control_keys: list control's public key (GET /api/v1/mesh/control-key)".into());
        }
        for (i, k) in self.control_keys.iter().enumerate() {
            if let Err(e) = meridian_gossip::mesh::ControlPublicKey::from_hex(k) {
                p.push(format!("mesh.control_keys[{i}]: {e}"));
            }
        }
        if self.info_refresh_ms != 0 && self.info_refresh_ms < 100 {
            p.push("mesh.info_refresh_ms must be 0 (off) or at least 100".into());
        }
        if !(2..=100_000).contains(&self.expected_nodes) {
            p.push("mesh.expected_nodes must be between 2 and 100000".into());
        }
        p
    }

    /// The certificate, key and CA files the mesh uses.
    pub fn files(&self, config: &crate::NodeConfig) -> (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>) {
        (
            self.cert.clone().or_else(|| config.tls.cert.clone()),
            self.key.clone().or_else(|| config.tls.key.clone()),
            self.ca.clone().or_else(|| config.ca_file.clone()),
        )
    }
}
