//! Runtimes run a batch of rows through a loaded model, synchronously, on the caller's thread.
//! Serving code calls them from dedicated worker threads, never from an async executor.
//!
//! - [`tract`]: the CPU runtime (tract-onnx), always available.
//! - [`gpu`]: the wgpu runtime (ONNX compiled to WGSL compute pipelines).
//! - [`select`]: picks one for a model and falls back from the GPU to tract.

pub mod gpu;
pub mod select;
pub mod tract;

use crate::error::ModelError;
use crate::signature::Signature;

/// Rows of one `[rows, width]` f32 input, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct InputBatch {
    pub rows: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl InputBatch {
    pub fn new(rows: usize, width: usize, values: Vec<f32>) -> Result<Self, ModelError> {
        if rows.checked_mul(width) != Some(values.len()) {
            return Err(ModelError::Input(format!(
                "{} values do not make {rows} rows of {width} columns",
                values.len()
            )));
        }
        Ok(Self { rows, width, values })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slice(&self, start: usize, end: usize) -> TensorData {
        match self {
            TensorData::F32(v) => TensorData::F32(v[start..end].to_vec()),
            TensorData::F64(v) => TensorData::F64(v[start..end].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[start..end].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[start..end].to_vec()),
            TensorData::Bool(v) => TensorData::Bool(v[start..end].to_vec()),
        }
    }
}

/// One output tensor; `shape[0]` is the batch dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputBatch {
    pub rows: usize,
    pub tensors: Vec<OutputTensor>,
}

impl OutputBatch {
    pub fn tensor(&self, name: &str) -> Option<&OutputTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Rows `start..end` of every output; how a batch run by a worker is handed back to the
    /// requests it was made of.
    pub fn slice_rows(&self, start: usize, end: usize) -> OutputBatch {
        let tensors = self
            .tensors
            .iter()
            .map(|t| {
                let per_row: usize = t.shape.iter().skip(1).product();
                let mut shape = t.shape.clone();
                if let Some(first) = shape.first_mut() {
                    *first = end - start;
                }
                OutputTensor {
                    name: t.name.clone(),
                    shape,
                    data: t.data.slice(start * per_row, end * per_row),
                }
            })
            .collect();
        OutputBatch { rows: end - start, tensors }
    }
}

/// Rows one `run` takes at most (runtimes split it further as their devices need).
pub const MAX_BATCH_ROWS: usize = 1 << 20;

/// The checks every runtime makes before running: the width, at least one row, at most
/// [`MAX_BATCH_ROWS`], and finite values (a NaN or infinity names its row and column).
pub fn check_input(signature: &Signature, input: &InputBatch) -> Result<(), ModelError> {
    let width = signature.input_width();
    if input.width != width {
        return Err(ModelError::Input(format!("rows have {} columns, the model takes {width}", input.width)));
    }
    if input.rows == 0 {
        return Err(ModelError::Input("the batch has no rows".to_string()));
    }
    if input.rows > MAX_BATCH_ROWS {
        return Err(ModelError::Input(format!(
            "the batch has {} rows, at most {MAX_BATCH_ROWS} are run at once",
            input.rows
        )));
    }
    if let Some(at) = input.values.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::Input(format!(
            "row {} column {} is {} (inputs must be finite numbers)",
            at / width,
            at % width,
            input.values[at]
        )));
    }
    Ok(())
}

/// A loaded model that runs batches. Implementations are thread-safe: one loaded model is
/// shared by all the worker threads that serve it.
pub trait Runtime: Send + Sync {
    /// Short name for logs, metrics and `models show` (`tract-cpu`, `wgpu:<adapter>`).
    fn name(&self) -> &str;
    fn signature(&self) -> &Signature;
    /// Run `input` (its width already checked against the signature by the caller or here).
    fn run(&self, input: &InputBatch) -> Result<OutputBatch, ModelError>;
}
