//! The QUIC driver on real endpoints: nodes on 127.0.0.1 (each on a port the OS picks),
//! mutual TLS with a development CA made here by rcgen, `MeshConfig::lan`. Every wait is
//! bounded by a deadline, so a broken mesh fails a test instead of hanging it.
#![cfg(feature = "driver")]
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use meridian_gossip::driver::{DriverConfig, MemberState, MeshDriver, MeshError, MeshHandle, MeshTls};
use meridian_gossip::mesh::{ControlKey, Event, MeshConfig, Rejection, SignedCatalog, Verifier};
use meridian_gossip::{Catalog, NodeInfo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::task::JoinHandle;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// Poll `$cond` every 50 ms until it holds; fail the test naming `$what` after `$secs`.
macro_rules! eventually {
    ($secs:expr, $what:expr, $cond:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64($secs);
        loop {
            if $cond {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "not within {} s: {}", $secs, $what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { issuer: Issuer::new(params, key), pem }
    }

    /// A node certificate for 127.0.0.1, signed by this CA.
    fn node_tls(&self) -> MeshTls {
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "meridian mesh node");
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        MeshTls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), self.pem.as_bytes()).unwrap()
    }
}

fn control() -> ControlKey {
    ControlKey::from_seed(&[42; 32])
}

struct Node {
    handle: MeshHandle,
    task: JoinHandle<()>,
}

fn start(tls: MeshTls, i: usize, seeds: &[SocketAddr]) -> Node {
    try_start(tls, i, seeds, "127.0.0.1:0".parse().unwrap(), 1).unwrap()
}

fn try_start(
    tls: MeshTls,
    i: usize,
    seeds: &[SocketAddr],
    listen: SocketAddr,
    generation: u32,
) -> Result<Node, meridian_gossip::driver::DriverError> {
    let mut config = DriverConfig::new(&format!("node-{i}"), REGIONS[i % 3], generation, listen, tls);
    config.mesh = MeshConfig::lan(5);
    config.seeds = seeds.to_vec();
    config.connect_timeout = Duration::from_secs(1);
    config.rng_seed = Some(i as u64);
    let (handle, task) = MeshDriver::start(config, Verifier::new(vec![control().public()]))?;
    Ok(Node { handle, task })
}

/// `n` nodes of one CA, each joining through node 0.
fn mesh(ca: &TestCa, n: usize) -> Vec<Node> {
    let first = start(ca.node_tls(), 0, &[]);
    let seeds = [first.handle.addr()];
    let mut nodes = vec![first];
    nodes.extend((1..n).map(|i| start(ca.node_tls(), i, &seeds)));
    nodes
}

/// Members `node` holds alive.
async fn alive(node: &MeshHandle) -> HashSet<SocketAddr> {
    let members = node.members().await.unwrap();
    members.into_iter().filter(|m| m.state == MemberState::Alive).map(|m| m.addr).collect()
}

async fn converged(nodes: &[&Node]) -> bool {
    for node in nodes {
        let expected: HashSet<SocketAddr> =
            nodes.iter().map(|n| n.handle.addr()).filter(|a| *a != node.handle.addr()).collect();
        if alive(&node.handle).await != expected {
            return false;
        }
    }
    true
}

fn epoch(node: &Node) -> u64 {
    node.handle.catalog().map_or(0, |c| c.signed.catalog.epoch)
}

