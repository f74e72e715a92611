//! `meridian control` and `meridian node`: a TOML config file, overridden by env and flags,
//! validated (every problem reported), run until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use meridian_node::NodeConfig;
use tokio_util::sync::CancellationToken;

use crate::config::ControlConfig;

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// TOML config file (see deploy/control.toml).
    #[arg(long, env = "MERIDIAN_CONTROL_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "MERIDIAN_CONTROL_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "MERIDIAN_CONTROL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A bootstrap admin API key (`mk_<id>_<secret>`); control keeps only its sha256.
    #[arg(long = "admin-key", env = "MERIDIAN_CONTROL_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// TOML config file (see deploy/node.toml).
    #[arg(long, env = "MERIDIAN_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "MERIDIAN_NODE_ID")]
    pub id: Option<String>,
    #[arg(long, env = "MERIDIAN_NODE_REGION")]
    pub region: Option<String>,
    #[arg(long, env = "MERIDIAN_NODE_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(long = "control-url", env = "MERIDIAN_NODE_CONTROL_URL")]
    pub control_url: Option<String>,
    #[arg(long, env = "MERIDIAN_NODE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Redis for the shared feature store (`redis://host:6379/0`); default: node-local sled.
    #[arg(long, env = "MERIDIAN_NODE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// This node's own API key (`auth.peer_key`): its reports to control need the `node` scope.
    #[arg(long, env = "MERIDIAN_NODE_PEER_KEY", hide_env_values = true)]
    pub peer_key: Option<String>,
    /// UDP address of the mesh endpoint (joins the mesh; see `[mesh]` in deploy/node.toml).
    #[arg(long, env = "MERIDIAN_NODE_MESH_LISTEN")]
    pub mesh_listen: Option<SocketAddr>,
    /// The address peers reach the mesh endpoint at (e.g. the pod IP and port).
    #[arg(long, env = "MERIDIAN_NODE_MESH_ADVERTISE")]
    pub mesh_advertise: Option<SocketAddr>,
    /// Seeds to join through, `host:port`, comma-separated.
    #[arg(long, env = "MERIDIAN_NODE_MESH_SEEDS", value_delimiter = ',')]
    pub mesh_seeds: Vec<String>,
}

/// The config file parsed by `parse`, or the defaults without one; flags and env apply after.
fn load<T: Default>(path: Option<&PathBuf>, parse: fn(&str) -> Result<T, String>) -> anyhow::Result<T> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).map_err(anyhow::Error::msg).with_context(|| format!("in {}", path.display()))
}

/// Cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    t.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        t.cancel();
    });
    token
}

pub async fn control(args: ControlArgs) -> anyhow::Result<()> {
    let mut config = load(args.config.as_ref(), ControlConfig::from_toml)?;
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(key) = args.admin_key {
        anyhow::ensure!(
            meridian_gossip::keys::key_id(key.trim()).is_some(),
            "MERIDIAN_CONTROL_ADMIN_KEY is not an API key (mk_<id>_<secret>)"
        );
        config.auth.admin_key_sha256 = Some(crate::api::auth::admin_key_sha256(&key));
    }
    let shutdown = shutdown_on_signal();
    let handle = crate::server::spawn(config, shutdown).await?;
    eprintln!("control listening on {}", handle.url());
    handle.task.await??;
    Ok(())
}

pub async fn node(args: NodeArgs) -> anyhow::Result<()> {
    let mut config = load(args.config.as_ref(), NodeConfig::from_toml)?;
    if let Some(v) = args.id {
        config.id = v;
    }
    if let Some(v) = args.region {
        config.region = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if args.control_url.is_some() {
        config.control_url = args.control_url;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if args.peer_key.is_some() {
        config.auth.peer_key = args.peer_key;
    }
    if args.redis_url.is_some() {
        config.features.redis_url = args.redis_url;
    }
    if args.mesh_listen.is_some() {
        config.mesh.listen = args.mesh_listen;
    }
    if args.mesh_advertise.is_some() {
        config.mesh.advertise = args.mesh_advertise;
    }
    if !args.mesh_seeds.is_empty() {
        config.mesh.seeds = args.mesh_seeds;
    }
    let shutdown = shutdown_on_signal();
    let handle = meridian_node::spawn(config, shutdown).await?;
    eprintln!("node listening on {}", handle.url());
    handle.task.await??;
    Ok(())
}
