//! The wgpu GPU runtime: ONNX graphs compiled to WGSL compute pipelines.
//!
//! - [`GpuContext::open`] finds an adapter (a real GPU first; a software one such as Mesa's
//!   lavapipe only when asked for) and opens a device on it, shared by every model.
//! - [`GpuRuntime::load`] compiles a model ([`compile`]: ONNX → steps; [`wgsl`]: a shader per
//!   step; [`exec`]: pipelines, weights, buffer pools, one submission per batch). A model with an
//!   operator or shape outside what is covered is refused with the reason, and stays on tract.
//!
//! Covered: MatMul and Gemm (64×64 tiles in workgroup memory, bias and activation fused),
//! Add/Sub/Mul/Div/Pow/Max/Min with broadcasting, Relu, LeakyRelu, Sigmoid, Tanh, Exp, Log, Neg,
//! Abs, Sqrt, Reciprocal, Softmax, ArgMax, ReduceMean/ReduceSum, Concat, Reshape, Flatten,
//! Squeeze, Unsqueeze, Transpose, Gather (constant tables or constant indices), Cast, Identity,
//! Dropout (inference), Constant.

mod compile;
mod exec;
mod fold;
mod lower;
mod ops;
mod shape;
mod wgsl;
mod wgsl_matmul;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prost::Message;

use super::{check_input, InputBatch, OutputBatch, OutputTensor, Runtime, TensorData};
use crate::error::ModelError;
use crate::signature::Signature;

/// How to pick an adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuOptions {
    /// Accept a software adapter (lavapipe, WARP) when there is no real GPU: for tests and CI.
    pub allow_software: bool,
}

/// A device shared by every model a node runs on the GPU.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({})", self.describe())
    }
}

fn rank(t: wgpu::DeviceType, allow_software: bool) -> Option<u8> {
    match t {
        wgpu::DeviceType::DiscreteGpu => Some(0),
        wgpu::DeviceType::IntegratedGpu => Some(1),
        wgpu::DeviceType::VirtualGpu => Some(2),
        wgpu::DeviceType::Other => Some(3),
        wgpu::DeviceType::Cpu if allow_software => Some(4),
        wgpu::DeviceType::Cpu => None,
    }
}

impl GpuContext {
    /// The best adapter there is, or `Ok(None)` when there is none usable.
    pub fn open(options: GpuOptions) -> Result<Option<Arc<Self>>, String> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let Some(adapter) = adapters
            .into_iter()
            .filter(|a| a.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS))
            .filter_map(|a| rank(a.get_info().device_type, options.allow_software).map(|r| (r, a)))
            .min_by_key(|(r, _)| *r)
            .map(|(_, a)| a)
        else {
            return Ok(None);
        };
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("meridian"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| format!("cannot open {}: {e}", info.name))?;
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            flag.store(true, Ordering::SeqCst);
            tracing::error!(?reason, %msg, "gpu device lost");
        });
        // Errors outside a scope must not abort the process (wgpu's default handler panics).
        let flag = lost.clone();
        device.on_uncaptured_error(Arc::new(move |e| {
            flag.store(true, Ordering::SeqCst);
            tracing::error!(error = %e, "gpu error outside a batch; the device is marked lost");
        }));
        Ok(Some(Arc::new(Self { device, queue, info, lost })))
    }

    /// `name (backend, type)`, for logs and `models show`.
    pub fn describe(&self) -> String {
        format!("{} ({:?}, {:?})", self.info.name, self.info.backend, self.info.device_type)
    }

    /// Whether the adapter is a software rasterizer running on the CPU (lavapipe, WARP).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether the device was lost or raised an error no batch could catch.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Mark the device unusable: a batch that timed out, or tests standing in for a lost adapter.
    pub fn mark_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }
}

/// Tuning of a GPU model.
#[derive(Debug, Clone, Copy)]
pub struct GpuModelOptions {
    /// Rows per submission at most (a larger batch runs as several); bounds device memory.
    pub max_rows: usize,
    /// Fill every activation buffer with NaN before each batch, so an element a kernel fails to
    /// write shows (parity tests).
    pub poison: bool,
    /// Which tiled matmul kernel runs products of more than 8 rows.
    pub matmul: MatmulTile,
}

impl Default for GpuModelOptions {
    fn default() -> Self {
        Self { max_rows: 8192, poison: false, matmul: MatmulTile::Auto }
    }
}

/// The tiled matmul kernels (products of up to 8 rows always run the skinny kernel). In a
/// node's config: `matmul_tile = "auto" | "64" | "128"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MatmulTile {
    /// 128×128 tiles when a product has at least [`WIDE_MIN_TILES`] of them, else 64×64.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// 64×64 tiles, 4×4 per thread.
    #[serde(rename = "64")]
    T64,
    /// 128×128 tiles, 8×8 per thread.
    #[serde(rename = "128")]
    T128,
}

