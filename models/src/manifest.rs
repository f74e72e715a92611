//! A model version as the registry stores it and the nodes load it.

use serde::{Deserialize, Serialize};

use crate::signature::Signature;
use crate::spec::ModelSpec;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelManifest {
    pub name: String,
    /// Monotonic per name, starting at 1.
    pub version: u32,
    /// sha256 of the ONNX artifact, lowercase hex.
    pub digest: String,
    /// Artifact format; only `onnx` today.
    pub format: String,
    pub signature: Signature,
    pub spec: ModelSpec,
}
