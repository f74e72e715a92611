//! `meridian up`: control and three nodes in three regions on loopback, in this process, with
//! embedded defaults (sled, no Redis); the demo models pushed and deployed; Ctrl-C stops all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use meridian_models::demo::{patients_view, reading_patients, DEMO_MODELS, PATIENTS_CSV};
use meridian_models::ModelSpec;
use meridian_node::NodeConfig;

use super::client::Client;
use super::daemons::shutdown_on_signal;
use crate::config::ControlConfig;

pub const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where control and the nodes keep their state (kept across runs).
    #[arg(long, default_value = ".meridian/up")]
    pub data_dir: PathBuf,
    /// Control listens on this port, the nodes on the next three.
    #[arg(long, default_value_t = 7070)]
    pub port: u16,
    /// A Redis every node shares as the feature store; default: each node's own sled.
    #[arg(long)]
    pub redis: Option<String>,
    /// Serve HTTP/1.1 over TLS too (with the development CA); default: plaintext HTTP/1.1.
    #[arg(long)]
    pub https: bool,
}

/// Push each bundled demo model that control does not have yet and deploy it if nothing of it
/// is live. Safe to run again.
pub async fn ensure_demo_models(client: &Client) -> anyhow::Result<()> {
    client.put_view(&patients_view()).await?;
    let catalog = client.catalog().await?;
    let known: Vec<String> =
        client.list().await?.iter().filter_map(|m| m["name"].as_str().map(str::to_string)).collect();
    for demo in DEMO_MODELS {
        if !known.iter().any(|k| k == demo.name) {
            // The breast-cancer models read their features from the patients view by entity.
            let mut spec = ModelSpec::parse(demo.spec)?;
            if demo.name.starts_with("breast-cancer") {
                spec = reading_patients(&spec);
            }
            client.push(demo.name, serde_json::to_string(&spec)?, demo.onnx.to_vec(), false).await?;
            eprintln!("  pushed {}", demo.name);
        }
        if !catalog.models.contains_key(demo.name) {
            client.deploy(demo.name, None).await?;
            eprintln!("  deployed {}", demo.name);
        }
    }
    Ok(())
}

fn example_row() -> String {
    let Some(mlp) = DEMO_MODELS.iter().find(|m| m.name == "breast-cancer-mlp") else {
        return "{}".into();
    };
    let reference: serde_json::Value = serde_json::from_str(mlp.reference).unwrap_or_default();
    reference["rows"][0].to_string()
}

/// What is running and what to try.
fn welcome(control_url: &str, nodes: &[meridian_node::NodeHandle], ca: &std::path::Path) {
    let first = nodes[0].url();
    say!("\nmeridian is up.\n\n  control    {}", control_url);
    for (n, region) in nodes.iter().zip(REGIONS) {
        let quic =
            n.quic_addr.map_or_else(String::new, |a| format!("  + HTTP/3 and QUIC on udp/{}", a.port()));
        say!("  node       {:<22} region {region:<9} {}{quic}", n.state.config.id, n.url());
    }
    say!("  CA         {} (trust it for HTTP/3 and QUIC)", ca.display());
    say!("\n  models     {}", DEMO_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "));
    say!("\nTry:\n");
    say!(
        "  curl -s {first}/api/v1/models/breast-cancer-mlp/predict -H 'content-type: application/json' \\\n    -d '{{\"features\": {}}}'\n",
        example_row()
    );
    say!(
        "  curl -s {first}/api/v1/models/breast-cancer-mlp/predict -H 'content-type: application/json' \\\n    -d '{{\"entity\": {{\"patient_id\": \"p42\"}}}}'\n"
    );
    say!(
        "  cargo run --release --bin meridian -- predict breast-cancer-mlp --transport native --ca {} \\\n    --features '{}'\n",
        ca.display(),
        example_row()
    );
    say!("  cargo run --release --bin meridian -- models list");
    say!("  cargo run --release --bin meridian -- nodes");
    say!("  curl -s {first}/v2/models/breast-cancer-mlp\n\nCtrl-C stops everything.");
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let control_config = ControlConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], args.port)),
        data_dir: args.data_dir.join("control"),
        ..ControlConfig::default()
    };
    let control = crate::server::spawn(control_config, shutdown.clone()).await?;
    // A development CA signs each node's certificate: HTTP/3 and native QUIC need TLS. HTTP/1.1
    // stays plaintext here (unless --https) so the curl examples work as printed (local development).
    let certs = args.data_dir.join("certs");
    let ca = meridian_node::transport::certs::DevCa::open_or_create(&certs)?;
    let mut nodes = Vec::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let id = format!("{region}-1");
        let (cert, key) = ca.issue(&["127.0.0.1".to_string(), "localhost".to_string()], &certs, &id)?;
        let config = NodeConfig {
            id: id.clone(),
            region: region.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], args.port + 1 + i as u16)),
            control_url: Some(control.url()),
            data_dir: args.data_dir.join(&id),
            heartbeat_ms: 2_000,
            tls: meridian_node::transport::tls::TlsConfig {
                cert: Some(cert),
                key: Some(key),
                plaintext_http: !args.https,
            },
            ..NodeConfig::default()
        };
        let mut config = config;
        config.features.redis_url = args.redis.clone();
        nodes.push(
            meridian_node::spawn(config, shutdown.clone())
                .await
                .with_context(|| format!("starting node {id}"))?,
        );
    }
    eprintln!("meridian: control at {}; pushing the demo models", control.url());
    let client = Client::new(&control.url())?;
    ensure_demo_models(&client).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !nodes.iter().all(|n| n.state.table.load().ready()) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the nodes did not load the demo models within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Without Redis each node's sled is its own store, so every node gets the patients.
    let ca_pem = reqwest::Certificate::from_pem(&std::fs::read(&ca.cert_path)?)?;
    let http =
        reqwest::Client::builder().add_root_certificate(ca_pem).timeout(Duration::from_secs(30)).build()?;
    let loaders = if args.redis.is_some() { &nodes[..1] } else { &nodes[..] };
    for n in loaders {
        let url = format!("{}/api/v1/features/patients/ingest", n.url());
        let resp = http.post(url).header("content-type", "text/csv").body(PATIENTS_CSV).send().await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "loading the demo patients failed: {}",
            resp.text().await?
        );
    }
    welcome(&control.url(), &nodes, &ca.cert_path);
    shutdown.cancelled().await;
    eprintln!("stopping");
    for n in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(10), n.task).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), control.task).await;
    Ok(())
}
