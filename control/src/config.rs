//! The control service's configuration: TOML file, then `MERIDIAN_CONTROL_*` env, then flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Registry database and artifacts.
    pub data_dir: PathBuf,
    /// Largest artifact a push may upload.
    pub max_artifact_bytes: usize,
    /// A node that has not reported for this long is shown as `down`.
    pub node_down_after_secs: u64,
    /// Longest a node's catalog long-poll is held open.
    pub catalog_wait_max_ms: u64,
    /// How often rollouts are judged and advanced.
    pub rollout_tick_ms: u64,
    /// Who may use the operator API.
    pub auth: ControlAuthConfig,
    /// TLS 1.3 for the API (`cert`, `key`); plaintext only with `plaintext_http = true`.
    pub tls: meridian_node::transport::tls::TlsConfig,
    /// File holding control's ed25519 catalog-signing seed (64 hex digits, kept like a
    /// password). Nodes trust the matching public key (`mesh.control_keys`) and refuse catalogs
    /// it did not sign. Default: `<data_dir>/mesh-signing.key`, created at first start.
    pub signing_key: Option<PathBuf>,
}

/// `[auth]`: the operator API needs an `admin` key unless this is turned off explicitly. The
/// routes nodes call (catalog, artifacts, heartbeats, reports, the node list) stay open.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlAuthConfig {
    pub enabled: bool,
    /// Hex sha256 of a bootstrap admin key (`printf %s "$KEY" | sha256sum`); env
    /// `MERIDIAN_CONTROL_ADMIN_KEY` gives the key itself. Without either, and with no admin key
    /// in the registry, control creates one at first start in `<data_dir>/admin.key`.
    pub admin_key_sha256: Option<String>,
    /// JWT issuers whose tokens (with the `admin` scope) the operator API also accepts.
    pub jwt: Vec<meridian_node::auth::jwt::JwtIssuer>,
}

impl Default for ControlAuthConfig {
    fn default() -> Self {
        Self { enabled: true, admin_key_sha256: None, jwt: Vec::new() }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("/var/lib/meridian/control"),
            max_artifact_bytes: 512 << 20,
            node_down_after_secs: 15,
            catalog_wait_max_ms: 25_000,
            rollout_tick_ms: 1_000,
            auth: ControlAuthConfig::default(),
            tls: meridian_node::transport::tls::TlsConfig::default(),
            signing_key: None,
        }
    }
}

impl ControlConfig {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Every problem at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir must be set".to_string());
        }
        if self.max_artifact_bytes < 1024 {
            problems.push("max_artifact_bytes must be at least 1024".to_string());
        }
        if self.node_down_after_secs == 0 {
            problems.push("node_down_after_secs must be positive".to_string());
        }
        if !(100..=120_000).contains(&self.catalog_wait_max_ms) {
            problems.push("catalog_wait_max_ms must be between 100 and 120000".to_string());
        }
        if self.rollout_tick_ms == 0 {
            problems.push("rollout_tick_ms must be positive".to_string());
        }
        if let Some(h) = &self.auth.admin_key_sha256 {
            if h.len() != 64 || hex::decode(h).is_err() {
                problems.push("auth.admin_key_sha256 must be 64 hex digits (a sha256)".to_string());
            }
        }
        problems.extend(self.auth.jwt.iter().enumerate().flat_map(|(i, j)| j.problems(i)));
        problems.extend(self.tls.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
