//! CPU (tract) against GPU (wgpu) per batch size, and the GPU matmul kernel's GFLOP/s.
//!
//!   cargo run --release -p meridian-benches --bin runtimes [-- --software] [--quick]
//!       [--peak-gflops F] [--cpu-peak-gflops F]
//!
//! `--software` accepts a software adapter (Mesa lavapipe) when there is no real GPU. The matmul
//! table gives each kernel's share of its device's f32 peak: the GPU's from `--peak-gflops` or
//! the vendor's figure for the adapters [`known_peak`] lists, the CPU's from `--cpu-peak-gflops`
//! (a software adapter runs on the CPU, so its peak is the CPU's). Models:
//! the bundled breast-cancer MLP (30-64-32-2) and a larger MLP 784-1024-1024-10 with random
//! weights. Each cell runs for about a second after a warm-up; per-batch latency is the median.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_models::onnx_build::{mlp, GraphBuilder, FLOAT};
use meridian_models::runtime::gpu::{GpuContext, GpuModelOptions, GpuOptions, GpuRuntime, MatmulTile};
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

/// Vendor f32 (non-tensor) peaks in GFLOP/s at boost clock, by a word of the adapter's name.
/// The first match wins, so the more specific names come first.
const PEAKS: &[(&str, f64)] = &[
    ("H100 PCIe", 51_200.0),
    ("H100 NVL", 60_000.0),
    ("H100", 66_900.0),
    ("H200", 66_900.0),
    ("A100", 19_500.0),
    ("L40S", 91_600.0),
    ("L4", 30_300.0),
    ("RTX 4090", 82_600.0),
    ("T4", 8_100.0),
];

fn known_peak(adapter: &str) -> Option<f64> {
    PEAKS.iter().find(|(name, _)| adapter.contains(name)).map(|(_, peak)| *peak)
}

/// The value after `flag`, parsed as a positive number.
fn number_after(args: &[String], flag: &str) -> anyhow::Result<Option<f64>> {
    let Some(at) = args.iter().position(|a| a == flag) else { return Ok(None) };
    let value = args.get(at + 1).ok_or_else(|| anyhow::anyhow!("{flag} needs a number (GFLOP/s)"))?;
    match value.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(Some(v)),
        _ => anyhow::bail!("{flag}: `{value}` is not a positive number of GFLOP/s"),
    }
}

/// The peaks the matmul table divides by.
struct Peaks {
    gpu: Option<f64>,
    cpu: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let software = args.iter().any(|a| a == "--software");
    let budget =
        if args.iter().any(|a| a == "--quick") { Duration::from_millis(300) } else { Duration::from_secs(1) };
    let cpu_peak = number_after(&args, "--cpu-peak-gflops")?;
    let gpu = GpuContext::open(GpuOptions { allow_software: software }).map_err(anyhow::Error::msg)?;
    let mut peaks = Peaks { gpu: number_after(&args, "--peak-gflops")?, cpu: cpu_peak };
    match &gpu {
        Some(ctx) => {
            let name = ctx.describe();
            if peaks.gpu.is_none() {
                peaks.gpu = if ctx.is_software() { cpu_peak } else { known_peak(&name) };
            }
            let peak = peaks.gpu.map_or("unknown (pass --peak-gflops)".into(), |p| format!("{p:.0} GFLOP/s"));
            println!("GPU: {name}; f32 peak {peak}");
        }
        None => println!("GPU: none (pass --software to accept lavapipe); CPU figures only"),
    }
    let mut rng = Rng(42);
    let large = mlp(784, &[1024, 1024], 10, &mut || rng.f());
    let models: [(&str, &[u8]); 2] =
        [("mlp 30-64-32-2", demo::DEMO_MODELS[1].onnx), ("mlp 784-1024-1024-10", &large)];
    let options = GpuModelOptions { max_rows: 8192, poison: false, ..Default::default() };
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
        matmul(ctx, budget, &peaks)?;
    }
    Ok(())
}

/// Layers of the chained matmul: the input is uploaded and the output read back once for all
/// of them, so the chain's rate is the kernel's own.
const CHAIN: usize = 8;

/// A chain of `layers` MatMuls `[M, n] · [n, n]` with constant right operands, scaled so
/// values stay near 1.
fn matmul_chain(n: usize, layers: usize) -> Vec<u8> {
    let mut rng = Rng(n as u64);
    let scale = 1.0 / (n as f32).sqrt();
    let mut g = GraphBuilder::new(n);
    let mut x = "input".to_string();
    for _ in 0..layers {
        let w = g.constant(&[n, n], (0..n * n).map(|_| rng.f() * scale).collect());
        x = g.node("MatMul", &[&x, &w], &[]);
    }
    g.output(&x, FLOAT);
    g.finish()
}

/// M = K = N matmuls: one alone on both runtimes (the GPU's time includes the upload and the
/// read-back), then a chain of [`CHAIN`] on the GPU, which is bound by the kernel, with each
/// tiled kernel.
fn matmul(ctx: &Arc<GpuContext>, budget: Duration, peaks: &Peaks) -> anyhow::Result<()> {
    let share =
        |gflops: f64, peak: Option<f64>| peak.map_or("-".into(), |p| format!("{:.1} %", 100.0 * gflops / p));
    println!(
        "\n| matmul M=K=N | GPU ms, one | GPU GFLOP/s, one | chain of {CHAIN}, 64² tiles | of GPU peak \
         | chain of {CHAIN}, 128² tiles | of GPU peak | tract ms | tract GFLOP/s | of CPU peak |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // A software adapter takes minutes for a chain of 4096s; it stops at 1024.
    let sizes: &[usize] = if ctx.is_software() { &[256, 512, 1024] } else { &[256, 512, 1024, 2048, 4096] };
    for &n in sizes {
        let flops = 2.0 * (n as f64).powi(3);
        let load = |onnx: &[u8], cpu: &TractRuntime, matmul: MatmulTile| {
            let options = GpuModelOptions { max_rows: n, poison: false, matmul };
            GpuRuntime::load(ctx, onnx, cpu.signature(), options).map_err(anyhow::Error::msg)
        };
        let one = matmul_chain(n, 1);
        let cpu = TractRuntime::load(&one)?;
        let (gt, _) = measure(&load(&one, &cpu, MatmulTile::Auto)?, n, budget)?;
        let (ct, _) = measure(&cpu, n, budget)?;
        let chain = matmul_chain(n, CHAIN);
        let chain_cpu = TractRuntime::load(&chain)?;
        let mut rates = Vec::new();
        for tile in [MatmulTile::T64, MatmulTile::T128] {
            let (t, _) = measure(&load(&chain, &chain_cpu, tile)?, n, budget)?;
            let rate = flops * CHAIN as f64 / t / 1e9;
            rates.push(format!("{rate:.1} | {}", share(rate, peaks.gpu)));
        }
        let c = flops / ct / 1e9;
        println!(
            "| {n} | {:.2} | {:.1} | {} | {:.2} | {c:.1} | {} |",
            gt * 1e3,
            flops / gt / 1e9,
            rates.join(" | "),
            ct * 1e3,
            share(c, peaks.cpu)
        );
    }
    println!("\n(\"one\" includes the input upload and the output read-back of each batch; the share of peak is the chain's.)");
    Ok(())
}
