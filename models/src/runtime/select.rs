//! Which runtime serves a model, and why; and the GPU → tract fallback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::gpu::{GpuContext, GpuModelOptions, GpuRuntime, MatmulTile};
use super::tract::TractRuntime;
use super::{InputBatch, OutputBatch, Runtime, TensorData};
use crate::error::ModelError;
use crate::signature::Signature;

/// `runtime` in a node's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeMode {
    /// The GPU when there is one and it covers the model, tract otherwise.
    #[default]
    Auto,
    /// Always tract.
    Cpu,
    /// The GPU; a model it cannot cover still runs on tract (and says why).
    Gpu,
}

/// A model's runtime and the reason it was chosen.
pub struct Selected {
    pub runtime: Arc<dyn Runtime>,
    pub reason: String,
}

impl std::fmt::Debug for Selected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Selected({}: {})", self.runtime.name(), self.reason)
    }
}

/// Largest difference allowed between the GPU's and tract's outputs at the load-time check:
/// `|gpu − cpu| ≤ TOLERANCE · max(1, |cpu|)`.
pub const TOLERANCE: f32 = 1e-4;

/// Load `onnx` on tract, and on the GPU when `mode` and `gpu` allow and the compiler covers
/// it; the GPU program must reproduce tract's output on a check batch before it serves.
pub fn select(
    onnx: &[u8],
    mode: RuntimeMode,
    gpu: Option<&Arc<GpuContext>>,
    options: GpuModelOptions,
) -> Result<Selected, ModelError> {
    let cpu = Arc::new(TractRuntime::load(onnx)?);
    let on_cpu = |reason: String| Ok(Selected { runtime: cpu.clone(), reason });
    let ctx = match (mode, gpu) {
        (RuntimeMode::Cpu, _) => return on_cpu("runtime = \"cpu\" in the node's config".into()),
        (_, None) => return on_cpu("no GPU adapter on this node".into()),
        (_, Some(ctx)) => ctx,
    };
    let gpu = match GpuRuntime::load(ctx, onnx, cpu.signature(), options) {
        Ok(g) => g,
        Err(why) => return on_cpu(format!("the GPU runtime cannot run it: {why}")),
    };
    if let Err(why) = agree(&gpu, cpu.as_ref()) {
        return on_cpu(format!("the GPU's output differed from tract's at load: {why}"));
    }
    let reason = format!("compiled to {} GPU kernels on {}", gpu.steps(), ctx.describe());
    Ok(Selected { runtime: Arc::new(Fallback::new(gpu, cpu)), reason })
}

/// Run deterministic check batches on both and compare: 7 rows (the skinny matmul kernel)
/// and 70 rows with each tiled kernel, so every kernel a batch may meet ran once on this
/// device before the model serves.
fn agree(gpu: &GpuRuntime, cpu: &dyn Runtime) -> Result<(), String> {
    let width = cpu.signature().input_width();
    for (rows, matmul) in [(7, MatmulTile::Auto), (70, MatmulTile::T64), (70, MatmulTile::T128)] {
        let values = (0..rows * width).map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0).collect();
        let input = InputBatch::new(rows, width, values).map_err(|e| e.to_string())?;
        let a = gpu.run_with(&input, matmul).map_err(|e| e.to_string())?;
        let b = cpu.run(&input).map_err(|e| e.to_string())?;
        compare(&a, &b).map_err(|e| format!("{e} ({rows} rows)"))?;
    }
    Ok(())
}

/// `Ok` when every output matches within [`TOLERANCE`]; otherwise where the first mismatch is.
pub fn compare(gpu: &OutputBatch, cpu: &OutputBatch) -> Result<(), String> {
    for (g, c) in gpu.tensors.iter().zip(&cpu.tensors) {
        if g.shape != c.shape {
            return Err(format!("{}: shape {:?}, tract {:?}", g.name, g.shape, c.shape));
        }
        let pairs: Vec<(f64, f64)> = match (&g.data, &c.data) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                x.iter().zip(y).map(|(a, b)| (f64::from(*a), f64::from(*b))).collect()
            }
            (TensorData::I64(x), TensorData::I64(y)) => {
                if let Some(i) = x.iter().zip(y).position(|(a, b)| a != b) {
                    return Err(format!("{}[{i}]: {} vs tract {}", g.name, x[i], y[i]));
                }
                continue;
            }
            _ => return Err(format!("{}: element types differ", g.name)),
        };
        for (i, (a, b)) in pairs.into_iter().enumerate() {
            let within = (a - b).abs() <= f64::from(TOLERANCE) * b.abs().max(1.0);
            if !within {
                return Err(format!("{}[{i}]: {a} vs tract {b}", g.name));
            }
        }
    }
    Ok(())
}

/// Serves on the GPU; when a batch fails on the device (lost adapter, dispatch error) it and
/// every later batch run on tract. Errors in the input itself are returned as they are.
pub struct Fallback {
    gpu: GpuRuntime,
    cpu: Arc<TractRuntime>,
    failed: AtomicBool,
    fallback_name: String,
}

impl Fallback {
    pub fn new(gpu: GpuRuntime, cpu: Arc<TractRuntime>) -> Self {
        let fallback_name = format!("tract-cpu (fell back from {})", gpu.name());
        Self { gpu, cpu, failed: AtomicBool::new(false), fallback_name }
    }

    /// Whether the GPU failed and tract serves now.
    pub fn fell_back(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

impl Runtime for Fallback {
    fn name(&self) -> &str {
        if self.fell_back() {
            &self.fallback_name
        } else {
            self.gpu.name()
        }
    }

    fn signature(&self) -> &Signature {
        self.cpu.signature()
    }

    fn run(&self, input: &InputBatch) -> Result<OutputBatch, ModelError> {
        if !self.fell_back() {
            match self.gpu.run(input) {
                Err(ModelError::Run(why)) => {
                    if !self.failed.swap(true, Ordering::SeqCst) {
                        let runtime = self.gpu.name();
                        tracing::warn!(runtime, %why, "GPU batch failed; serving on tract from now on");
                    }
                }
                other => return other,
            }
        }
        self.cpu.run(input)
    }
}
