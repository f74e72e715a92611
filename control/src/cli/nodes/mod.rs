//! `meridian nodes`: the mesh as one node sees it (`GET /api/v1/mesh/nodes` of `--node`, or of
//! a node control lists as up), `nodes drain ID` to take a node out of it, and `nodes directory`
//! for control's own list (nodes by their heartbeats). Does network I/O.
//!
//! - [`table`]: the tables of the mesh view and of control's directory.
//! - [`drain`]: drain a node, then follow it out of the mesh.

pub mod drain;
pub mod table;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use meridian_gossip::MeshView;

use super::client::{answered, http_client_trusting, Client};
use super::output::Output;

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// A node to ask for the mesh view (base URL); default: a node control lists as up.
    #[arg(long, env = "MERIDIAN_NODE", global = true)]
    pub node: Option<String>,
    /// PEM file of the CA that signed the nodes' certificates, for HTTPS.
    #[arg(long, env = "MERIDIAN_CA", global = true)]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<NodesCommand>,
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Drain a node: it takes no new predictions (503), publishes `draining` and leaves the
    /// mesh; wait until another node sees it down.
    Drain {
        /// The node's id, as `meridian nodes` shows it.
        id: String,
        /// Seconds to wait for the node to leave the mesh.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// The nodes reporting to control (heartbeats): up or down, last seen, URL.
    Directory,
}

/// Bound on each request to a node.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(control: &Client, args: NodesArgs, out: &Output) -> anyhow::Result<()> {
    if let Some(NodesCommand::Directory) = args.command {
        return table::directory(control, out).await;
    }
    let http = http_client_trusting(control.api_key(), NODE_TIMEOUT, args.ca.as_deref())?;
    let mesh =
        Mesh { control, http, node: args.node.as_deref().map(|n| n.trim_end_matches('/').to_string()) };
    match args.command {
        Some(NodesCommand::Drain { id, wait }) => {
            drain::run(&mesh, &id, Duration::from_secs(wait), out).await
        }
        _ => {
            let view = mesh.view().await?;
            out.show(&view, || table::mesh(&view))
        }
    }
}

/// Where the mesh view comes from: `--node`, else the nodes control lists as up.
pub struct Mesh<'a> {
    control: &'a Client,
    /// Sends the API key; trusts `--ca`.
    http: reqwest::Client,
    node: Option<String>,
}

impl Mesh<'_> {
    /// The mesh view of `--node`, or of the first node control lists as up that answers
    /// (ready ones first). Nodes without a mesh list only themselves: then the views of every
    /// node control lists as up are joined, so the table still shows them all.
    pub async fn view(&self) -> anyhow::Result<MeshView> {
        if let Some(node) = &self.node {
            return view_of(&self.http, node).await;
        }
        let urls = self.up_nodes().await?;
        let mut failures = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            match view_of(&self.http, url).await {
                Ok(view) if view.mesh => return Ok(view),
                Ok(view) => {
                    let others = urls.iter().skip(i + 1).map(|u| view_of(&self.http, u));
                    let mut views = vec![view];
                    views.extend(
                        futures_util::future::join_all(others).await.into_iter().filter_map(Result::ok),
                    );
                    let nodes = meridian_node::client::failover::joined(&views);
                    return Ok(MeshView { nodes, ..views.swap_remove(0) });
                }
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        bail!("no node control lists as up answered: {}", failures.join("; "))
    }

    /// The HTTP client that sends the API key to nodes.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Base URLs of the nodes control lists as up, ready ones first.
    async fn up_nodes(&self) -> anyhow::Result<Vec<String>> {
        let mut nodes =
            self.control.nodes().await.context("asking control for a node (or give --node URL)")?;
        nodes.retain(|n| n.state == "up");
        nodes.sort_by(|a, b| {
            (!a.info.ready, &a.info.region, &a.info.id).cmp(&(!b.info.ready, &b.info.region, &b.info.id))
        });
        if nodes.is_empty() {
            bail!("control lists no node that is up; give --node URL");
        }
        Ok(nodes.into_iter().map(|n| n.info.http_url.trim_end_matches('/').to_string()).collect())
    }
}

/// `GET {base}/api/v1/mesh/nodes`.
pub async fn view_of(http: &reqwest::Client, base: &str) -> anyhow::Result<MeshView> {
    let resp = http
        .get(format!("{base}/api/v1/mesh/nodes"))
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {base}"))?;
    if !resp.status().is_success() {
        return Err(answered(resp, base).await);
    }
    resp.json().await.with_context(|| format!("the mesh view of {base}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::{Cli, Command};

    fn nodes(args: &[&str]) -> NodesArgs {
        let cli = Cli::try_parse_from([&["meridian", "nodes"], args].concat()).unwrap();
        let Command::Nodes(args) = cli.command else { panic!("not nodes: {:?}", cli.command) };
        args
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn nodes_alone_shows_the_mesh_and_takes_a_node_and_a_ca() {
        assert!(nodes(&[]).command.is_none());
        let args = nodes(&["--node", "https://n1:7071", "--ca", "ca.pem"]);
        assert_eq!(args.node.as_deref(), Some("https://n1:7071"));
        assert_eq!(args.ca, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn drain_takes_an_id_and_the_node_flags_after_it() {
        let args = nodes(&["drain", "us-east-1", "--node", "http://n1:7071", "--wait", "5"]);
        assert_eq!(args.node.as_deref(), Some("http://n1:7071"));
        assert!(matches!(args.command, Some(NodesCommand::Drain { ref id, wait: 5 }) if id == "us-east-1"));
        let args = nodes(&["drain", "us-east-1"]);
        assert!(matches!(args.command, Some(NodesCommand::Drain { wait: 30, .. })));
    }

    #[test]
    fn directory_is_control_s_view() {
        assert!(matches!(nodes(&["directory"]).command, Some(NodesCommand::Directory)));
    }
}
