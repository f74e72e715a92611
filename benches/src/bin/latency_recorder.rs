//! Cost of recording one request's latency, and the size of a node's upstream report.
//!
//!   cargo run --release -p meridian-benches --bin latency_recorder

use std::time::Instant;

use meridian_node::telemetry::histograms::{Recorder, Sample};

fn main() -> anyhow::Result<()> {
    let recorder = Recorder::default();
    let n: u64 = 10_000_000;
    let models = ["breast-cancer-mlp", "diabetes-ridge"];
    let arms = ["", "control", "treatment"];
    let t = Instant::now();
    for i in 0..n {
        // A realistic spread: 80 µs .. ~4 ms, a few errors and degraded answers.
        let total_us = 80 + (i * 7919) % 4_000;
        recorder.record(Sample {
            model: models[(i % 2) as usize],
            version: 1 + (i % 2) as u32,
            arm: arms[(i % 3) as usize],
            total_us,
            compute_us: Some(total_us / 10),
            ok: i % 1_000 != 0,
            degraded: i % 5_000 == 0,
        });
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!("record: {per:.1} ns per request ({n} samples, one thread, 6 slices)");
    let report = recorder.take("n1", "eu-west", 0, 10_000).ok_or_else(|| anyhow::anyhow!("empty"))?;
    let bytes = serde_json::to_vec(&report)?.len();
    let slices = report.slices.len();
    println!(
        "report: {bytes} bytes for {slices} slices ({:.0} bytes per slice, 2 compressed histograms each)",
        bytes as f64 / slices as f64
    );
    Ok(())
}
