//! `meridian up`: control and three nodes in three regions on loopback, in this process, with
//! embedded defaults (sled, no Redis); the demo models pushed and deployed; Ctrl-C stops all.
//! Auth is on unless `--no-auth`: `up` makes a demo key with every scope (kept in
//! `<data_dir>/demo.key` across runs) and prints how to use it.

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
use crate::config::{ControlAuthConfig, ControlConfig};
use crate::registry::keys::KeySpec;
use meridian_gossip::keys::Scopes;

pub const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
/// The nodes' mesh endpoints (UDP) are at control's port + this + 0, 1, 2.
pub const MESH_PORT_OFFSET: u16 = 11;

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
    /// Turn auth off on control and the nodes (local development only): no key needed.
    #[arg(long)]
    pub no_auth: bool,
}

/// The file `up` keeps its demo key in, so a restart reuses it.
const DEMO_KEY_FILE: &str = "demo.key";

/// The demo key (every scope) from an earlier run if control still has it, else a new one.
async fn ensure_demo_key(client: &Client, data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join(DEMO_KEY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim().to_string();
        let id = meridian_gossip::keys::key_id(&key).unwrap_or_default().to_string();
        // Reused while it still has every scope (a key from an older release may lack `node`).
        if client
            .keys()
            .await?
            .iter()
            .any(|k| k.id == id && k.revoked_at.is_none() && k.scopes == Scopes::all())
        {
            return Ok(key);
        }
    }
    let spec = KeySpec { name: "demo".into(), scopes: Scopes::all(), ..KeySpec::default() };
    let created = client.create_key(&spec).await?;
    std::fs::create_dir_all(data_dir)?;
    crate::api::auth::write_private(&path, &created.key)?;
    eprintln!("  created the demo API key {} (kept in {})", created.record.id, path.display());
    Ok(created.key)
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

/// Control on `port` with auth as asked; with auth on, `up` drives it with a bootstrap admin
/// key made for this run only (control keeps its hash).
async fn start_control(
    args: &UpArgs,
    ca: &meridian_node::transport::certs::DevCa,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<(crate::ControlHandle, Client)> {
    let names = ["127.0.0.1".to_string(), "localhost".to_string()];
    let (cert, key) = ca.issue(&names, &args.data_dir.join("certs"), "control")?;
    let admin_key = if args.no_auth { None } else { Some(crate::registry::keys::generate_key()?.1) };
    let control_config = ControlConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], args.port)),
        data_dir: args.data_dir.join("control"),
        auth: ControlAuthConfig {
            enabled: !args.no_auth,
            admin_key_sha256: admin_key.as_deref().map(crate::api::auth::admin_key_sha256),
            jwt: Vec::new(),
        },
        // Plaintext HTTP for the operator API here, as for the nodes' HTTP/1.1 (local development).
        tls: meridian_node::transport::tls::TlsConfig {
            cert: Some(cert),
            key: Some(key),
            plaintext_http: !args.https,
        },
        ..ControlConfig::default()
    };
    let control = crate::server::spawn(control_config, shutdown.clone()).await?;
    let client = Client::with_key_trusting(&control.url(), admin_key.as_deref(), &ca.cert_path)?;
    Ok((control, client))
}

