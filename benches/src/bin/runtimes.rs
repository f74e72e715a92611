//! CPU (tract) against GPU (wgpu) per batch size, and the GPU matmul kernel's GFLOP/s.
//!
//!   cargo run --release -p meridian-benches --bin runtimes [-- --software] [--quick]
//!
//! `--software` accepts a software adapter (Mesa lavapipe) when there is no real GPU. Models:
//! the bundled breast-cancer MLP (30-64-32-2) and a larger MLP 784-1024-1024-10 with random
//! weights. Each cell runs for about a second after a warm-up; per-batch latency is the median.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_models::onnx_build::{mlp, GraphBuilder, FLOAT};
use meridian_models::runtime::gpu::{GpuContext, GpuModelOptions, GpuOptions, GpuRuntime};
use meridian_models::runtime::tract::TractRuntime;
use meridian_models::{demo, InputBatch, Runtime};

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Median seconds per batch and rows per second of `runtime` on `rows`-row batches.
fn measure(runtime: &dyn Runtime, rows: usize, budget: Duration) -> anyhow::Result<(f64, f64)> {
    let width = runtime.signature().input_width();
    let mut rng = Rng(rows as u64 + 1);
    let input = InputBatch::new(rows, width, (0..rows * width).map(|_| rng.f()).collect())?;
    runtime.run(&input)?;
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < budget || times.len() < 3 {
        let t = Instant::now();
        runtime.run(&input)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok((median, rows as f64 / median))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let software = args.iter().any(|a| a == "--software");
    let budget =
        if args.iter().any(|a| a == "--quick") { Duration::from_millis(300) } else { Duration::from_secs(1) };
    let gpu = GpuContext::open(GpuOptions { allow_software: software }).map_err(anyhow::Error::msg)?;
    match &gpu {
        Some(ctx) => println!("GPU: {}", ctx.describe()),
        None => println!("GPU: none (pass --software to accept lavapipe); CPU figures only"),
    }
    let mut rng = Rng(42);
    let large = mlp(784, &[1024, 1024], 10, &mut || rng.f());
    let models: [(&str, &[u8]); 2] =
        [("mlp 30-64-32-2", demo::DEMO_MODELS[1].onnx), ("mlp 784-1024-1024-10", &large)];
    let options = GpuModelOptions { max_rows: 8192, poison: false };
    println!("\n| model | batch | tract ms/batch | tract rows/s | GPU ms/batch | GPU rows/s | GPU / tract |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, onnx) in models {
        let cpu = TractRuntime::load(onnx)?;
        let on_gpu = match &gpu {
            Some(ctx) => {
                Some(GpuRuntime::load(ctx, onnx, cpu.signature(), options).map_err(anyhow::Error::msg)?)
            }
            None => None,
        };
        for rows in [1, 64, 1024, 8192] {
            let (ct, cr) = measure(&cpu, rows, budget)?;
            let g = on_gpu.as_ref().map(|g| measure(g, rows, budget)).transpose()?;
            let (gt, gr, ratio) = match g {
                Some((gt, gr)) => {
                    (format!("{:.3}", gt * 1e3), format!("{gr:.0}"), format!("{:.2}×", gr / cr))
                }
                None => ("-".into(), "-".into(), "-".into()),
            };
            println!("| {name} | {rows} | {:.3} | {cr:.0} | {gt} | {gr} | {ratio} |", ct * 1e3);
        }
    }
    if let Some(ctx) = &gpu {
        matmul(ctx, budget)?;
    }
    Ok(())
}

/// One MatMul `[M, K] · [K, N]` with M = K = N, as a graph with a constant right operand.
fn matmul(ctx: &Arc<GpuContext>, budget: Duration) -> anyhow::Result<()> {
    println!("\n| matmul M=K=N | GPU ms | GPU GFLOP/s | tract ms | tract GFLOP/s |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [256usize, 512, 1024, 2048] {
        let mut rng = Rng(n as u64);
        let mut g = GraphBuilder::new(n);
        let w = g.constant(&[n, n], (0..n * n).map(|_| rng.f()).collect());
        let y = g.node("MatMul", &["input", &w], &[]);
        g.output(&y, FLOAT);
        let onnx = g.finish();
        let cpu = TractRuntime::load(&onnx)?;
        let gpu =
            GpuRuntime::load(ctx, &onnx, cpu.signature(), GpuModelOptions { max_rows: n, poison: false })
                .map_err(anyhow::Error::msg)?;
        let flops = 2.0 * (n as f64).powi(3);
        let (gt, _) = measure(&gpu, n, budget)?;
        let (ct, _) = measure(&cpu, n, budget)?;
        println!(
            "| {n} | {:.2} | {:.1} | {:.2} | {:.1} |",
            gt * 1e3,
            flops / gt / 1e9,
            ct * 1e3,
            flops / ct / 1e9
        );
    }
    println!("\n(GPU times include the input upload and the output read-back of each batch.)");
    Ok(())
}