/// Products with at least this many 128×128 output tiles run the wide kernel under
/// [`MatmulTile::Auto`] (about two workgroups per compute unit of a large GPU); smaller ones
/// keep the 64×64 kernel, whose four times as many workgroups fill the device better.
pub const WIDE_MIN_TILES: usize = 256;

pub struct GpuRuntime {
    ctx: Arc<GpuContext>,
    exec: exec::Executable,
    signature: Signature,
    name: String,
    options: GpuModelOptions,
}

impl std::fmt::Debug for GpuRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuRuntime({})", self.name)
    }
}

/// Why a model is not on the GPU.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GpuRefusal {
    /// The graph uses something the compiler does not cover.
    #[error("{0}")]
    Unsupported(String),
    /// The device refused the program or is lost.
    #[error("the device failed: {0}")]
    Device(String),
}

impl GpuRuntime {
    /// Compile `onnx` for the device. `signature` is the one tract read (the GPU runtime serves
    /// the same inputs and outputs, in the same order).
    pub fn load(
        ctx: &Arc<GpuContext>,
        onnx: &[u8],
        signature: &Signature,
        options: GpuModelOptions,
    ) -> Result<Self, GpuRefusal> {
        if ctx.is_lost() {
            return Err(GpuRefusal::Device("the device is lost".into()));
        }
        let proto = tract_onnx::pb::ModelProto::decode(onnx)
            .map_err(|e| GpuRefusal::Unsupported(format!("cannot decode the graph: {e}")))?;
        let program =
            compile::compile(&proto, signature.input_width()).map_err(|e| GpuRefusal::Unsupported(e.0))?;
        let names: Vec<&str> = program.outputs.iter().map(|o| o.name.as_str()).collect();
        let expected: Vec<&str> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
        if names != expected {
            return Err(GpuRefusal::Unsupported(format!(
                "outputs {names:?} differ from the signature's {expected:?}"
            )));
        }
        let exec = exec::Executable::build(ctx, program, options.max_rows.max(1), options.matmul)
            .map_err(GpuRefusal::Device)?;
        let name = format!("wgpu:{}", ctx.info.name);
        Ok(Self { ctx: ctx.clone(), exec, signature: signature.clone(), name, options })
    }

    /// Number of compute steps (kernels) per batch, after fusion.
    pub fn steps(&self) -> usize {
        self.exec.program().steps.len()
    }
}

impl Runtime for GpuRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, input: &InputBatch) -> Result<OutputBatch, ModelError> {
        self.run_with(input, self.options.matmul)
    }
}

impl GpuRuntime {
    /// Run `input` with the tiled matmul kernel `matmul` says (the load-time check runs each);
    /// a kernel the model was not built with falls back to the 64×64 one.
    pub fn run_with(&self, input: &InputBatch, matmul: MatmulTile) -> Result<OutputBatch, ModelError> {
        check_input(&self.signature, input)?;
        if self.ctx.is_lost() {
            return Err(ModelError::Run("gpu: the device is lost".into()));
        }
        let program = self.exec.program();
        let mut outputs: Vec<Vec<f32>> = program.outputs.iter().map(|_| Vec::new()).collect();
        let chunk = self.exec.max_rows;
        let mut start = 0;
        while start < input.rows {
            let rows = chunk.min(input.rows - start);
            let values = &input.values[start * input.width..(start + rows) * input.width];
            for (all, part) in
                outputs.iter_mut().zip(self.exec.run(&self.ctx, values, rows, self.options.poison, matmul)?)
            {
                all.extend_from_slice(&part);
            }
            start += rows;
        }
        let tensors = program
            .outputs
            .iter()
            .zip(outputs)
            .map(|(out, values)| {
                let shape: Vec<usize> = std::iter::once(input.rows).chain(out.rest.iter().copied()).collect();
                let info = self.signature.output(&out.name);
                let data = match info.map(|i| i.dtype) {
                    Some(crate::DType::Int64) => TensorData::I64(values.iter().map(|v| *v as i64).collect()),
                    Some(crate::DType::Int32) => TensorData::I32(values.iter().map(|v| *v as i32).collect()),
                    Some(crate::DType::Fp64) => {
                        TensorData::F64(values.iter().map(|v| f64::from(*v)).collect())
                    }
                    _ if out.int => TensorData::I64(values.iter().map(|v| *v as i64).collect()),
                    _ => TensorData::F32(values),
                };
                OutputTensor { name: out.name.clone(), shape, data }
            })
            .collect();
        Ok(OutputBatch { rows: input.rows, tensors })
    }
}
