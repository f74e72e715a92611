//! Small fixed-seed mesh simulations, run in CI: the real gossip core on 200 nodes in 20
//! regions. Each assertion names its seed; rerun one with the `mesh` binary or by editing SEED.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use meridian_simulations::mesh::{run, Partition, Publish, Scenario};

const SEED: u64 = 11;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// 200 nodes: steady state 4–9 s, a catalog change at 10 s, one crash at 12 s, end at 22 s.
fn quick(nodes: usize, seed: u64, loss: f64) -> Scenario {
    let mut s = Scenario::standard(nodes, seed, loss, 0);
    s.steady_from = secs(4.0);
    s.steady_until = secs(9.0);
    s.publishes =
        vec![Publish { at: secs(1.0), epoch: 1, via: 0 }, Publish { at: secs(10.0), epoch: 2, via: 17 }];
    s.crashes = vec![(secs(12.0), 101 % nodes)];
    s.run_for = secs(22.0);
    s
}

#[test]
fn a_catalog_change_reaches_all_200_nodes_and_a_crash_is_declared_down_everywhere() {
    let o = run(&quick(200, SEED, 0.01));
    let change = o.spreads.last().unwrap();
    assert_eq!(change.epoch, 2);
    let all = change.p100.unwrap_or_else(|| panic!("seed {SEED}: catalog never reached every node: {o:?}"));
    assert!(all < secs(4.0), "seed {SEED}: 100 % after {all:?}");
    assert!(o.final_epochs.iter().all(|e| *e == 2), "seed {SEED}");
    let d = &o.detections[0];
    assert_eq!(d.missing, 0, "seed {SEED}: {d:?}");
    assert!(d.all_down.unwrap() < secs(6.0), "seed {SEED}: {d:?}");
    assert_eq!(o.false_deaths, 0, "seed {SEED}: false deaths at 1 % loss");
    assert!(o.bytes_per_node_s() < 2_000.0, "seed {SEED}: {} B/s", o.bytes_per_node_s());
}

#[test]
fn a_partition_heals_and_both_sides_converge_on_the_newest_epoch() {
    let mut s = quick(200, SEED, 0.01);
    // The Americas (regions 0–5) cut off from the rest of the world for 20 s.
    s.partition = Some(Partition { regions: (0..6).collect(), from: secs(3.0), until: secs(23.0) });
    s.publishes = vec![
        // Epoch 2 through a node in Europe (index 6 is in eu-west), epoch 3 through us-east.
        Publish { at: secs(6.0), epoch: 2, via: 6 },
        Publish { at: secs(9.0), epoch: 3, via: 20 },
    ];
    s.crashes.clear();
    s.run_for = secs(60.0);
    let o = run(&s);
    assert!(o.final_epochs.iter().all(|e| *e == 3), "seed {SEED}: {:?}", o.final_epochs);
    let newest = o.spreads.iter().find(|sp| sp.epoch == 3).unwrap();
    let all = newest.p100.unwrap();
    // The far side could only learn it once the partition healed (14 s after publication).
    assert!(all >= secs(14.0), "seed {SEED}: crossed the partition at {all:?}");
    assert!(all < secs(14.0 + 30.0), "seed {SEED}: healing took {all:?}");
    assert_eq!(o.false_deaths, 0, "seed {SEED}");
    assert!(o.partition_deaths > 0, "seed {SEED}: the partition was noticed");
}

#[test]
fn runs_are_reproducible_from_their_seed() {
    let mut s = quick(60, 3, 0.02);
    s.run_for = secs(14.0);
    assert_eq!(run(&s), run(&s));
}
