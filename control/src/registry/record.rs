//! A stored model version: the system spec's `models` table.

use meridian_models::{ModelManifest, ModelSpec, Signature};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Pushed and validated, not live (never deployed, or replaced by a later deploy).
    Staged,
    /// The live version of its model.
    Deployed,
    /// Retired: cannot be deployed or rolled back to.
    Archived,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Staged => "staged",
            Status::Deployed => "deployed",
            Status::Archived => "archived",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub id: u64,
    pub name: String,
    pub version: u32,
    pub digest: String,
    pub format: String,
    pub status: Status,
    /// Held-out accuracy from the spec's metrics, when the model is a classifier.
    pub accuracy: Option<f64>,
    pub signature: Signature,
    pub spec: ModelSpec,
    pub size_bytes: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub pushed_by: String,
}

impl ModelRecord {
    pub fn manifest(&self) -> ModelManifest {
        ModelManifest {
            name: self.name.clone(),
            version: self.version,
            digest: self.digest.clone(),
            format: self.format.clone(),
            signature: self.signature.clone(),
            spec: self.spec.clone(),
        }
    }
}
