//! meridian-simulations: deterministic many-node simulations of meridian's cores, on one
//! thread, with a virtual clock and a seeded RNG. No I/O.
//!
//! - [`regions`]: 20 regions and the round-trip times between them (from great-circle
//!   distances, at the speed of light in fibre with a routing overhead).
//! - [`rng`]: a seeded xorshift generator, so every run is reproducible.
//! - [`rollout`]: the real rollout planner of `meridian-control` driving a canary across
//!   thousands of nodes: reports flowing up, the breach detected, the rollback reaching every node.
//! - [`mesh`]: the real gossip core (`meridian_gossip::mesh`, SWIM membership, signed catalog,
//!   anti-entropy) on 100 … 10,000 nodes, with loss, jitter, partitions and crashes.

pub mod mesh;
pub mod regions;
pub mod rng;
pub mod rollout;
