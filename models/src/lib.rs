//! meridian-models: everything about a model that is not serving it.
//!
//! - [`spec`]: the feature spec pushed beside an ONNX file (ordered feature names, what the
//!   outputs mean, offline metrics).
//! - [`signature`]: input/output tensors read from the ONNX graph.
//! - [`manifest`]: a pushed model version as the registry and the nodes know it.
//! - [`runtime`]: the synchronous [`Runtime`](runtime::Runtime) trait and its tract CPU
//!   implementation; the wgpu GPU runtime will implement the same trait.
//! - [`demo`]: the demo models bundled in the binary.
//! - [`features`]: feature definitions, transforms, feature views, row assembly.
//! - [`interpret`]: turning output tensors into `prediction` / `confidence` per row.
//!
//! No I/O here beyond what the caller hands in as bytes (and the GPU device); no threads of its
//! own, no async.

pub mod demo;
pub mod digest;
pub mod error;
pub mod features;
pub mod interpret;
pub mod manifest;
pub mod onnx_build;
pub mod runtime;
pub mod signature;
pub mod spec;

pub use error::ModelError;
pub use manifest::ModelManifest;
pub use runtime::{InputBatch, OutputBatch, OutputTensor, Runtime, TensorData};
pub use signature::{DType, Signature, TensorInfo};
pub use spec::{ModelSpec, OutputSpec};
