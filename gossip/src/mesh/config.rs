//! Tuning of the mesh core, and the foca configuration derived from it. No I/O.
//!
//! The defaults come from the simulation (`docs/simulations.md`) of 1,000 nodes in 20 regions
//! whose round trips reach 260 ms (max) and whose indirect probe paths (a → relay → b and
//! back) reach 520 ms; each value says why it is what it is.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

/// No datagram body may exceed this, whatever the config says (bounds every decoder).
pub const MAX_DATAGRAM_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    /// How often this node probes one member (round-robin over a shuffled list). Must leave
    /// room after `probe_rtt` for the indirect cycle through a relay, which across continents
    /// takes up to ~520 ms. Sets failure-detection time: a crashed node is first probed after
    /// ~one period on average (every node probes, each picks it 1/n of the time).
    pub probe_period: Duration,
    /// Wait for a direct ack before asking relays: above the largest inter-region RTT (260 ms).
    pub probe_rtt: Duration,
    /// Relays asked when a direct probe fails: 3 makes a false suspicion need 4 lost paths.
    pub indirect_probes: usize,
    /// How long a suspect may refute before it is declared down. It must cover the
    /// suspicion reaching the suspect and its refutation reaching back (both are pushed at
    /// once, ~0.3–0.6 s each at 1,000 nodes) with margin, yet keep detection under 5 s:
    /// crash → first probe (~0.8 s mean, 2.6 s at the tail) + probe period + this + ~0.6 s
    /// for the news to reach every node.
    pub suspect_to_down: Duration,
    /// Times each membership update and custom broadcast is sent by each node. Every node
    /// sends each item this many times, so a node misses it with probability ~e^-k (12:
    /// 6·10^-6; anti-entropy repairs state, not membership) for k × item size bytes per node.
    pub max_transmissions: u8,
    /// Push pending updates to `gossip_fanout` random members this often (only when there are
    /// any). Spreading takes ~log_(1+fanout)(n) of these rounds plus the network's one-way delays.
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    /// Ask a random member for more members this often (joins learn the full roster quickly).
    pub announce_interval: Duration,
    /// Announce to members we hold as down this often: heals partitions (a node that learns
    /// it was declared down rejoins under its next generation).
    pub announce_down_interval: Duration,
    /// Forget a down member after this long (its address may rejoin with any generation).
    pub remove_down_after: Duration,
    /// Largest datagram sent or accepted. QUIC guarantees 1,200 bytes before path MTU discovery.
    pub max_datagram: usize,
    /// Items at most this long travel whole in broadcasts; longer ones are announced and pulled.
    pub max_inline_item: usize,
    /// Compare summaries with one random member this often.
    pub anti_entropy_interval: Duration,
    /// A pull without an answer after this long is given up (anti-entropy retries later).
    pub pull_timeout: Duration,
    /// At most this many pulls in flight.
    pub max_pulls_in_flight: usize,
    /// Publish this node's info at most this often (changes in between are coalesced):
    /// every change costs each node `max_transmissions × size` bytes.
    pub info_min_interval: Duration,
    /// A member back up within this long after going down counts as a flap.
    pub flap_window: Duration,
}

impl MeshConfig {
    /// Defaults for a WAN mesh of about `expected_nodes` nodes.
    pub fn wan(expected_nodes: u32) -> Self {
        // 4·log10(n+1) (foca's and memberlist's multiplier), at least 6: 12 at 1,000 nodes,
        // 16 at 10,000. With 3·log10 (9 at 1,000) one node in ~8,000 missed a down update
        // and kept a crashed member alive until probing it itself: seen in the simulation.
        let tx = (4.0 * f64::from(expected_nodes.saturating_add(1)).log10()).round().clamp(6.0, 30.0) as u8;
        Self {
            probe_period: Duration::from_millis(800),
            probe_rtt: Duration::from_millis(280),
            indirect_probes: 3,
            suspect_to_down: Duration::from_millis(1_500),
            max_transmissions: tx,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            announce_interval: Duration::from_secs(30),
            announce_down_interval: Duration::from_secs(10),
            remove_down_after: Duration::from_secs(3_600),
            max_datagram: 1_200,
            max_inline_item: 800,
            anti_entropy_interval: Duration::from_millis(1_000),
            pull_timeout: Duration::from_secs(5),
            max_pulls_in_flight: 4,
            info_min_interval: Duration::from_secs(10),
            flap_window: Duration::from_secs(60),
        }
    }

