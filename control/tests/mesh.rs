//! The mesh with real nodes: five nodes in three regions on 127.0.0.1, each with its own mesh
//! endpoint (QUIC, mutual TLS with a test CA), adopting catalogs control signed.
#![allow(clippy::unwrap_used)]

mod harness;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::*;
use meridian_gossip::mesh::{ControlKey, SignedCatalog};
use meridian_gossip::{MemberStatus, MeshView, Placement};
use meridian_models::demo::demo_model;
use meridian_node::client::{MeshClient, MeshOptions, Rows, Transport};
use meridian_node::mesh::settings::{MeshProfile, MeshSettings};
use meridian_node::transport::certs::DevCa;
use serde_json::json;

/// (node id, region) of the five nodes.
const NODES: [(&str, &str); 5] =
    [("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us"), ("us-2", "us"), ("ap-1", "ap")];

/// A node in the mesh: plaintext HTTP for the tests' requests, a mesh certificate from `ca`.
fn mesh_config(
    id: &str,
    region: &str,
    control: Option<String>,
    dir: &Path,
    ca: &DevCa,
    seeds: &[SocketAddr],
    control_key: &str,
) -> meridian_node::NodeConfig {
    let certs = dir.join(id).join("certs");
    let (cert, key) = ca.issue(&["127.0.0.1".to_string()], &certs, id).unwrap();
    let mut config = node_config(id, control, &dir.join(id));
    config.region = region.to_string();
    config.tls.cert = Some(cert);
    config.tls.key = Some(key);
    config.ca_file = Some(ca.cert_path.clone());
    config.mesh = MeshSettings {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        seeds: seeds.iter().map(ToString::to_string).collect(),
        control_keys: vec![control_key.to_string()],
        profile: MeshProfile::Lan,
        expected_nodes: 5,
        drain_grace_ms: 300,
        info_refresh_ms: 300,
        ..MeshSettings::default()
    };
    config
}

fn mesh_addr(node: &Node) -> SocketAddr {
    node.handle.state.mesh.as_ref().unwrap().handle.addr()
}

/// Five nodes; those whose index `with_control` accepts follow control, the rest only the mesh.
async fn start_mesh(dir: &Path, control: &Control, with_control: impl Fn(usize) -> bool) -> Vec<Node> {
    let ca = DevCa::open_or_create(&dir.join("ca")).unwrap();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, (id, region)) in NODES.iter().enumerate() {
        let seeds: Vec<SocketAddr> = nodes.iter().take(2).map(mesh_addr).collect();
        let url = with_control(i).then(|| control.url());
        let config = mesh_config(id, region, url, dir, &ca, &seeds, &control.handle.public_key);
        nodes.push(Node::start(config).await);
    }
    nodes
}

