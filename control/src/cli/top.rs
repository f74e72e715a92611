//! `meridian top`: merged latency and traffic per model, version, arm and region, refreshed.

use std::time::Duration;

use clap::Args;

use super::client::Client;
use super::output::{table, Output};
use crate::sink::SliceStats;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Only this model.
    #[arg(long)]
    pub model: Option<String>,
    /// Seconds of reports to merge.
    #[arg(long, default_value_t = 60)]
    pub window: u64,
    /// Print once and exit (for scripts); otherwise refresh every `--every` seconds.
    #[arg(long)]
    pub once: bool,
    #[arg(long, default_value_t = 2)]
    pub every: u64,
}

fn stats_table(stats: &[SliceStats]) -> comfy_table::Table {
    let mut t = table(&[
        "model",
        "version",
        "arm",
        "region",
        "req/s",
        "errors",
        "degraded",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "compute p50",
    ]);
    for s in stats {
        t.add_row(vec![
            s.model.clone(),
            format!("v{}", s.version),
            if s.arm.is_empty() { "-".to_string() } else { s.arm.clone() },
            s.region.clone(),
            format!("{:.1}", s.requests_per_s),
            format!("{:.2}%", s.error_rate * 100.0),
            s.degraded.to_string(),
            format!("{:.2}", s.p50_ms),
            format!("{:.2}", s.p90_ms),
            format!("{:.2}", s.p99_ms),
            format!("{:.2}", s.p999_ms),
            format!("{:.3}", s.compute_p50_ms),
        ]);
    }
    t
}

pub async fn run(client: &Client, args: TopArgs, out: &Output) -> anyhow::Result<()> {
    loop {
        let stats = client.metrics(args.model.as_deref(), args.window).await?;
        if args.once || out.json {
            return out.show(&stats, || stats_table(&stats));
        }
        // Clear the screen and draw the table at the top.
        say!("\x1b[2J\x1b[H meridian top — last {} s, every {} s (Ctrl-C to quit)", args.window, args.every);
        say!("{}", stats_table(&stats));
        tokio::time::sleep(Duration::from_secs(args.every.max(1))).await;
    }
}