    /// A mesh on one LAN or one host (development, the driver's loopback tests): round trips
    /// of a few milliseconds, so every period is shorter than [`MeshConfig::wan`]'s and
    /// failure detection takes ~2 s instead of ~4 s. The margins stay generous (`probe_rtt`
    /// 150 ms, `suspect_to_down` 1 s) because a busy test machine delays tasks by tens of
    /// milliseconds, and a false suspicion there is a flaky test. `max_datagram` is 1,150: a
    /// QUIC datagram frame fits ~1,160 bytes in the 1,200-byte packets QUIC starts with.
    pub fn lan(expected_nodes: u32) -> Self {
        Self {
            probe_period: Duration::from_millis(400),
            probe_rtt: Duration::from_millis(150),
            suspect_to_down: Duration::from_millis(1_000),
            gossip_interval: Duration::from_millis(100),
            announce_interval: Duration::from_secs(5),
            announce_down_interval: Duration::from_secs(2),
            remove_down_after: Duration::from_secs(600),
            max_datagram: 1_150,
            anti_entropy_interval: Duration::from_millis(500),
            pull_timeout: Duration::from_secs(2),
            info_min_interval: Duration::from_secs(1),
            ..Self::wan(expected_nodes)
        }
    }

    /// Every problem at once.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            p.push("probe_rtt must be non-zero and shorter than probe_period".into());
        }
        if self.indirect_probes == 0 || self.gossip_fanout == 0 || self.max_transmissions == 0 {
            p.push("indirect_probes, gossip_fanout and max_transmissions must be at least 1".into());
        }
        if !(256..=MAX_DATAGRAM_LIMIT).contains(&self.max_datagram) {
            p.push(format!("max_datagram must be within 256..={MAX_DATAGRAM_LIMIT}"));
        }
        if self.max_inline_item + 200 > self.max_datagram {
            p.push("max_inline_item must leave 200 bytes of the datagram for the SWIM header".into());
        }
        for (name, d) in [
            ("suspect_to_down", self.suspect_to_down),
            ("gossip_interval", self.gossip_interval),
            ("anti_entropy_interval", self.anti_entropy_interval),
            ("pull_timeout", self.pull_timeout),
            ("announce_interval", self.announce_interval),
            ("announce_down_interval", self.announce_down_interval),
        ] {
            if d.is_zero() {
                p.push(format!("{name} must be non-zero"));
            }
        }
        if self.max_pulls_in_flight == 0 {
            p.push("max_pulls_in_flight must be at least 1".into());
        }
        p
    }

    /// foca's view of this config (valid once `problems()` is empty).
    pub(crate) fn foca(&self) -> foca::Config {
        let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: nz(self.indirect_probes),
            max_transmissions: NonZeroU8::new(self.max_transmissions).unwrap_or(NonZeroU8::MIN),
            suspect_to_down_after: self.suspect_to_down,
            remove_down_after: Some(self.remove_down_after),
            // One byte of every datagram is our tag.
            max_packet_size: nz(self.max_datagram - 1),
            notify_down_members: true,
            periodic_announce: Some(foca::PeriodicParams {
                frequency: self.announce_interval,
                num_members: nz(1),
            }),
            periodic_announce_to_down_members: Some(foca::PeriodicParams {
                frequency: self.announce_down_interval,
                num_members: nz(2),
            }),
            periodic_gossip: Some(foca::PeriodicParams {
                frequency: self.gossip_interval,
                num_members: nz(self.gossip_fanout),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_leave_room_for_the_indirect_cycle() {
        for n in [5, 1_000, 10_000] {
            let c = MeshConfig::wan(n);
            assert!(c.problems().is_empty(), "{:?}", c.problems());
            // Largest inter-region RTT in the simulation's matrix is 260 ms, relay paths 520 ms.
            assert!(c.probe_rtt > Duration::from_millis(260));
            assert!(c.probe_period - c.probe_rtt >= Duration::from_millis(500));
        }
        assert_eq!(MeshConfig::wan(1_000).max_transmissions, 12);
        let lan = MeshConfig::lan(5);
        assert!(lan.problems().is_empty(), "{:?}", lan.problems());
        assert!(lan.probe_period < MeshConfig::wan(5).probe_period);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = MeshConfig::wan(100);
        c.probe_rtt = c.probe_period;
        c.max_datagram = 100;
        c.pull_timeout = Duration::ZERO;
        assert_eq!(c.problems().len(), 4, "{:?}", c.problems());
    }
}
