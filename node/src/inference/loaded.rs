//! A model version loaded into a runtime, warmed up, with its worker pool.

use std::sync::Arc;

use meridian_models::runtime::gpu::{GpuContext, GpuModelOptions};
use meridian_models::runtime::select::{select, RuntimeMode};
use meridian_models::{InputBatch, ModelError, ModelManifest, Runtime};

use super::fault::Slowed;
use super::worker::{PoolConfig, WorkerPool};

pub struct LoadedModel {
    pub manifest: ModelManifest,
    runtime: Arc<dyn Runtime>,
    /// Why this runtime serves the model (the GPU's refusal, a config setting, ...).
    pub runtime_reason: String,
    pub pool: WorkerPool,
}

/// Where a model may run.
#[derive(Debug, Clone)]
pub struct Placement {
    pub mode: RuntimeMode,
    pub gpu: Option<Arc<GpuContext>>,
    pub options: GpuModelOptions,
}

impl Placement {
    pub fn cpu() -> Self {
        Self { mode: RuntimeMode::Cpu, gpu: None, options: GpuModelOptions::default() }
    }
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedModel({} v{})", self.manifest.name, self.manifest.version)
    }
}

impl LoadedModel {
    /// Load `onnx` (already verified against `manifest.digest`), run one warm-up row, start
    /// the workers. Blocking and CPU-heavy: call it off the async executor.
    pub fn load(
        manifest: ModelManifest,
        onnx: &[u8],
        pool: PoolConfig,
        placement: &Placement,
        fault_delay: Option<std::time::Duration>,
    ) -> Result<Self, ModelError> {
        let chosen = select(onnx, placement.mode, placement.gpu.as_ref(), placement.options)?;
        let runtime = chosen.runtime;
        if runtime.signature() != &manifest.signature {
            return Err(ModelError::Signature(format!(
                "the artifact's signature differs from the catalog's for {} v{}",
                manifest.name, manifest.version
            )));
        }
        let width = manifest.spec.width();
        runtime.run(&InputBatch::new(1, width, vec![0.0; width])?)?;
        let runtime: Arc<dyn Runtime> = match fault_delay {
            Some(delay) => {
                tracing::warn!(model = %manifest.name, version = manifest.version, ?delay, "fault injected: slowed");
                Arc::new(Slowed { inner: runtime, delay })
            }
            None => runtime,
        };
        tracing::info!(
            model = %manifest.name,
            version = manifest.version,
            runtime = runtime.name(),
            reason = %chosen.reason,
            "model loaded"
        );
        let label = format!("{}-v{}", manifest.name, manifest.version);
        let pool = WorkerPool::start(&label, runtime.clone(), pool)
            .map_err(|e| ModelError::Run(format!("cannot start worker threads: {e}")))?;
        Ok(Self { runtime, runtime_reason: chosen.reason, manifest, pool })
    }

    /// The runtime serving it now (`tract-cpu`, `wgpu:<adapter>`, or tract after a GPU failure).
    pub fn runtime_name(&self) -> String {
        self.runtime.name().to_string()
    }

    pub fn width(&self) -> usize {
        self.manifest.spec.width()
    }

    pub fn is(&self, other: &ModelManifest) -> bool {
        self.manifest.name == other.name
            && self.manifest.version == other.version
            && self.manifest.digest == other.digest
    }
}
