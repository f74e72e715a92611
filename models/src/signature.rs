//! Model signatures: the name, element type and shape of each input and output tensor,
//! as read from the ONNX graph (`None` in a shape is the symbolic batch dimension).

use serde::{Deserialize, Serialize};

/// Element types meridian serves; names follow the Open Inference Protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DType {
    Fp32,
    Fp64,
    Int32,
    Int64,
    Bool,
}

impl DType {
    /// The Open Inference Protocol datatype name (`FP32`, `INT64`, ...).
    pub fn v2_name(self) -> &'static str {
        match self {
            DType::Fp32 => "FP32",
            DType::Fp64 => "FP64",
            DType::Int32 => "INT32",
            DType::Int64 => "INT64",
            DType::Bool => "BOOL",
        }
    }

    /// Bytes per element in the binary tensor encoding.
    pub fn size(self) -> usize {
        match self {
            DType::Bool => 1,
            DType::Fp32 | DType::Int32 => 4,
            DType::Fp64 | DType::Int64 => 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Dimensions; `None` is the batch dimension (any size).
    pub shape: Vec<Option<usize>>,
}

impl TensorInfo {
    /// Shape as the Open Inference Protocol writes it: `-1` for a variable dimension.
    pub fn v2_shape(&self) -> Vec<i64> {
        self.shape.iter().map(|d| d.map_or(-1, |n| n as i64)).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

impl Signature {
    /// Columns of the single `[batch, width]` input meridian feeds.
    pub fn input_width(&self) -> usize {
        self.inputs.first().and_then(|t| t.shape.get(1).copied().flatten()).unwrap_or(0)
    }

    pub fn output(&self, name: &str) -> Option<&TensorInfo> {
        self.outputs.iter().find(|t| t.name == name)
    }
}
