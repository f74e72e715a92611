//! A few real mesh cores wired together in memory (1 ms per hop, virtual time): membership,
//! catalog spread (inline and announce + pull), revocations, node info, late joiners, and
//! forged, stale or malformed input.
#![allow(clippy::unwrap_used)]

mod common;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use meridian_gossip::mesh::{
    shared_interner, ControlKey, Event, LocalNode, MeshConfig, MeshCore, Output, Rejection, SharedInterner,
    SignedCatalog, Timer, Verifier,
};
use meridian_gossip::{Catalog, NodeInfo};
use rand::rngs::SmallRng;
use rand::SeedableRng;

enum Msg {
    Datagram { to: usize, from: SocketAddr, bytes: Vec<u8> },
    Timer { node: usize, timer: Timer },
    Pull { server: usize, client: usize, id: u64, request: Vec<u8> },
    Response { client: usize, id: u64, response: Vec<u8> },
}

struct Mesh {
    cores: Vec<MeshCore<SmallRng>>,
    queue: BinaryHeap<Reverse<(Duration, u64)>>,
    msgs: std::collections::HashMap<u64, Msg>,
    seq: u64,
    now: Duration,
    events: Vec<Vec<Event>>,
    interner: SharedInterner,
    control: ControlKey,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1 + i as u8], 7000))
}

impl Mesh {
    fn new(n: usize) -> Self {
        let mut mesh = Self {
            cores: Vec::new(),
            queue: BinaryHeap::new(),
            msgs: Default::default(),
            seq: 0,
            now: Duration::ZERO,
            events: Vec::new(),
            interner: shared_interner(),
            control: ControlKey::from_seed(&[9; 32]),
        };
        for _ in 0..n {
            mesh.add_node();
        }
        mesh
    }

    fn add_node(&mut self) -> usize {
        let i = self.cores.len();
        let regions = ["eu-west", "us-east", "ap-south"];
        let local = LocalNode {
            node: format!("node-{i}"),
            addr: addr(i),
            region: regions[i % 3].into(),
            generation: 1,
        };
        let verifier = Verifier::new(vec![self.control.public()]);
        let core = MeshCore::new(
            &local,
            MeshConfig::wan(5),
            verifier,
            SmallRng::seed_from_u64(i as u64),
            self.interner.clone(),
        )
        .unwrap();
        self.cores.push(core);
        self.events.push(Vec::new());
        self.drain(i);
        if i > 0 {
            self.cores[i].join(&[addr(0)], self.now);
            self.drain(i);
        }
        i
    }

    fn schedule(&mut self, after: Duration, msg: Msg) {
        self.seq += 1;
        self.msgs.insert(self.seq, msg);
        self.queue.push(Reverse((self.now + after, self.seq)));
    }

    fn drain(&mut self, i: usize) {
        let hop = Duration::from_millis(1);
        while let Some(o) = self.cores[i].poll_output() {
            match o {
                Output::Datagram { to, bytes } => {
                    let to = usize::from(match to.ip() {
                        std::net::IpAddr::V4(ip) => ip.octets()[3],
                        std::net::IpAddr::V6(_) => 0,
                    }) - 1;
                    if to < self.cores.len() {
                        self.schedule(hop, Msg::Datagram { to, from: addr(i), bytes });
                    }
                }
                Output::Pull { to, id, request } => {
                    let server = usize::from(match to.ip() {
                        std::net::IpAddr::V4(ip) => ip.octets()[3],
                        std::net::IpAddr::V6(_) => 0,
                    }) - 1;
                    self.schedule(hop, Msg::Pull { server, client: i, id, request });
                }
                Output::Timer { after, timer } => self.schedule(after, Msg::Timer { node: i, timer }),
            }
        }
        while let Some(e) = self.cores[i].poll_event() {
            self.events[i].push(e);
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now = at;
            let now = self.now;
            match self.msgs.remove(&seq).unwrap() {
                Msg::Datagram { to, from, bytes } => {
                    self.cores[to].handle_datagram(from, &bytes, now);
                    self.drain(to);
                }
                Msg::Timer { node, timer } => {
                    self.cores[node].handle_timer(timer, now);
                    self.drain(node);
                }
                Msg::Pull { server, client, id, request } => {
                    let response = self.cores[server].serve_pull(addr(client), &request, now);
                    self.drain(server);
                    self.schedule(Duration::from_millis(1), Msg::Response { client, id, response });
                }
                Msg::Response { client, id, response } => {
                    self.cores[client].handle_pull_response(id, &response, now);
                    self.drain(client);
                }
            }
        }
        self.now = end;
    }

    fn catalog(&self, epoch: u64, experiments: usize) -> SignedCatalog {
        self.control.sign_catalog(common::catalog_with_experiments(epoch, experiments))
    }

    fn publish(&mut self, via: usize, signed: &SignedCatalog) -> Result<u64, Rejection> {
        let r = self.cores[via].publish_catalog(signed, self.now);
        self.drain(via);
        r
    }

    fn epochs(&self) -> Vec<u64> {
        self.cores.iter().map(MeshCore::epoch).collect()
    }
}

#[test]
fn five_nodes_join_through_one_seed_and_see_each_other() {
    let mut mesh = Mesh::new(5);
    mesh.run_for(Duration::from_secs(10));
    for (i, core) in mesh.cores.iter().enumerate() {
        assert_eq!(core.live_members(), 4, "node {i} sees {:?}", core.members().collect::<Vec<_>>());
        assert!(mesh.events[i].iter().any(|e| matches!(e, Event::Connected)));
    }
    let regions: std::collections::BTreeSet<&str> =
        mesh.cores[0].members().map(|m| m.id().region()).collect();
    assert_eq!(regions.len(), 3);
}

