//! The nodes that reported to control, with when they last did. In memory: after a control
//! restart the directory fills again within one heartbeat interval.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use meridian_gossip::NodeInfo;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct Directory {
    nodes: Mutex<BTreeMap<String, (NodeInfo, Instant)>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub info: NodeInfo,
    /// `up` or `down` (no report within the configured window).
    pub state: String,
    pub last_seen_ms_ago: u64,
}

impl Directory {
    pub fn report(&self, info: NodeInfo, now: Instant) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.insert(info.id.clone(), (info, now));
    }

    pub fn list(&self, now: Instant, down_after: Duration) -> Vec<NodeStatus> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .values()
            .map(|(info, seen)| {
                let ago = now.saturating_duration_since(*seen);
                NodeStatus {
                    info: info.clone(),
                    state: if ago > down_after { "down" } else { "up" }.to_string(),
                    last_seen_ms_ago: ago.as_millis() as u64,
                }
            })
            .collect()
    }
}
