//! A compiled program on a device: pipelines built once, weights uploaded once, and pools of
//! activation buffers (with their bind groups) per batch capacity, reused across batches.
//! A batch is one command submission: write the row count and the input, run every step in
//! one compute pass, copy the outputs (and the error flag) to a staging buffer, map it.

use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;

use super::compile::{per_row, Program, Src};
use super::ops::{Count, StepKind};
use super::wgsl::{self, MAX_GROUPS_X, WG};
use super::wgsl_matmul::{self as matmul, MatmulKernel, SKINNY_COLS, SKINNY_ROWS, TILE, WIDE_TILE};
use super::GpuContext;
use super::{MatmulTile, WIDE_MIN_TILES};
use crate::error::ModelError;

struct Kernel {
    pipeline: wgpu::ComputePipeline,
    /// A matmul's kernels for products of at most [`SKINNY_ROWS`] rows and for large ones
    /// (128×128 tiles), on the same layout.
    skinny: Option<wgpu::ComputePipeline>,
    wide: Option<wgpu::ComputePipeline>,
    layout: wgpu::BindGroupLayout,
    reads: Vec<Src>,
    checks: bool,
}

/// The layout every matmul kernel binds: the row count, the output, then `reads` inputs.
/// Explicit, so the tiled and the skinny kernels share one bind group.
fn matmul_layout(device: &wgpu::Device, reads: usize) -> wgpu::BindGroupLayout {
    let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let mut entries = vec![
        wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        },
        storage(1, false),
    ];
    entries.extend((0..reads as u32).map(|i| storage(i + 2, true)));
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("meridian-matmul"),
        entries: &entries,
    })
}

fn pipeline(
    device: &wgpu::Device,
    source: String,
    layout: Option<&wgpu::PipelineLayout>,
) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("meridian-step"),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("meridian-step"),
        layout,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// Buffers and bind groups for batches of up to `capacity` rows.
struct Resources {
    capacity: usize,
    params: wgpu::Buffer,
    acts: Vec<wgpu::Buffer>,
    err: wgpu::Buffer,
    staging: wgpu::Buffer,
    groups: Vec<wgpu::BindGroup>,
}

pub(crate) struct Executable {
    program: Program,
    kernels: Vec<Kernel>,
    consts: Vec<wgpu::Buffer>,
    pool: Mutex<HashMap<usize, Vec<Resources>>>,
    /// The most rows one submission takes (buffer binding limits and a memory bound).
    pub max_rows: usize,
}

/// Longest a batch may take on the device.
const BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn gpu_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Run(format!("gpu: {e}"))
}

