//! A stored feature row: values by feature name and when they were written (Unix ms, so the
//! age is meaningful across nodes and restarts).

use std::collections::BTreeMap;

use meridian_models::features::FeatureValue;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRow {
    pub values: BTreeMap<String, FeatureValue>,
    pub written_at_ms: u64,
}

impl StoredRow {
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.written_at_ms)
    }

    pub fn expired(&self, ttl_secs: u64, now_ms: u64) -> bool {
        self.age_ms(now_ms) > ttl_secs.saturating_mul(1000)
    }
}

/// Wall-clock Unix milliseconds: feature rows are compared across machines.
#[allow(clippy::disallowed_methods)]
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
