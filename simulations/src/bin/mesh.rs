//! `cargo run --release -p meridian-simulations --bin mesh -- --nodes 100,1000 --seed 7
//! --loss 0.01 --out docs/sim`: runs the standard mesh scenario (warm start, steady state, one
//! catalog change, crashes) for each node count, prints a markdown table and writes it with an
//! SVG plot of the catalog spread to `--out`. Every row names its seed; `--check` exits non-zero
//! (naming the seed) when a run misses the targets of issue 4.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use meridian_simulations::mesh::{report, run, Outcome, Scenario};

#[derive(Parser)]
struct Args {
    /// Node counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    nodes: Vec<usize>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Datagram / stream packet loss probability.
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// Nodes crashed, 10 s apart, after the catalog change.
    #[arg(long, default_value_t = 5)]
    crashes: usize,
    /// Size of the published catalog's JSON in bytes (over ~800 it is announced and pulled).
    #[arg(long, default_value_t = 20_000)]
    catalog_bytes: usize,
    /// Node info changes per node per hour.
    #[arg(long, default_value_t = 2.0)]
    info_changes_per_hour: f64,
    /// Directory for mesh.md and mesh.svg.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fail (naming the seed) if a run misses a target.
    #[arg(long)]
    check: bool,
    /// Print each crash's detection.
    #[arg(long)]
    verbose: bool,
}

/// Issue 4's targets (for 1,000 nodes); every miss, in words.
fn misses(o: &Outcome) -> Vec<String> {
    let mut m = Vec::new();
    let spread = o.spreads.last();
    if spread.and_then(|s| s.p99).is_none_or(|t| t >= Duration::from_secs(2)) {
        m.push("catalog change reached 99 % in 2 s or more".to_string());
    }
    if spread.and_then(|s| s.p100).is_none_or(|t| t >= Duration::from_secs(4)) {
        m.push("catalog change reached 100 % in 4 s or more".to_string());
    }
    if report::worst_detection(o).is_none_or(|t| t >= Duration::from_secs(5)) {
        m.push("a crash took 5 s or more to be declared down everywhere".to_string());
    }
    if o.false_deaths > 0 {
        m.push(format!("{} false deaths", o.false_deaths));
    }
    if o.bytes_per_node_s() >= 2_000.0 {
        m.push(format!("{:.0} bytes/node/s at steady state", o.bytes_per_node_s()));
    }
    m
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut lines = vec![report::TABLE_HEADER.to_string()];
    println!("{}", report::TABLE_HEADER);
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for &nodes in &args.nodes {
        let mut s = Scenario::standard(nodes, args.seed, args.loss, args.crashes);
        s.catalog_bytes = args.catalog_bytes;
        s.info_changes_per_hour = args.info_changes_per_hour;
        let started = Instant::now();
        let o = run(&s);
        let row = format!("{} {:.0} s wall |", report::table_row(&o), started.elapsed().as_secs_f64());
        println!("{row}");
        if args.verbose {
            for d in &o.detections {
                eprintln!("  {d:?}");
            }
            eprintln!(
                "  refusals {}, spreads {:?}",
                o.refusals,
                o.spreads.iter().map(|s| (s.epoch, s.p99, s.p100)).collect::<Vec<_>>()
            );
        }
        lines.push(row);
        if let Some(e) = o.final_epochs.iter().find(|e| **e != 2) {
            failed.push(format!("{nodes} nodes, seed {}: a live node ended at epoch {e}", args.seed));
        }
        failed.extend(misses(&o).into_iter().map(|m| format!("{nodes} nodes, seed {}: {m}", args.seed)));
        outcomes.push(o);
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("mesh.md"), lines.join("\n") + "\n")?;
        std::fs::write(dir.join("mesh.svg"), report::svg(&outcomes))?;
        println!("wrote {0}/mesh.md and {0}/mesh.svg", dir.display());
    }
    for f in &failed {
        eprintln!("target missed: {f}");
    }
    if args.check && !failed.is_empty() {
        anyhow::bail!("{} target(s) missed (seed {})", failed.len(), args.seed);
    }
    Ok(())
}
