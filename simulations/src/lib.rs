//! meridian-simulations: deterministic many-node simulations of meridian's cores.
//!
//! Will own (mesh and rollout issues), no I/O, one thread, seeded:
//! - a discrete-event scheduler with a virtual clock and an inter-region RTT matrix;
//! - thousands of real `meridian-gossip` cores exchanging packets through it, with loss,
//!   partitions and node churn;
//! - the pure rollout planner of `meridian-control` driven through canary steps;
//! - reports: catalog convergence time (99 % / 100 % of nodes), failure detection time, false
//!   positives and bytes per node per second, for 100 … 10,000 nodes.
//!
//! Nothing is simulated yet: the gossip core it drives arrives with the mesh issue.