/// The nodes, each with a certificate from the development CA in `<data_dir>/certs`: HTTP/3 and
/// native QUIC need TLS. HTTP/1.1 stays plaintext (unless --https) so the curl examples work as
/// printed (local development).
async fn start_nodes(
    args: &UpArgs,
    control: &crate::ControlHandle,
    demo_key: Option<&str>,
    ca: &meridian_node::transport::certs::DevCa,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<meridian_node::NodeHandle>> {
    let certs = args.data_dir.join("certs");
    let mut nodes = Vec::new();
    let mesh_port = |i: usize| args.port + MESH_PORT_OFFSET + i as u16;
    let seeds: Vec<SocketAddr> =
        (0..REGIONS.len()).map(|i| SocketAddr::from(([127, 0, 0, 1], mesh_port(i)))).collect();
    let seed_names: Vec<String> = seeds.iter().map(ToString::to_string).collect();
    for (i, region) in REGIONS.iter().enumerate() {
        let id = format!("{region}-1");
        let (cert, key) = ca.issue(&["127.0.0.1".to_string(), "localhost".to_string()], &certs, &id)?;
        let mut config = NodeConfig {
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
        config.features.redis_url = args.redis.clone();
        config.auth.enabled = !args.no_auth;
        // Control and peers answer HTTPS with certificates from the same development CA.
        config.ca_file = Some(ca.cert_path.clone());
        // Spread batch jobs send shards to peers with the demo key.
        config.auth.peer_key = demo_key.map(str::to_string);
        // The nodes gossip over QUIC with the same certificates (the dev CA is the mesh CA)
        // and adopt catalogs control signed.
        config.mesh = meridian_node::mesh::settings::MeshSettings {
            listen: Some(seeds[i]),
            seeds: seed_names.clone(),
            control_keys: vec![control.public_key.clone()],
            profile: meridian_node::mesh::settings::MeshProfile::Lan,
            expected_nodes: REGIONS.len() as u32,
            ..Default::default()
        };
        nodes.push(
            meridian_node::spawn(config, shutdown.clone())
                .await
                .with_context(|| format!("starting node {id}"))?,
        );
    }
    Ok(nodes)
}

/// Until every node has loaded the demo models and knows the demo key.
async fn wait_ready(nodes: &[meridian_node::NodeHandle], demo_key: Option<&str>) -> anyhow::Result<()> {
    let key_id = demo_key.and_then(meridian_gossip::keys::key_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let ready = |n: &meridian_node::NodeHandle| {
        let table = n.state.table.load();
        table.ready() && key_id.is_none_or(|id| table.catalog.keys.contains_key(id))
    };
    while !nodes.iter().all(ready) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the nodes did not load the demo models within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Without Redis each node's sled is its own store, so every node gets the patients.
async fn load_patients(
    nodes: &[meridian_node::NodeHandle],
    shared: bool,
    key: Option<&str>,
    ca: &std::path::Path,
) -> anyhow::Result<()> {
    let http = super::client::http_client_trusting(key, Duration::from_secs(30), Some(ca))?;
    let loaders = if shared { &nodes[..1] } else { nodes };
    for n in loaders {
        let url = format!("{}/api/v1/features/patients/ingest", n.url());
        let resp = http.post(url).header("content-type", "text/csv").body(PATIENTS_CSV).send().await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "loading the demo patients failed: {}",
            resp.text().await?
        );
    }
    Ok(())
}

fn print_usage(
    control: &str,
    nodes: &[meridian_node::NodeHandle],
    demo_key: Option<&str>,
    ca: &std::path::Path,
) {
    let first = nodes.first().map(|n| n.url()).unwrap_or_default();
    say!("\nmeridian is up.\n\n  control    {control}");
    for (n, region) in nodes.iter().zip(REGIONS) {
        let quic =
            n.quic_addr.map_or_else(String::new, |a| format!("  + HTTP/3 and QUIC on udp/{}", a.port()));
        let mesh = n
            .state
            .mesh
            .as_ref()
            .map_or_else(String::new, |m| format!(", mesh udp/{}", m.handle.addr().port()));
        let quic = format!("{quic}{mesh}");
        say!("  node       {:<22} region {region:<9} {}{quic}", n.state.config.id, n.url());
    }
    say!("  CA         {} (trust it for HTTPS, HTTP/3 and QUIC)", ca.display());
    say!("\n  models     {}", DEMO_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "));
    let auth = match demo_key {
        Some(key) => {
            say!("\nAuth is on. The demo API key has every scope (a node's default limits apply):\n");
            say!("  export MERIDIAN_API_KEY={key}");
            " -H \"authorization: Bearer $MERIDIAN_API_KEY\""
        }
        None => {
            say!("\nAuth is off (--no-auth): nodes and control take requests without a key.");
            ""
        }
    };
    // Every command names the ports and the CA, so it works as printed whatever `--port` was.
    let curl = if first.starts_with("https://") {
        format!("curl -s --cacert {}", ca.display())
    } else {
        "curl -s".into()
    };
    let cli = format!("cargo run --release --bin meridian -- --control {control}");
    say!("\nTry:\n");
    say!(
        "  {curl} {first}/api/v1/models/breast-cancer-mlp/predict{auth} -H 'content-type: application/json' \\\n    -d '{{\"features\": {}}}'\n",
        example_row()
    );
    say!(
        "  {curl} {first}/api/v1/models/breast-cancer-mlp/predict{auth} -H 'content-type: application/json' \\\n    -d '{{\"entity\": {{\"patient_id\": \"p42\"}}}}'\n"
    );
    say!(
        "  {cli} predict breast-cancer-mlp --node {first} --transport native --ca {} \\\n    --features '{}'\n",
        ca.display(),
        example_row()
    );
    say!("  {cli} models list");
    say!("  {cli} nodes --node {first} --ca {}", ca.display());
    say!("  {cli} keys create --name app --scope predict");
    say!("  {curl} {first}/v2/models/breast-cancer-mlp{auth}\n\nCtrl-C stops everything.");
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    // Control, three nodes on the next ports, their mesh endpoints up to port + 13.
    let highest = u16::MAX - MESH_PORT_OFFSET - REGIONS.len() as u16;
    if args.port == 0 || args.port > highest {
        anyhow::bail!("--port must be between 1 and {highest}: the nodes and their mesh endpoints take the ports above it");
    }
    let shutdown = shutdown_on_signal();
    let ca = meridian_node::transport::certs::DevCa::open_or_create(&args.data_dir.join("certs"))?;
    let (control, client) = start_control(&args, &ca, &shutdown).await?;
    let demo_key = if args.no_auth { None } else { Some(ensure_demo_key(&client, &args.data_dir).await?) };
    let nodes = start_nodes(&args, &control, demo_key.as_deref(), &ca, &shutdown).await?;
    eprintln!("meridian: control at {}; pushing the demo models", control.url());
    ensure_demo_models(&client).await?;
    wait_ready(&nodes, demo_key.as_deref()).await?;
    load_patients(&nodes, args.redis.is_some(), demo_key.as_deref(), &ca.cert_path).await?;
    print_usage(&control.url(), &nodes, demo_key.as_deref(), &ca.cert_path);
    shutdown.cancelled().await;
    eprintln!("stopping");
    for n in nodes {
        let _ = tokio::time::timeout(Duration::from_secs(10), n.task).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), control.task).await;
    Ok(())
}
