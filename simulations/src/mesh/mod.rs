//! The real mesh core (`meridian_gossip::mesh::MeshCore`) on N simulated nodes spread over
//! the 20 regions of [`crate::regions`], on one thread, with a virtual clock and a seeded RNG.
//!
//! The network: a datagram from region a to region b arrives after half the RTT of
//! [`crate::regions::rtt_ms`] plus uniform jitter, or is lost with probability `loss`; nothing
//! crosses an active partition and a crashed node neither sends nor receives. A pull (a QUIC
//! stream in the real driver) is a delayed message: request and response each take half the
//! RTT plus their transfer time at `stream_mbit_s`, and every 1,200-byte packet lost (with
//! probability `loss`) adds a retransmission timeout of 1.5 RTT + 10 ms, as QUIC would; a pull
//! across a partition or to a crashed node is never answered (the core times it out).
//!
//! - [`world`]: the event loop and network model.
//! - [`report`]: the markdown table and the SVG plot.

pub mod report;
pub mod world;

use std::time::Duration;

use meridian_gossip::mesh::MeshConfig;

pub use world::run;

/// Regions on one side of a partition, cut off from the rest between `from` and `until`.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub regions: Vec<usize>,
    pub from: Duration,
    pub until: Duration,
}

/// A catalog published through one node at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub at: Duration,
    pub epoch: u64,
    /// Index of the node it is published through.
    pub via: usize,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub nodes: usize,
    pub seed: u64,
    /// Probability that a datagram (or a stream packet) is lost.
    pub loss: f64,
    /// Uniform extra one-way delay, up to this.
    pub jitter: Duration,
    pub stream_mbit_s: f64,
    pub config: MeshConfig,
    /// Approximate size of each published catalog's JSON (padded with experiments).
    pub catalog_bytes: usize,
    pub publishes: Vec<Publish>,
    /// (when, node index) of crashes.
    pub crashes: Vec<(Duration, usize)>,
    pub partition: Option<Partition>,
    /// Each node changes its info this often per hour (Poisson, from the start). The burst of
    /// a whole fleet starting at once is not modelled: a joining node pulls every info in its
    /// join pull, and publishes only its own.
    pub info_changes_per_hour: f64,
    /// Traffic is measured between these two instants (no publishes or crashes inside it).
    pub steady_from: Duration,
    pub steady_until: Duration,
    pub run_for: Duration,
}

impl Scenario {
    /// The standard run: warm start, 20 s of steady state, then a catalog change, then
    /// `crashes` nodes crash 10 s apart, run for 30 s after the last.
    pub fn standard(nodes: usize, seed: u64, loss: f64, crashes: usize) -> Self {
        let steady_until = Duration::from_secs(30);
        let publish_at = steady_until + Duration::from_secs(1);
        let first_crash = publish_at + Duration::from_secs(10);
        let crash_list: Vec<(Duration, usize)> = (0..crashes)
            .map(|c| (first_crash + Duration::from_secs(10 * c as u64), (c * 7_919 + 13) % nodes.max(1)))
            .collect();
        let end = crash_list.last().map_or(publish_at, |c| c.0) + Duration::from_secs(30);
        Self {
            nodes,
            seed,
            loss,
            jitter: Duration::from_millis(5),
            stream_mbit_s: 100.0,
            config: MeshConfig::wan(nodes as u32),
            catalog_bytes: 20_000,
            publishes: vec![
                Publish { at: Duration::from_secs(1), epoch: 1, via: 0 },
                Publish { at: publish_at, epoch: 2, via: nodes / 2 },
            ],
            crashes: crash_list,
            partition: None,
            info_changes_per_hour: 2.0,
            steady_from: Duration::from_secs(10),
            steady_until,
            run_for: end,
        }
    }
}

/// How fast one published catalog spread, from its publication.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spread {
    pub epoch: u64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub p100: Option<Duration>,
    /// (time since publication, fraction of live nodes holding it), one point per adoption.
    pub curve: Vec<(Duration, f64)>,
}

/// How one crash was detected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detection {
    pub node: usize,
    /// Crash → first suspicion anywhere.
    pub first_suspect: Option<Duration>,
    /// Crash → first node declares it down.
    pub first_down: Option<Duration>,
    /// Crash → every live node holds it as down.
    pub all_down: Option<Duration>,
    /// Live nodes that still did not hold it as down when the run ended.
    pub missing: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub nodes: usize,
    pub seed: u64,
    pub loss: f64,
    pub spreads: Vec<Spread>,
    pub detections: Vec<Detection>,
    /// Suspicions of a node that was running and reachable from the suspecting node.
    pub false_suspicions: u64,
    /// Running, reachable identities declared down by at least one node.
    pub false_deaths: u64,
    /// Down declarations across an active partition (expected, not false).
    pub partition_deaths: u64,
    /// Mean bytes sent per node per second in the steady window: SWIM, summaries, pulls.
    pub swim_bytes_per_node_s: f64,
    pub summary_bytes_per_node_s: f64,
    pub pull_bytes_per_node_s: f64,
    /// Epoch held by each live node at the end.
    pub final_epochs: Vec<u64>,
    /// Refusals the cores counted (forged/stale catalogs, bad datagrams), summed.
    pub refusals: u64,
    pub events: u64,
}

impl Outcome {
    pub fn bytes_per_node_s(&self) -> f64 {
        self.swim_bytes_per_node_s + self.summary_bytes_per_node_s + self.pull_bytes_per_node_s
    }
}