async fn view(node: &Node) -> MeshView {
    let resp = http().get(format!("{}/api/v1/mesh/nodes", node.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Wait until every node sees every other node of `ids` in `state`.
async fn wait_members(nodes: &[&Node], ids: &[&str], state: MemberStatus) {
    for node in nodes {
        let what = format!("{} to see {ids:?} {state:?}", node.handle.state.config.id);
        wait_for(&what, || async {
            let v = view(node).await;
            ids.iter().all(|id| v.nodes.iter().any(|n| n.id == *id && (n.is_self || n.state == state)))
        })
        .await;
    }
}

async fn predict(node: &Node, model: &str, row: &serde_json::Value) -> (u16, String, serde_json::Value) {
    let resp =
        http().post(format!("{}/api/v1/models/{model}/predict", node.url())).json(row).send().await.unwrap();
    let status = resp.status().as_u16();
    let served = resp.headers().get("x-meridian-node").unwrap().to_str().unwrap().to_string();
    (status, served, resp.json().await.unwrap())
}

fn epoch(node: &Node) -> u64 {
    node.handle.state.table.load().catalog.epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploys_spread_through_the_mesh_and_forged_catalogs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    // Only eu-1 talks to control: the other four learn everything from the mesh and fetch
    // artifacts from their peers.
    let nodes = start_mesh(dir.path(), &control, |i| i == 0).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let ids: Vec<&str> = NODES.iter().map(|(id, _)| *id).collect();
    wait_members(&all, &ids, MemberStatus::Alive).await;

    let mlp = demo_model("breast-cancer-mlp").unwrap();
    let logreg = demo_model("breast-cancer-logreg").unwrap();
    control.push("cancer", logreg).await;
    control.push("cancer", mlp).await;
    control.client.deploy("cancer", Some(1)).await.unwrap();
    for n in &nodes {
        n.wait_live("cancer", 1).await;
    }
    control.client.deploy("cancer", Some(2)).await.unwrap();
    for n in &nodes {
        n.wait_live("cancer", 2).await;
    }
    let reference = reference(mlp);
    for n in &nodes {
        let (status, served, body) = predict(n, "cancer", &reference.features(0)).await;
        assert_eq!((status, served.as_str()), (200, n.handle.state.config.id.as_str()), "{body}");
        assert!(close(body["prediction"].as_f64().unwrap(), reference.prediction(0)));
    }
    // A rollback reaches every node.
    control.client.rollback("cancer").await.unwrap();
    for n in &nodes {
        n.wait_live("cancer", 1).await;
    }

    forgeries_are_refused(&control, &nodes).await;
    placement_forwards_to_the_nearest_holder(&control, &nodes, &reference).await;

    // Control stops: nodes keep serving, and keep gossiping their info.
    control.stop().await;
    let before = info_versions(&nodes[4]).await;
    wait_for("node infos to keep advancing without control", || async {
        let now = info_versions(&nodes[4]).await;
        before.iter().all(|(id, v)| now.get(id).is_some_and(|n| n > v))
    })
    .await;
    for n in &nodes {
        let (status, _, body) = predict(n, "cancer", &reference.features(2)).await;
        assert_eq!(status, 200, "{body}");
    }
    for n in nodes {
        n.stop().await;
    }
}

/// Forged catalogs, published through a node that does not talk to control, are refused and
/// change nothing anywhere.
async fn forgeries_are_refused(control: &Control, nodes: &[Node]) {
    let have = epoch(&nodes[2]);
    let signed: SignedCatalog = http()
        .get(format!("{}/api/v1/catalog/signed", control.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tampered = signed.clone();
    tampered.catalog.epoch += 10;
    tampered.catalog.models.clear();
    let stranger = ControlKey::from_seed(&[7; 32]).sign_catalog(tampered.catalog.clone());
    let publish = format!("{}/api/v1/mesh/catalog", nodes[2].url());
    for (what, body, status) in [
        ("tampered content", serde_json::to_value(&tampered).unwrap(), 403),
        ("an unknown key", serde_json::to_value(&stranger).unwrap(), 403),
        ("a replay of the current epoch", serde_json::to_value(&signed).unwrap(), 409),
        ("not a catalog", json!({"epoch": 99}), 400),
    ] {
        let (got, answer) = post_json(&publish, &body).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert!(answer["error"].as_str().unwrap().len() > 5, "{what}: {answer}");
    }
    // Counted, for operators: two forged (tampered, unknown key), one replayed.
    let metrics = metrics_text(&nodes[2].url()).await;
    let count = |event: &str| -> u64 {
        let prefix = format!("meridian_mesh_events_total{{event=\"{event}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
    };
    let replayed = count("catalogs_stale") + count("catalog_duplicates");
    assert!(count("catalogs_forged") >= 2 && replayed >= 1, "{metrics}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in nodes {
        assert_eq!(epoch(n), have, "{} kept its epoch", n.handle.state.config.id);
        assert!(n.handle.state.table.load().models.contains_key("cancer"));
    }
}

/// Placement: only eu loads the model; us and ap forward to the nearest eu node, which answers.
async fn placement_forwards_to_the_nearest_holder(control: &Control, nodes: &[Node], reference: &Reference) {
    let placed = Placement::Regions { regions: ["eu".to_string()].into() };
    control.client.place("cancer", &placed).await.unwrap();
    for n in &nodes[2..] {
        n.wait_table("cancer unloaded", |t| !t.models.contains_key("cancer")).await;
    }
    for n in &nodes[..2] {
        n.wait_table("cancer kept", |t| t.models.contains_key("cancer")).await;
    }
    let eu: HashSet<&str> = ["eu-1", "eu-2"].into();
    for n in &nodes[2..] {
        let (status, served, body) = predict(n, "cancer", &reference.features(1)).await;
        assert_eq!(status, 200, "{body}");
        assert!(eu.contains(served.as_str()), "{} forwarded to {served}", n.handle.state.config.id);
        assert_eq!(body["served_by"], served.as_str());
        // Over HTTP/3 on the peers' QUIC endpoints.
        let metrics = metrics_text(&n.url()).await;
        let h3 = metrics.lines().any(|l| {
            l.starts_with("meridian_forwarded_total")
                && l.contains("transport=\"h3\"")
                && l.contains("outcome=\"answered\"")
        });
        assert!(h3, "no HTTP/3 forward counted on {}: {metrics}", n.handle.state.config.id);
        // KServe clients check readiness and metadata before they infer: those travel too.
        for path in ["/v2/models/cancer/ready", "/v2/models/cancer"] {
            let resp = http().get(format!("{}{path}", n.url())).send().await.unwrap();
            let served = resp.headers()["x-meridian-node"].to_str().unwrap().to_string();
            assert_eq!(resp.status().as_u16(), 200, "{path} on {}", n.handle.state.config.id);
            assert!(eu.contains(served.as_str()), "{path} answered by {served}");
        }
    }

    // Native QUIC: a node without the model relays the stream to a holder.
    let native = meridian_node::client::Client::connect(meridian_node::client::ClientOptions {
        url: nodes[4].url(),
        transport: Transport::Native,
        ca: nodes[4].handle.state.config.ca_file.clone(),
        token: None,
        quic_addr: nodes[4].handle.quic_addr,
        timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let answer = native.predict("cancer", Rows::Json(vec![reference.rows[1].clone()])).await.unwrap();
    assert!(eu.contains(answer.served_by.as_str()), "relayed to {}", answer.served_by);
    let (_, _, direct) = predict(&nodes[0], "cancer", &reference.features(1)).await;
    assert!(close(answer.predictions[0].prediction, direct["prediction"].as_f64().unwrap()));

    // A mesh client over native QUIC with a single attempt reaches a holder directly: it
    // tries the nodes that list the model warm first.
    let options = MeshOptions {
        transport: Transport::Native,
        ca: nodes[0].handle.state.config.ca_file.clone(),
        max_attempts: 1,
        ..MeshOptions::default()
    };
    let client = MeshClient::connect(vec![nodes[4].url()], options).await.unwrap();
    wait_for("the client to see the eu holders", || async {
        client.refresh().await.unwrap();
        client.nodes().iter().filter(|c| c.warm.iter().any(|m| m == "cancer")).count() == 2
    })
    .await;
    for _ in 0..5 {
        let rows = Rows::Json(vec![reference.rows[1].clone()]);
        let answer = client.predict("cancer", rows).await.unwrap();
        assert!(eu.contains(answer.served_by.as_str()), "{}", answer.served_by);
    }

    // On demand: no node preloads it; the first node asked that no peer can help loads it.
    control.client.place("cancer", &Placement::OnDemand).await.unwrap();
    for n in nodes {
        n.wait_table("cancer unloaded", |t| !t.models.contains_key("cancer")).await;
    }
    // (Peers' infos may still list it for up to a second: the request may be forwarded to one
    // of them, which then loads it itself.)
    let (status, served, body) = predict(&nodes[4], "cancer", &reference.features(1)).await;
    assert_eq!(status, 200, "{body}");
    let holds = |n: &Node| n.handle.state.table.load().models.contains_key("cancer");
    let server = nodes.iter().find(|n| n.handle.state.config.id == served).unwrap();
    assert!(holds(server), "{served} answered without loading it");
    assert_eq!(nodes.iter().filter(|n| holds(n)).count(), 1, "loaded on one node only");
}

/// Each peer's info version as `node` holds it.
async fn info_versions(node: &Node) -> std::collections::HashMap<String, u64> {
    view(node)
        .await
        .nodes
        .into_iter()
        .filter(|n| !n.is_self)
        .filter_map(|n| Some((n.id, n.info?.version)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_between_regions_heals_to_the_newest_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let nodes = start_mesh(dir.path(), &control, |i| i == 0).await;
    let ids: Vec<&str> = NODES.iter().map(|(id, _)| *id).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    wait_members(&all, &ids, MemberStatus::Alive).await;
    control.push("cancer", demo_model("breast-cancer-logreg").unwrap()).await;
    control.push("cancer", demo_model("breast-cancer-mlp").unwrap()).await;
    control.client.deploy("cancer", Some(1)).await.unwrap();
    for n in &nodes {
        n.wait_live("cancer", 1).await;
    }

    // Cut eu (with the node that talks to control) from us and ap.
    let (eu, rest) = nodes.split_at(2);
    let addrs = |side: &[Node]| side.iter().map(mesh_addr).collect::<HashSet<_>>();
    for (side, other) in [(eu, rest), (rest, eu)] {
        for n in side {
            n.handle.state.mesh.as_ref().unwrap().handle.set_blocked(addrs(other)).await.unwrap();
        }
    }
    let eu_refs: Vec<&Node> = eu.iter().collect();
    wait_members(&eu_refs, &["us-1", "us-2", "ap-1"], MemberStatus::Down).await;
    control.client.deploy("cancer", Some(2)).await.unwrap();
    for n in eu {
        n.wait_live("cancer", 2).await;
    }
    let newest = epoch(&eu[0]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in rest {
        assert!(epoch(n) < newest, "{} saw the deploy through a partition", n.handle.state.config.id);
    }

    // Heal: both sides converge on the newest epoch and on membership.
    for n in &nodes {
        n.handle.state.mesh.as_ref().unwrap().handle.set_blocked(HashSet::new()).await.unwrap();
    }
    for n in rest {
        n.wait_live("cancer", 2).await;
    }
    for n in &nodes {
        assert_eq!(epoch(n), newest);
    }
    wait_members(&all, &ids, MemberStatus::Alive).await;
    control.stop().await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_without_the_mesh_certificate_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let ca = DevCa::open_or_create(&dir.path().join("ca")).unwrap();
    let key = control.handle.public_key.clone();
    let a = Node::start(mesh_config("a", "eu", Some(control.url()), dir.path(), &ca, &[], &key)).await;
    let b = Node::start(mesh_config("b", "us", None, dir.path(), &ca, &[mesh_addr(&a)], &key)).await;
    wait_members(&[&a, &b], &["a", "b"], MemberStatus::Alive).await;
    // Its own CA signed its certificate: the members refuse the handshake, it refuses theirs.
    let rogue_ca = DevCa::open_or_create(&dir.path().join("rogue-ca")).unwrap();
    let seeds = [mesh_addr(&a), mesh_addr(&b)];
    let rogue = Node::start(mesh_config("rogue", "ap", None, dir.path(), &rogue_ca, &seeds, &key)).await;
    control.push("cancer", demo_model("breast-cancer-logreg").unwrap()).await;
    control.client.deploy("cancer", Some(1)).await.unwrap();
    a.wait_live("cancer", 1).await;
    b.wait_live("cancer", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in [&a, &b] {
        assert!(!view(n).await.nodes.iter().any(|m| m.id == "rogue"), "rogue joined");
    }
    let seen = view(&rogue).await;
    assert_eq!(seen.nodes.iter().filter(|m| !m.is_self && m.state == MemberStatus::Alive).count(), 0);
    assert_eq!(epoch(&rogue), 0, "the rogue node got a catalog");
    let counters = rogue.handle.state.mesh.as_ref().unwrap().handle.counters().await.unwrap();
    assert!(counters.driver.connect_failures > 0, "{counters:?}");
    control.stop().await;
    for n in [a, b, rogue] {
        n.stop().await;
    }
}

/// Four tasks calling predictions through one [`MeshClient`] until stopped.
struct Callers {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    served: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Callers {
    fn start(client: &MeshClient, rows: &Rows) -> Callers {
        let mut c = Callers {
            stop: Arc::default(),
            calls: Arc::default(),
            failures: Arc::default(),
            served: Arc::default(),
            tasks: Vec::new(),
        };
        for _ in 0..4 {
            let (client, rows, stop) = (client.clone(), rows.clone(), c.stop.clone());
            let (calls, failures, served) = (c.calls.clone(), c.failures.clone(), c.served.clone());
            c.tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.predict("cancer", rows.clone()).await {
                        Ok(answer) => served.lock().unwrap().push(answer.served_by),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        c
    }

    /// Forget who served so far, wait for `n` more calls; whether `node` served any of them.
    async fn served_next(&self, n: usize, node: &str) -> bool {
        self.served.lock().unwrap().clear();
        let from = self.calls.load(Ordering::Relaxed);
        wait_for("more calls", || async { self.calls.load(Ordering::Relaxed) >= from + n }).await;
        self.served.lock().unwrap().iter().any(|s| s == node)
    }

    /// Stop; the number of calls and every failure.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.calls.load(Ordering::Relaxed), failures)
    }
}

/// Clients call predictions in a loop while the node nearest to them crashes and another is
/// drained: no call fails, every node marks the crashed one down, and the answers come from
/// the nodes left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_is_marked_down_everywhere_and_clients_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let mut nodes = start_mesh(dir.path(), &control, |_| true).await;
    let ids: Vec<&str> = NODES.iter().map(|(id, _)| *id).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    wait_members(&all, &ids, MemberStatus::Alive).await;
    let mlp = demo_model("breast-cancer-mlp").unwrap();
    control.push("cancer", mlp).await;
    control.client.deploy("cancer", Some(1)).await.unwrap();
    for n in &nodes {
        n.wait_live("cancer", 1).await;
    }
    let options = MeshOptions {
        transport: Transport::Native,
        ca: Some(dir.path().join("ca").join("ca.pem")),
        timeout: Duration::from_secs(5),
        refresh: Duration::from_millis(500),
        ..MeshOptions::default()
    };
    let client = MeshClient::connect(vec![nodes[1].url(), nodes[3].url()], options).await.unwrap();
    // Peers learn that the others are ready when their infos arrive (coalesced by the mesh).
    wait_for("the client to see five ready nodes", || async {
        client.refresh().await.unwrap();
        client.nodes().len() == 5
    })
    .await;
    let callers = Callers::start(&client, &Rows::Json(vec![reference(mlp).rows[0].clone()]));
    callers.served_next(50, "").await;

    // Crash the node the clients prefer: its mesh stops without a goodbye, its front doors close.
    let nearest = client.nodes()[0].id.clone();
    let killed = nodes.remove(nodes.iter().position(|n| n.handle.state.config.id == nearest).unwrap());
    killed.handle.state.mesh.as_ref().unwrap().abort();
    killed.stop().await;
    let left: Vec<&Node> = nodes.iter().collect();
    wait_members(&left, &[nearest.as_str()], MemberStatus::Down).await;
    assert!(!callers.served_next(50, &nearest).await, "{nearest} answered after it was killed");

    // Drain the next node: it answers 503 to new calls, which go elsewhere, then leaves.
    let drained = client.nodes()[0].id.clone();
    let d = nodes.iter().find(|n| n.handle.state.config.id == drained).unwrap();
    let (status, body) = post_json(&format!("{}/api/v1/admin/drain", d.url()), &json!({})).await;
    assert_eq!((status, body["draining"].as_bool()), (202, Some(true)), "{body}");
    // Not ready from then on, in its own report too (spread batch jobs pick ready nodes).
    let (_, info) = get_json(&format!("{}/api/v1/node", d.url())).await;
    assert_eq!((info["ready"].as_bool(), info["draining"].as_bool()), (Some(false), Some(true)), "{info}");
    let others: Vec<&Node> = nodes.iter().filter(|n| n.handle.state.config.id != drained).collect();
    wait_members(&others, &[drained.as_str()], MemberStatus::Down).await;
    // Having left, the drained node still shows the members it parted from, so a client that
    // asks it (a seed) finds the rest of the mesh (its view once listed only itself).
    let (_, view) = get_json(&format!("{}/api/v1/mesh/nodes", d.url())).await;
    let alive =
        view["nodes"].as_array().unwrap().iter().filter(|n| n["self"] == false && n["state"] == "alive");
    assert!(alive.count() >= 2, "{view}");
    assert!(!callers.served_next(50, &drained).await, "{drained} answered after it left");
    let (calls, failures) = callers.finish().await;
    assert!(failures.is_empty(), "{} of {calls} calls failed: {failures:?}", failures.len());
    control.stop().await;
    for n in nodes {
        n.stop().await;
    }
}
