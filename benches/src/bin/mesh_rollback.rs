//! How long a rollback (and a re-deploy) takes to reach every node of a local mesh: control and
//! `--nodes` nodes in three regions on 127.0.0.1, in this process, each with its mesh endpoint
//! (QUIC, mutual TLS); only the first node long-polls control, the rest learn from the mesh.
//! Time runs from the operator's API call until every node's serving table has swapped (polled
//! every 200 µs in process, so the figure includes no client round trip).
//!
//!   cargo run --release -p meridian-benches --bin mesh_rollback -- --nodes 5 --rounds 20

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use meridian_control::cli::client::Client;
use meridian_control::ControlConfig;
use meridian_models::demo::demo_model;
use meridian_node::mesh::settings::{MeshProfile, MeshSettings};
use meridian_node::transport::certs::DevCa;
use meridian_node::{NodeConfig, NodeHandle};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Rollback + re-deploy pairs.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Every node long-polls control (instead of only the first).
    #[arg(long)]
    all_follow_control: bool,
    #[arg(long)]
    json: bool,
}

const REGIONS: [&str; 3] = ["eu", "us", "ap"];

async fn start_nodes(
    args: &Args,
    dir: &std::path::Path,
    control: &meridian_control::ControlHandle,
    token: &CancellationToken,
) -> anyhow::Result<Vec<NodeHandle>> {
    let ca = DevCa::open_or_create(&dir.join("ca"))?;
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..args.nodes {
        let id = format!("node-{i}");
        let (cert, key) = ca.issue(&["127.0.0.1".to_string()], &dir.join("certs"), &id)?;
        let mut config = NodeConfig {
            id: id.clone(),
            region: REGIONS[i % REGIONS.len()].to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.join(&id),
            control_url: (i == 0 || args.all_follow_control).then(|| control.url()),
            ca_file: Some(ca.cert_path.clone()),
            ..NodeConfig::default()
        };
        config.tls.cert = Some(cert);
        config.tls.key = Some(key);
        config.tls.plaintext_http = true;
        config.auth.enabled = false;
        config.mesh = MeshSettings {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            seeds: nodes
                .iter()
                .take(2)
                .filter_map(|n| n.state.mesh.as_ref().map(|m| m.handle.addr().to_string()))
                .collect(),
            control_keys: vec![control.public_key.clone()],
            profile: MeshProfile::Lan,
            expected_nodes: args.nodes.max(2) as u32,
            ..MeshSettings::default()
        };
        nodes.push(meridian_node::spawn(config, token.clone()).await?);
    }
    Ok(nodes)
}

fn live_everywhere(nodes: &[NodeHandle], version: u32) -> bool {
    nodes.iter().all(|n| {
        n.state.table.load().models.get("cancer").is_some_and(|s| s.live.manifest.version == version)
    })
}

async fn until_live(nodes: &[NodeHandle], version: u32, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !live_everywhere(nodes, version) {
        anyhow::ensure!(start.elapsed() < limit, "v{version} did not reach every node within {limit:?}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(start.elapsed())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let token = CancellationToken::new();
    let mut config = ControlConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().join("control"),
        ..ControlConfig::default()
    };
    config.auth.enabled = false;
    config.tls.plaintext_http = true;
    let control = meridian_control::spawn(config, token.clone()).await?;
    let client = Client::new(&control.url())?;
    let nodes = start_nodes(&args, dir.path(), &control, &token).await?;
    for name in ["breast-cancer-logreg", "breast-cancer-mlp"] {
        let demo = demo_model(name).ok_or_else(|| anyhow::anyhow!("no demo model {name}"))?;
        client
            .push(
                "cancer",
                demo.spec.replace(&format!("name = \"{name}\""), "name = \"cancer\""),
                demo.onnx.to_vec(),
                false,
            )
            .await?;
    }
    client.deploy("cancer", Some(1)).await?;
    until_live(&nodes, 1, Duration::from_secs(60)).await?;
    client.deploy("cancer", Some(2)).await?;
    until_live(&nodes, 2, Duration::from_secs(60)).await?;
    let (mut rollbacks, mut deploys) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let start = Instant::now();
        client.rollback("cancer").await?;
        until_live(&nodes, 1, Duration::from_secs(10)).await?;
        rollbacks.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        client.deploy("cancer", Some(2)).await?;
        until_live(&nodes, 2, Duration::from_secs(10)).await?;
        deploys.push(start.elapsed().as_secs_f64() * 1e3);
    }
    for v in [&mut rollbacks, &mut deploys] {
        v.sort_by(f64::total_cmp);
    }
    let row = |name: &str, v: &[f64]| serde_json::json!({ "change": name, "p50_ms": percentile(v, 0.5), "p90_ms": percentile(v, 0.9), "max_ms": percentile(v, 1.0) });
    let rows = [row("rollback", &rollbacks), row("re-deploy (loads it again)", &deploys)];
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let followers =
            if args.all_follow_control { "every node follows control" } else { "one node follows control" };
        println!("{} nodes, {} rounds, {followers}", args.nodes, args.rounds);
        println!("{:<28} {:>9} {:>9} {:>9}", "change reaching every node", "p50 ms", "p90 ms", "max ms");
        for r in &rows {
            println!(
                "{:<28} {:>9.1} {:>9.1} {:>9.1}",
                r["change"].as_str().unwrap_or(""),
                r["p50_ms"].as_f64().unwrap_or(0.0),
                r["p90_ms"].as_f64().unwrap_or(0.0),
                r["max_ms"].as_f64().unwrap_or(0.0)
            );
        }
    }
    token.cancel();
    for n in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(10), n.task).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), control.task).await;
    Ok(())
}