impl Executable {
    pub fn build(
        ctx: &GpuContext,
        program: Program,
        max_rows: usize,
        tile: MatmulTile,
    ) -> Result<Self, String> {
        let device = &ctx.device;
        let limits = device.limits();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut kernels = Vec::with_capacity(program.steps.len());
        for (i, step) in program.steps.iter().enumerate() {
            let reads = wgsl::bindings(&step.kind);
            let storage = reads.len() + 1 + usize::from(matches!(step.kind, StepKind::Gather { .. }));
            if storage > limits.max_storage_buffers_per_shader_stage as usize {
                return Err(format!(
                    "step {i} needs {storage} storage buffers, the adapter allows {}",
                    limits.max_storage_buffers_per_shader_stage
                ));
            }
            let source = wgsl::shader(&step.kind);
            let checks = matches!(step.kind, StepKind::Gather { .. });
            if let StepKind::MatMul { n, .. } = step.kind {
                if n.div_ceil(SKINNY_COLS as usize) > MAX_GROUPS_X as usize {
                    return Err(format!("step {i} is a matmul of {n} columns, wider than one dispatch"));
                }
            }
            let kernel = match matmul::shader(&step.kind, MatmulKernel::Skinny) {
                Some(skinny) => {
                    let layout = matmul_layout(device, reads.len());
                    let shared = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some("meridian-matmul"),
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    });
                    let tiled = pipeline(device, source, Some(&shared));
                    let skinny = Some(pipeline(device, skinny, Some(&shared)));
                    let wide = matmul::shader(&step.kind, MatmulKernel::Wide)
                        .filter(|_| tile != MatmulTile::T64)
                        .map(|wide| pipeline(device, wide, Some(&shared)));
                    Kernel { pipeline: tiled, skinny, wide, layout, reads, checks }
                }
                None => {
                    let pipeline = pipeline(device, source, None);
                    let layout = pipeline.get_bind_group_layout(0);
                    Kernel { pipeline, skinny: None, wide: None, layout, reads, checks }
                }
            };
            kernels.push(kernel);
        }
        let consts = program
            .consts
            .iter()
            .map(|c| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("meridian-weights"),
                    contents: bytemuck::cast_slice(c),
                    usage: wgpu::BufferUsages::STORAGE,
                })
            })
            .collect();
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(format!("the adapter refused the program: {e}"));
        }
        // Rows that fit every binding and dispatch limit, at most `max_rows`.
        let binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) as usize;
        let widest = program.buffers.iter().copied().max().unwrap_or(1).max(1);
        let mut rows = max_rows.min(binding / (4 * widest)).max(1);
        for step in &program.steps {
            if let StepKind::MatMul { m_per_row, .. } = step.kind {
                rows = rows.min((MAX_GROUPS_X as usize * TILE as usize) / m_per_row.max(1)).max(1);
            }
        }
        let outputs: usize = program.outputs.iter().map(|o| per_row(&o.rest)).sum();
        rows = rows.min(binding / (4 * outputs.max(1))).max(1);
        Ok(Self { program, kernels, consts, pool: Mutex::new(HashMap::new()), max_rows: rows })
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    fn resources(&self, ctx: &GpuContext, capacity: usize) -> Resources {
        let device = &ctx.device;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("meridian-params"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let acts: Vec<wgpu::Buffer> = self
            .program
            .buffers
            .iter()
            .map(|per_row| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("meridian-activation"),
                    size: (capacity * per_row * 4).max(16) as u64,
                    usage,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let err = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("meridian-error-flag"),
            size: 16,
            usage,
            mapped_at_creation: false,
        });
        let out_floats: usize =
            self.program.outputs.iter().map(|o| per_row(&o.rest)).sum::<usize>() * capacity;
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("meridian-readback"),
            size: (16 + out_floats * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let groups = self
            .kernels
            .iter()
            .zip(&self.program.steps)
            .map(|(kernel, step)| {
                let mut entries = vec![
                    wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: acts[step.out].as_entire_binding() },
                ];
                for (i, src) in kernel.reads.iter().enumerate() {
                    let buffer = match src {
                        Src::Act(b) => &acts[*b],
                        Src::Const(c) => &self.consts[*c],
                    };
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 2,
                        resource: buffer.as_entire_binding(),
                    });
                }
                if kernel.checks {
                    let binding = kernel.reads.len() as u32 + 2;
                    entries.push(wgpu::BindGroupEntry { binding, resource: err.as_entire_binding() });
                }
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("meridian-step"),
                    layout: &kernel.layout,
                    entries: &entries,
                })
            })
            .collect();
        Resources { capacity, params, acts, err, staging, groups }
    }

    /// Run `rows` rows (at most `max_rows`); returns each output's values, row-major.
    pub fn run(
        &self,
        ctx: &GpuContext,
        values: &[f32],
        rows: usize,
        poison: bool,
        tile: MatmulTile,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let capacity = rows.next_power_of_two().min(self.max_rows).max(rows);
        let taken = self.pool.lock().ok().and_then(|mut p| p.get_mut(&capacity).and_then(Vec::pop));
        let res = match taken {
            Some(r) => r,
            None => self.resources(ctx, capacity),
        };
        let result = self.submit(ctx, &res, values, rows, poison, tile);
        if result.is_ok() {
            if let Ok(mut pool) = self.pool.lock() {
                pool.entry(res.capacity).or_default().push(res);
            }
        }
        result
    }

    /// The pipeline and workgroup counts of a step for `rows` rows: for a matmul, the skinny
    /// kernel for products of at most [`SKINNY_ROWS`] rows, the wide one as `tile` says (when
    /// it was built), else the step's own.
    fn dispatch<'k>(
        &self,
        kernel: &'k Kernel,
        kind: &StepKind,
        rows: usize,
        tile: MatmulTile,
    ) -> (&'k wgpu::ComputePipeline, u32, u32) {
        if let StepKind::MatMul { m_per_row, n, .. } = kind {
            let m = rows * m_per_row;
            if let Some(skinny) = kernel.skinny.as_ref().filter(|_| m <= SKINNY_ROWS) {
                return (skinny, (*n as u32).div_ceil(SKINNY_COLS), 1);
            }
            let (x, y) = ((*n as u32).div_ceil(WIDE_TILE), (m as u32).div_ceil(WIDE_TILE));
            let wide = match tile {
                MatmulTile::T128 => true,
                MatmulTile::T64 => false,
                MatmulTile::Auto => x as usize * y as usize >= WIDE_MIN_TILES,
            };
            if let Some(pipeline) = kernel.wide.as_ref().filter(|_| wide) {
                return (pipeline, x, y);
            }
        }
        let (x, y) = self.dispatch_size(kind, rows);
        (&kernel.pipeline, x, y)
    }

    fn dispatch_size(&self, kind: &StepKind, rows: usize) -> (u32, u32) {
        let flat = |elements: usize| {
            let groups = elements.div_ceil(WG as usize) as u32;
            if groups <= MAX_GROUPS_X {
                (groups.max(1), 1)
            } else {
                (MAX_GROUPS_X, groups.div_ceil(MAX_GROUPS_X))
            }
        };
        match kind {
            StepKind::MatMul { m_per_row, n, .. } => {
                ((*n as u32).div_ceil(TILE), ((rows * m_per_row) as u32).div_ceil(TILE).max(1))
            }
            StepKind::Map { rest, .. } => flat(rows * per_row(rest)),
            StepKind::Softmax { outer, inner, .. } | StepKind::ArgMax { outer, inner, .. } => {
                flat(rows * outer * inner)
            }
            StepKind::Reduce { shape, reduced, .. } => {
                let kept: usize =
                    (0..shape.len()).filter(|d| !reduced.contains(d)).map(|d| shape[d]).product();
                flat(rows * kept)
            }
            StepKind::Concat { parts, outer, inner } => {
                flat(rows * outer * inner * parts.iter().map(|(_, l)| l).sum::<usize>())
            }
            StepKind::Gather { outer, count, inner, .. } => {
                flat(Count::at(*outer, rows) * Count::at(*count, rows) * inner)
            }
        }
    }

    fn submit(
        &self,
        ctx: &GpuContext,
        res: &Resources,
        values: &[f32],
        rows: usize,
        poison: bool,
        tile: MatmulTile,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let queue = &ctx.queue;
        queue.write_buffer(&res.params, 0, bytemuck::cast_slice(&[rows as u32, 0, 0, 0]));
        queue.write_buffer(&res.acts[0], 0, bytemuck::cast_slice(values));
        queue.write_buffer(&res.err, 0, bytemuck::cast_slice(&[0u32; 4]));
        if poison {
            for (buf, per_row) in res.acts.iter().zip(&self.program.buffers).skip(1) {
                let nan = vec![f32::NAN; res.capacity * per_row];
                queue.write_buffer(buf, 0, bytemuck::cast_slice(&nan));
            }
        }
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("meridian-batch") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("meridian-batch"),
                timestamp_writes: None,
            });
            for ((kernel, step), group) in self.kernels.iter().zip(&self.program.steps).zip(&res.groups) {
                let (pipeline, x, y) = self.dispatch(kernel, &step.kind, rows, tile);
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(x, y, 1);
            }
        }
        encoder.copy_buffer_to_buffer(&res.err, 0, &res.staging, 0, 16);
        let mut offset = 16u64;
        let mut sizes = Vec::with_capacity(self.program.outputs.len());
        for out in &self.program.outputs {
            let bytes = (rows * per_row(&out.rest) * 4) as u64;
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(&res.acts[out.buf], 0, &res.staging, offset, bytes);
            }
            sizes.push(bytes as usize / 4);
            offset += bytes;
        }
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let submission = queue.submit(Some(encoder.finish()));
        let slice = res.staging.slice(0..offset);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        // A batch that has not finished in a minute is a hung device: the error moves the model
        // to tract (see `select::Fallback`) instead of holding its worker forever, and marking
        // the device lost moves every other model on it at its next batch.
        // Every model on the device moves then, not each after its own minute.
        let waited = ctx
            .device
            .poll(wgpu::PollType::Wait { submission_index: Some(submission), timeout: Some(BATCH_TIMEOUT) });
        if let Err(e) = waited {
            ctx.mark_lost();
            return Err(gpu_err(e));
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err(e));
        }
        rx.recv_timeout(BATCH_TIMEOUT).map_err(gpu_err)?.map_err(gpu_err)?;
        let data: Vec<f32> = {
            let view = slice.get_mapped_range().map_err(gpu_err)?;
            bytemuck::pod_collect_to_vec(&view)
        };
        res.staging.unmap();
        if self.program.checks_indices && data.first().map(|f| f.to_bits()) != Some(0) {
            return Err(ModelError::Input("a Gather index computed from the input is out of range".into()));
        }
        let mut outputs = Vec::with_capacity(sizes.len());
        let mut at = 4;
        for len in sizes {
            outputs.push(data[at..at + len].to_vec());
            at += len;
        }
        Ok(outputs)
    }
}
