//! `cargo run --release -p meridian-simulations --bin rollout`: a canary that is slow in one
//! region, rolled back across 100 … 10,000 nodes in 20 regions; and a healthy one promoted.

use meridian_control::rollout::RolloutSpec;
use meridian_simulations::rollout::{run, Scenario};

fn main() {
    let spec = RolloutSpec {
        model: "ranker".into(),
        baseline: 1,
        canary: 2,
        steps: vec![1, 5, 25, 50, 100],
        hold_ms: 300_000,
        max_p99_ms: Some(50.0),
        max_p99_ratio: Some(2.0),
        max_error_rate: Some(0.01),
        min_requests: 20,
    };
    println!("| nodes | canary | report interval | decided at | 99 % of nodes | 100 % of nodes | reports |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for nodes in [100, 1_000, 10_000] {
        for (interval, slow) in [(1_000, Some((13, 90.0))), (10_000, Some((13, 90.0))), (1_000, None)] {
            let s = Scenario {
                nodes,
                control_region: 0,
                report_interval_ms: interval,
                tick_ms: 500,
                requests_per_node_per_s: 200,
                healthy_p99_ms: 12.0,
                slow_canary_in: slow,
                spec: spec.clone(),
                seed: 42,
                limit_ms: 24 * 3_600_000,
            };
            let out = run(&s);
            let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{:.2} s", v as f64 / 1e3));
            let what = if slow.is_some() { "slow in ap-southeast" } else { "healthy" };
            println!(
                "| {nodes} | {what} | {} s | {} | {} | {} | {} |",
                interval / 1_000,
                ms(out.decided_ms),
                ms(out.applied_99_ms),
                ms(out.applied_100_ms),
                out.reports
            );
        }
    }
}
