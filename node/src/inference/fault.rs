//! Fault injection for tests and game days: a runtime wrapper that makes one model version
//! slow on this node (`[[faults]]` in the node config), to watch guards and rollbacks act on a
//! real slowdown.

use std::time::Duration;

use meridian_models::{InputBatch, ModelError, OutputBatch, Runtime, Signature};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub model: String,
    pub version: u32,
    /// Added to every batch this version runs.
    pub delay_ms: u64,
}

pub struct Slowed {
    pub inner: std::sync::Arc<dyn Runtime>,
    pub delay: Duration,
}

impl Runtime for Slowed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn run(&self, input: &InputBatch) -> Result<OutputBatch, ModelError> {
        std::thread::sleep(self.delay);
        self.inner.run(input)
    }
}