#[test]
fn small_and_large_catalogs_published_at_one_node_reach_all_and_never_roll_back() {
    let mut mesh = Mesh::new(5);
    mesh.run_for(Duration::from_secs(5));
    // Small: travels whole in broadcasts.
    let small = mesh.catalog(1, 1);
    assert_eq!(mesh.publish(2, &small), Ok(1));
    mesh.run_for(Duration::from_secs(2));
    assert_eq!(mesh.epochs(), vec![1; 5]);
    // Large (~30 KB): announced, then pulled hop by hop.
    let large = mesh.catalog(2, 150);
    assert!(serde_json::to_vec(&large).unwrap().len() > 10_000);
    assert_eq!(mesh.publish(4, &large), Ok(2));
    mesh.run_for(Duration::from_secs(3));
    assert_eq!(mesh.epochs(), vec![2; 5]);
    assert_eq!(mesh.cores[1].catalog().unwrap().signed, large);
    assert!(mesh.events[0]
        .iter()
        .any(|e| matches!(e, Event::CatalogAdopted(c) if c.signed.catalog.epoch == 2)));
    // A replay of the old one, or the same epoch again, is refused with its reason.
    assert_eq!(mesh.publish(0, &small), Err(Rejection::Stale { have: 2, got: 1 }));
    assert_eq!(mesh.publish(0, &large), Err(Rejection::Stale { have: 2, got: 2 }));
    mesh.run_for(Duration::from_secs(3));
    assert_eq!(mesh.epochs(), vec![2; 5]);
}

#[test]
fn a_forged_catalog_is_refused_everywhere() {
    let mut mesh = Mesh::new(3);
    mesh.run_for(Duration::from_secs(3));
    let forger = ControlKey::from_seed(&[66; 32]);
    let forged = forger.sign_catalog(Catalog { epoch: 7, ..Catalog::default() });
    assert!(matches!(mesh.publish(0, &forged), Err(Rejection::UnknownKey(_))));
    let mut relabelled = forged.clone();
    relabelled.key_id = mesh.control.public().key_id().to_string();
    assert_eq!(mesh.publish(1, &relabelled), Err(Rejection::BadSignature));
    mesh.run_for(Duration::from_secs(3));
    assert_eq!(mesh.epochs(), vec![0; 3]);
}

#[test]
fn a_late_joiner_converges_on_catalog_revocations_and_infos_without_control() {
    let mut mesh = Mesh::new(4);
    mesh.run_for(Duration::from_secs(3));
    let signed = mesh.catalog(5, 100);
    mesh.publish(0, &signed).unwrap();
    let batch = mesh.control.sign_revocation(1, ["key-a".to_string(), "key-b".to_string()].into());
    mesh.cores[1].publish_revocation(&batch, mesh.now).unwrap();
    mesh.drain(1);
    let info = NodeInfo { ready: true, gpu: true, ..NodeInfo::default() };
    mesh.cores[3].set_local_info(info, mesh.now);
    mesh.drain(3);
    mesh.run_for(Duration::from_secs(3));
    assert!(mesh.cores.iter().all(|c| c.is_revoked("key-a") && c.epoch() == 5));
    assert!(mesh.cores.iter().all(|c| c.node_info("node-3").is_some_and(|r| r.info.gpu)));

    // Node 4 joins after everything was published: anti-entropy brings it all.
    let late = mesh.add_node();
    mesh.run_for(Duration::from_secs(10));
    let core = &mesh.cores[late];
    assert_eq!(core.epoch(), 5);
    assert_eq!(core.revoked_keys().len(), 2);
    assert_eq!(core.node_info("node-3").unwrap().info.region, "eu-west");
    assert_eq!(core.live_members(), 4);
}

#[test]
fn node_info_changes_are_coalesced_and_the_newest_wins() {
    let mut mesh = Mesh::new(3);
    mesh.run_for(Duration::from_secs(3));
    for queued in [1, 2, 3] {
        mesh.cores[0].set_local_info(NodeInfo { queued, ..NodeInfo::default() }, mesh.now);
        mesh.drain(0);
    }
    mesh.run_for(Duration::from_secs(1));
    assert_eq!(mesh.cores[2].node_info("node-0").unwrap().info.queued, 1, "first change published at once");
    mesh.run_for(Duration::from_secs(12));
    let r = mesh.cores[2].node_info("node-0").unwrap();
    assert_eq!((r.info.queued, r.info.version), (3, 2), "later changes coalesced into one");
}

#[test]
fn junk_datagrams_and_pulls_are_counted_and_dropped() {
    let mut mesh = Mesh::new(2);
    mesh.run_for(Duration::from_secs(3));
    let now = mesh.now;
    let core = &mut mesh.cores[0];
    let from = addr(1);
    core.handle_datagram(from, &vec![1; 5_000], now);
    core.handle_datagram(from, &[], now);
    core.handle_datagram(from, &[99, 1, 2], now);
    core.handle_datagram(from, &[1, 200, 3, 4], now);
    core.handle_datagram(from, &[2, 255, 255], now);
    let answer = core.serve_pull(from, &[255; 100], now);
    assert!(!answer.is_empty());
    core.handle_pull_response(12_345, &[7; 64], now);
    let c = core.counters();
    assert_eq!(c.dropped_oversized, 1);
    assert_eq!(c.dropped_undecodable, 3);
    assert_eq!(c.swim_refused, 1);
    assert_eq!(c.pulls_refused, 2);
    mesh.run_for(Duration::from_secs(3));
    assert_eq!(mesh.cores[0].live_members(), 1, "still a member after the junk");
}