/// A signed catalog with `experiments` entries (see [`common::catalog_with_experiments`]).
fn catalog(epoch: u64, experiments: usize) -> SignedCatalog {
    control().sign_catalog(common::catalog_with_experiments(epoch, experiments))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_in_three_regions_converge_and_a_catalog_reaches_all() {
    let ca = TestCa::new("mesh CA");
    let nodes = mesh(&ca, 5);
    let all: Vec<&Node> = nodes.iter().collect();
    let mut events = nodes[4].handle.subscribe();
    eventually!(10.0, "five nodes see each other alive", converged(&all).await);

    let members = nodes[0].handle.members().await.unwrap();
    let regions: HashSet<&str> = members.iter().map(|m| m.region.as_str()).collect();
    assert_eq!(regions.len(), 3, "{members:?}");
    assert!(members.iter().any(|m| m.rtt.is_some()), "QUIC RTTs: {members:?}");

    assert_eq!(nodes[2].handle.publish_catalog(catalog(1, 2)).await, Ok(1));
    eventually!(10.0, "catalog 1 reaches all five", nodes.iter().all(|n| epoch(n) == 1));

    // A big one travels as an announcement and a pull over a QUIC stream.
    assert_eq!(nodes[1].handle.publish_catalog(catalog(2, 200)).await, Ok(2));
    eventually!(10.0, "catalog 2 (pulled) reaches all five", nodes.iter().all(|n| epoch(n) == 2));
    let counters = nodes[3].handle.counters().await.unwrap();
    assert!(counters.core.catalogs_adopted >= 2, "{counters:?}");

    let info = NodeInfo { http_url: "http://127.0.0.1:8081".into(), ready: true, ..NodeInfo::default() };
    nodes[0].handle.set_local_info(info).await.unwrap();
    eventually!(10.0, "node 0's info reaches node 3", {
        let members = nodes[3].handle.members().await.unwrap();
        members.iter().any(|m| m.node == "node-0" && m.info.as_ref().is_some_and(|i| i.info.ready))
    });

    let mut adopted = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::CatalogAdopted(c) = event {
            adopted.push(c.signed.catalog.epoch);
        }
    }
    assert_eq!(adopted, vec![1, 2]);
    for node in &nodes {
        node.handle.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_marked_down_everywhere_and_a_leaving_one_too() {
    let ca = TestCa::new("mesh CA");
    let nodes = mesh(&ca, 5);
    let all: Vec<&Node> = nodes.iter().collect();
    eventually!(10.0, "five nodes see each other alive", converged(&all).await);

    let crashed = nodes[4].handle.addr();
    nodes[4].task.abort();
    eventually!(10.0, "the crashed node is down everywhere", {
        let mut down = true;
        for node in &nodes[..4] {
            down &= !alive(&node.handle).await.contains(&crashed);
        }
        down
    });
    let remaining: Vec<&Node> = nodes[..4].iter().collect();
    assert!(converged(&remaining).await, "no false deaths among the others");

    let leaver = nodes[3].handle.addr();
    tokio::time::timeout(Duration::from_secs(5), nodes[3].handle.leave()).await.unwrap();
    assert_eq!(nodes[3].handle.members().await.err(), Some(MeshError::Stopped));
    eventually!(5.0, "the node that left is down everywhere", {
        let mut down = true;
        for node in &nodes[..3] {
            down &= !alive(&node.handle).await.contains(&leaver);
        }
        down
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_and_both_sides_converge_on_the_newest_epoch() {
    let ca = TestCa::new("mesh CA");
    let nodes = mesh(&ca, 5);
    let all: Vec<&Node> = nodes.iter().collect();
    eventually!(10.0, "five nodes see each other alive", converged(&all).await);
    nodes[0].handle.publish_catalog(catalog(1, 2)).await.unwrap();
    eventually!(10.0, "catalog 1 reaches all five", nodes.iter().all(|n| epoch(n) == 1));

    // eu-west (nodes 0, 3) | us-east and ap-south (nodes 1, 2, 4).
    let side_a: Vec<usize> = vec![0, 3];
    let side_b: Vec<usize> = vec![1, 2, 4];
    let addrs = |side: &[usize]| side.iter().map(|&i| nodes[i].handle.addr()).collect::<HashSet<_>>();
    for &i in &side_a {
        nodes[i].handle.set_blocked(addrs(&side_b)).await.unwrap();
    }
    for &i in &side_b {
        nodes[i].handle.set_blocked(addrs(&side_a)).await.unwrap();
    }
    eventually!(10.0, "each side holds the other down", {
        let a = alive(&nodes[0].handle).await;
        let b = alive(&nodes[1].handle).await;
        a == addrs(&[3]) && b == addrs(&[2, 4])
    });

    assert_eq!(nodes[2].handle.publish_catalog(catalog(2, 200)).await, Ok(2));
    eventually!(10.0, "catalog 2 reaches side B", side_b.iter().all(|&i| epoch(&nodes[i]) == 2));
    assert!(side_a.iter().all(|&i| epoch(&nodes[i]) == 1), "the partition holds");

    for node in &nodes {
        node.handle.set_blocked(HashSet::new()).await.unwrap();
    }
    eventually!(15.0, "both sides converge on epoch 2", nodes.iter().all(|n| epoch(n) == 2));
    // Rejoining takes an announce-down round (2 s) or a few; once, on a loaded machine, over 15 s.
    eventually!(30.0, "membership heals", converged(&all).await);
    let blocked = nodes[0].handle.counters().await.unwrap().driver.datagrams_blocked;
    assert!(blocked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_cannot_join() {
    let ca = TestCa::new("mesh CA");
    let nodes = mesh(&ca, 3);
    let all: Vec<&Node> = nodes.iter().collect();
    eventually!(10.0, "three nodes see each other alive", converged(&all).await);

    let rogue_ca = TestCa::new("mesh CA");
    let seeds: Vec<SocketAddr> = nodes.iter().map(|n| n.handle.addr()).collect();
    let rogue = start(rogue_ca.node_tls(), 9, &seeds);
    eventually!(10.0, "the rogue's handshakes are refused", {
        let c = rogue.handle.counters().await.unwrap().driver;
        c.connect_failures >= 3
    });
    let mut refused = 0;
    for node in &nodes {
        let members = node.handle.members().await.unwrap();
        assert!(members.iter().all(|m| m.addr != rogue.handle.addr()), "rogue listed: {members:?}");
        refused += node.handle.counters().await.unwrap().driver.handshakes_refused;
    }
    assert!(refused >= 1, "the mesh refused the rogue's certificate");
    assert!(rogue.handle.members().await.unwrap().is_empty());
    assert!(converged(&all).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_catalog_is_rejected_and_the_epoch_does_not_change() {
    let ca = TestCa::new("mesh CA");
    let nodes = mesh(&ca, 3);
    let all: Vec<&Node> = nodes.iter().collect();
    eventually!(10.0, "three nodes see each other alive", converged(&all).await);
    nodes[0].handle.publish_catalog(catalog(2, 2)).await.unwrap();
    eventually!(10.0, "catalog 2 reaches all", nodes.iter().all(|n| epoch(n) == 2));

    let forger = ControlKey::from_seed(&[6; 32]);
    let forged = forger.sign_catalog(Catalog { epoch: 3, ..Catalog::default() });
    let r = nodes[1].handle.publish_catalog(forged.clone()).await;
    assert!(matches!(r, Err(MeshError::Rejected(Rejection::UnknownKey(_)))), "{r:?}");
    let mut as_control = forged;
    as_control.key_id = control().public().key_id().to_string();
    let r = nodes[1].handle.publish_catalog(as_control).await;
    assert_eq!(r, Err(MeshError::Rejected(Rejection::BadSignature)));
    let r = nodes[2].handle.publish_catalog(catalog(1, 2)).await;
    assert_eq!(r, Err(MeshError::Rejected(Rejection::Stale { have: 2, got: 1 })));

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(nodes.iter().all(|n| epoch(n) == 2));
    for node in &nodes {
        node.handle.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_datagrams_and_pull_streams_are_counted_and_the_node_carries_on() {
    let ca = TestCa::new("mesh CA");
    let nodes = mesh(&ca, 2);
    let all: Vec<&Node> = nodes.iter().collect();
    eventually!(10.0, "two nodes see each other alive", converged(&all).await);

    // A peer with a good certificate that speaks nonsense.
    let transport = meridian_gossip::driver::tls::transport(Duration::from_secs(10), Duration::from_secs(2));
    let (_, client) = ca.node_tls().quinn_configs(std::sync::Arc::new(transport)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client);
    let target = nodes[0].handle.addr();
    let conn = endpoint.connect(target, "127.0.0.1").unwrap().await.unwrap();
    for junk in [vec![], vec![9, 1, 2], vec![2, 0xff], vec![1, 0xff, 0xff, 0xff]] {
        conn.send_datagram(junk.into()).unwrap();
    }
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"not a pull request").await.unwrap();
    send.finish().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await.unwrap();
    assert!(answer.is_ok(), "an undecodable request gets the core's (empty) answer: {answer:?}");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(&vec![0; 70 * 1024]).await;
    let _ = send.finish();
    let answer = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await.unwrap();
    assert!(answer.is_err(), "an oversized request is refused (stream reset)");

    eventually!(5.0, "the junk is counted", {
        let c = nodes[0].handle.counters().await.unwrap();
        c.core.dropped_undecodable >= 3
            && c.core.swim_refused >= 1
            && c.core.pulls_refused >= 1
            && c.driver.pull_requests_refused >= 1
    });
    conn.close(0u32.into(), b"bye");
    nodes[1].handle.publish_catalog(catalog(1, 2)).await.unwrap();
    eventually!(10.0, "the mesh still works", nodes.iter().all(|n| epoch(n) == 1));
    assert!(converged(&all).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_at_the_same_address_rejoins_under_its_next_generation() {
    let ca = TestCa::new("mesh CA");
    let mut nodes = mesh(&ca, 3);
    nodes[0].handle.publish_catalog(catalog(1, 2)).await.unwrap();
    let all: Vec<&Node> = nodes.iter().collect();
    eventually!(10.0, "three nodes see each other alive", converged(&all).await);
    eventually!(10.0, "catalog 1 reaches all", nodes.iter().all(|n| epoch(n) == 1));

    let addr = nodes[2].handle.addr();
    nodes[2].task.abort();
    eventually!(10.0, "the crashed node is down", !alive(&nodes[0].handle).await.contains(&addr));
    // The old endpoint lets go of its port once its connections have drained.
    let seeds = [nodes[0].handle.addr()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    nodes[2] = loop {
        match try_start(ca.node_tls(), 2, &seeds, addr, 2) {
            Ok(node) => break node,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "port still taken: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let all: Vec<&Node> = nodes.iter().collect();
    eventually!(10.0, "the restarted node is alive everywhere", converged(&all).await);
    eventually!(10.0, "and catches up on the catalog", epoch(&nodes[2]) == 1);
    let generations: Vec<u32> =
        nodes[0].handle.members().await.unwrap().iter().map(|m| m.generation).collect();
    assert!(generations.contains(&2), "{generations:?}");
}
