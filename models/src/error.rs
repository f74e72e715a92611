//! Errors of loading, validating and running models: one variant per thing a caller acts on.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    /// The bytes are not an ONNX model tract can read (corrupt, not ONNX, unsupported op).
    #[error("the artifact does not load as ONNX: {0}")]
    Load(String),
    /// The graph loads but its inputs/outputs are not a shape meridian can serve.
    #[error("unsupported model signature: {0}")]
    Signature(String),
    /// The feature spec is malformed or does not fit the graph.
    #[error("invalid feature spec: {0}")]
    Spec(String),
    /// The caller's batch does not fit the model (wrong width, too many rows).
    #[error("bad input: {0}")]
    Input(String),
    /// The runtime failed while running a batch that fit the signature.
    #[error("inference failed: {0}")]
    Run(String),
}
