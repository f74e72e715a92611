//! The tract CPU runtime: load ONNX bytes, fix the input to `[N, width]` f32 with a symbolic
//! batch `N`, optimise once, run any batch size.

use std::io::Cursor;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::{DimLike, Factoid};

use super::{InputBatch, OutputBatch, OutputTensor, Runtime, TensorData};
use crate::error::ModelError;
use crate::signature::{DType, Signature, TensorInfo};

type Plan = Arc<TypedRunnableModel>;

pub struct TractRuntime {
    plan: Plan,
    signature: Signature,
}

impl std::fmt::Debug for TractRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractRuntime").field("signature", &self.signature).finish()
    }
}

fn load_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Load(format!("{e:#}"))
}

impl TractRuntime {
    /// Load, type-check and optimise an ONNX model. Meridian serves models with one 2-D
    /// float input `[batch, features]`; anything else is refused with the reason.
    pub fn load(onnx: &[u8]) -> Result<Self, ModelError> {
        let mut model = tract_onnx::onnx().model_for_read(&mut Cursor::new(onnx)).map_err(load_err)?;
        let inputs = model.input_outlets().map_err(load_err)?.len();
        if inputs != 1 {
            return Err(ModelError::Signature(format!(
                "the model has {inputs} inputs; meridian serves models with one [batch, features] input"
            )));
        }
        let width = input_width(&model)?;
        let batch = model.symbols.sym("N");
        model.set_input_fact(0, f32::fact([batch.to_dim(), width.to_dim()]).into()).map_err(load_err)?;
        let typed = model.into_optimized().map_err(load_err)?;
        let signature = read_signature(&typed, width)?;
        let plan = typed.into_runnable().map_err(load_err)?;
        Ok(Self { plan, signature })
    }
}

/// Columns of the input, read from the graph's declared shape.
fn input_width(model: &InferenceModel) -> Result<usize, ModelError> {
    let fact = model.input_fact(0).map_err(load_err)?;
    let dims: Vec<_> = fact.shape.dims().cloned().collect();
    let width = match dims.as_slice() {
        [_, w] => w.concretize().and_then(|d| d.to_usize().ok()),
        _ => None,
    };
    match width {
        Some(w) if w > 0 => Ok(w),
        _ => Err(ModelError::Signature(format!(
            "the input must be [batch, features] with a fixed number of features, the graph declares {:?}",
            fact.shape
        ))),
    }
}

fn dtype_of(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::Fp32,
        DatumType::F64 => DType::Fp64,
        DatumType::I32 => DType::Int32,
        DatumType::I64 => DType::Int64,
        DatumType::Bool => DType::Bool,
        _ => return None,
    })
}

fn tensor_info(name: &str, fact: &TypedFact) -> Result<TensorInfo, ModelError> {
    let dtype = dtype_of(fact.datum_type).ok_or_else(|| {
        ModelError::Signature(format!("tensor {name:?} has unsupported type {:?}", fact.datum_type))
    })?;
    let shape = fact.shape.iter().map(|d| d.to_usize().ok()).collect();
    Ok(TensorInfo { name: name.to_string(), dtype, shape })
}

fn read_signature(model: &TypedModel, width: usize) -> Result<Signature, ModelError> {
    let input_name = model.node(model.input_outlets().map_err(load_err)?[0].node).name.clone();
    let inputs = vec![TensorInfo { name: input_name, dtype: DType::Fp32, shape: vec![None, Some(width)] }];
    let mut outputs = Vec::new();
    for (ix, outlet) in model.output_outlets().map_err(load_err)?.iter().enumerate() {
        let name = model
            .outlet_label(*outlet)
            .map(str::to_string)
            .unwrap_or_else(|| model.node(outlet.node).name.clone());
        let fact = model.output_fact(ix).map_err(load_err)?;
        outputs.push(tensor_info(&name, fact)?);
    }
    Ok(Signature { inputs, outputs })
}

fn to_data(value: &Tensor) -> Result<TensorData, ModelError> {
    let run = |e: TractError| ModelError::Run(format!("{e:#}"));
    Ok(match value.datum_type() {
        DatumType::F32 => {
            TensorData::F32(value.to_plain_array_view::<f32>().map_err(run)?.iter().copied().collect())
        }
        DatumType::F64 => {
            TensorData::F64(value.to_plain_array_view::<f64>().map_err(run)?.iter().copied().collect())
        }
        DatumType::I32 => {
            TensorData::I32(value.to_plain_array_view::<i32>().map_err(run)?.iter().copied().collect())
        }
        DatumType::I64 => {
            TensorData::I64(value.to_plain_array_view::<i64>().map_err(run)?.iter().copied().collect())
        }
        DatumType::Bool => {
            TensorData::Bool(value.to_plain_array_view::<bool>().map_err(run)?.iter().copied().collect())
        }
        other => return Err(ModelError::Run(format!("output of unsupported type {other:?}"))),
    })
}

impl Runtime for TractRuntime {
    fn name(&self) -> &str {
        "tract-cpu"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, input: &InputBatch) -> Result<OutputBatch, ModelError> {
        super::check_input(&self.signature, input)?;
        let width = input.width;
        let tensor = Tensor::from_shape(&[input.rows, width], &input.values)
            .map_err(|e| ModelError::Input(format!("{e:#}")))?;
        let outputs = self.plan.run(tvec!(tensor.into())).map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let mut tensors = Vec::with_capacity(outputs.len());
        for (value, info) in outputs.iter().zip(&self.signature.outputs) {
            tensors.push(OutputTensor {
                name: info.name.clone(),
                shape: value.shape().to_vec(),
                data: to_data(value)?,
            });
        }
        Ok(OutputBatch { rows: input.rows, tensors })
    }
}
