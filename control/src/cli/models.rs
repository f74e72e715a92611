//! `meridian models push|list|show|deploy|rollback|archive`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use meridian_gossip::Catalog;
use meridian_models::ModelSpec;

use super::client::Client;
use super::output::{table, Output};
use crate::registry::ModelRecord;

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Push an ONNX artifact with its feature spec; it is validated before it is stored.
    Push {
        /// The ONNX file.
        artifact: PathBuf,
        /// The feature spec (TOML or JSON); default: model.toml beside the artifact.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Model name; default: the spec's `name`.
        #[arg(long)]
        name: Option<String>,
        /// Deploy the pushed version at once.
        #[arg(long)]
        deploy: bool,
    },
    /// List models with their latest and live versions.
    List,
    /// Show every version of a model.
    Show { name: String },
    /// Make a version live (default: the latest that is not archived).
    Deploy {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Make the previously deployed version live again.
    Rollback { name: String },
    /// Retire a version that is not live.
    Archive { name: String, version: u32 },
    /// Choose where a model is loaded: every region (default), some regions, or on demand.
    /// Nodes that do not load it forward its requests to the nearest node that does.
    Place {
        name: String,
        /// Load it only on nodes in these regions (comma-separated).
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["all", "on_demand"])]
        regions: Vec<String>,
        /// Load it on every node.
        #[arg(long, conflicts_with = "on_demand")]
        all: bool,
        /// Load it on a node at its first request that no other node can serve.
        #[arg(long)]
        on_demand: bool,
    },
}

pub async fn run(client: &Client, cmd: ModelsCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::Push { artifact, spec, name, deploy } => {
            push(client, artifact, spec, name, deploy, out).await
        }
        ModelsCommand::List => {
            let models = client.list().await?;
            out.show(&models, || {
                let mut t = table(&["model", "versions", "latest", "live", "description"]);
                for m in &models {
                    let live = m["live"].as_u64().map_or("-".to_string(), |v| format!("v{v}"));
                    t.add_row(vec![
                        m["name"].as_str().unwrap_or_default().to_string(),
                        m["versions"].to_string(),
                        format!("v{}", m["latest"]),
                        live,
                        m["description"].as_str().unwrap_or_default().to_string(),
                    ]);
                }
                t
            })
        }
        ModelsCommand::Show { name } => {
            let versions = client.show(&name).await?;
            let nodes = client.nodes().await.unwrap_or_default();
            if out.json {
                let placements = placements(&name, &nodes);
                return out
                    .show(&serde_json::json!({ "versions": versions, "nodes": placements }), || table(&[]));
            }
            out.show(&versions, || versions_table(&versions))?;
            if let Some(last) = versions.last() {
                say!("{}", features_table(&last.spec));
                say!("output: {}", serde_json::to_string(&last.spec.output)?);
            }
            say!("{}", placements_table(&name, &nodes));
            Ok(())
        }
        ModelsCommand::Deploy { name, version } => {
            catalog_change(&name, client.deploy(&name, version).await?, out)
        }
        ModelsCommand::Rollback { name } => catalog_change(&name, client.rollback(&name).await?, out),
        ModelsCommand::Place { name, regions, all, on_demand } => {
            let placement = match (regions.is_empty(), all, on_demand) {
                (false, _, _) => {
                    meridian_gossip::Placement::Regions { regions: regions.into_iter().collect() }
                }
                (true, _, true) => meridian_gossip::Placement::OnDemand,
                (true, true, false) => meridian_gossip::Placement::All,
                (true, false, false) => anyhow::bail!("say where: --regions a,b, --all or --on-demand"),
            };
            let catalog = client.place(&name, &placement).await?;
            if !out.json {
                say!("{name}: loaded in {} (catalog epoch {})", placement.describe(), catalog.epoch);
            }
            // A misspelt region loads the model nowhere: say so. Control knows the regions of the
            // nodes that report to it (mesh-only nodes do not), so this warns, never refuses.
            if let meridian_gossip::Placement::Regions { regions } = &placement {
                let known: std::collections::BTreeSet<String> = client
                    .nodes()
                    .await
                    .map(|n| n.into_iter().map(|n| n.info.region).collect())
                    .unwrap_or_default();
                let unknown: Vec<&String> = regions.iter().filter(|r| !known.contains(*r)).collect();
                if !known.is_empty() && !unknown.is_empty() {
                    eprintln!(
                        "warning: no node reporting to control is in {unknown:?} (regions reporting: {known:?}); \
                         if no mesh node is there either, {name} is loaded nowhere and every request for it fails"
                    );
                }
            }
            catalog_change(&name, catalog, out)
        }
        ModelsCommand::Archive { name, version } => {
            client.archive(&name, version).await?;
            let versions = client.show(&name).await?;
            out.show(&versions, || versions_table(&versions))
        }
    }
}

/// Where each version of `model` is loaded: node, region, version, runtime and why.
fn placements(model: &str, nodes: &[crate::directory::NodeStatus]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for n in nodes {
        for m in n.info.models.iter().filter(|m| m.name == model) {
            out.push(serde_json::json!({
                "node": n.info.id, "region": n.info.region, "state": n.state, "version": m.version,
                "live": m.live, "runtime": m.runtime, "runtime_reason": m.runtime_reason,
            }));
        }
    }
    out
}

fn placements_table(model: &str, nodes: &[crate::directory::NodeStatus]) -> comfy_table::Table {
    let mut t = table(&["node", "region", "state", "version", "runtime", "why"]);
    for p in placements(model, nodes) {
        let text = |k: &str| p[k].as_str().unwrap_or_default().to_string();
        let live = if p["live"].as_bool().unwrap_or(false) { " (live)" } else { "" };
        t.add_row(vec![
            text("node"),
            text("region"),
            text("state"),
            format!("v{}{live}", p["version"]),
            text("runtime"),
            text("runtime_reason"),
        ]);
    }
    t
}

/// The latest version's inputs: where each feature comes from and how it is transformed.
fn features_table(spec: &ModelSpec) -> comfy_table::Table {
    let mut t = table(&["#", "feature", "source", "transforms", "default"]);
    for (i, f) in spec.features.iter().enumerate() {
        let source = f.view.as_ref().map_or("request".to_string(), |v| format!("request, else view {v}"));
        let transforms: Vec<String> =
            f.transforms.iter().map(|t| serde_json::to_string(t).unwrap_or_default()).collect();
        let default = f.default.as_ref().map_or("-".to_string(), ToString::to_string);
        t.add_row(vec![i.to_string(), f.name.clone(), source, transforms.join(" → "), default]);
    }
    t
}

fn versions_table(versions: &[ModelRecord]) -> comfy_table::Table {
    let mut t = table(&["version", "status", "digest", "size", "accuracy", "input", "created", "by"]);
    for r in versions {
        let input =
            r.signature.inputs.first().map(|i| format!("{} {:?}", i.name, i.v2_shape())).unwrap_or_default();
        t.add_row(vec![
            format!("v{}", r.version),
            r.status.to_string(),
            r.digest[..12].to_string(),
            format!("{} B", r.size_bytes),
            r.accuracy.map_or("-".to_string(), |a| format!("{a:.3}")),
            input,
            r.created_at.clone(),
            r.pushed_by.clone(),
        ]);
    }
    t
}

fn catalog_change(name: &str, catalog: Catalog, out: &Output) -> anyhow::Result<()> {
    let entry = catalog.models.get(name);
    out.show(&catalog, || {
        let mut t = table(&["model", "live", "previous", "catalog epoch"]);
        t.add_row(vec![
            name.to_string(),
            entry.map_or("-".to_string(), |e| format!("v{}", e.live.version)),
            entry.and_then(|e| e.previous.as_ref()).map_or("-".to_string(), |p| format!("v{}", p.version)),
            catalog.epoch.to_string(),
        ]);
        t
    })
}

async fn push(
    client: &Client,
    artifact: PathBuf,
    spec: Option<PathBuf>,
    name: Option<String>,
    deploy: bool,
    out: &Output,
) -> anyhow::Result<()> {
    let spec_path = spec.unwrap_or_else(|| artifact.with_file_name("model.toml"));
    let spec_text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("cannot read the feature spec {}", spec_path.display()))?;
    let mut parsed = ModelSpec::parse(&spec_text).with_context(|| format!("in {}", spec_path.display()))?;
    // --name wins over the spec's name: the same spec file can be pushed under another name.
    let name = name.or(parsed.name.take()).context("the spec has no `name`; pass --name")?;
    parsed.name = Some(name.clone());
    let spec_json = serde_json::to_string(&parsed)?;
    let bytes = std::fs::read(&artifact).with_context(|| format!("cannot read {}", artifact.display()))?;
    let progress = !out.json && std::io::stderr().is_terminal();
    let record = client.push(&name, spec_json, bytes, progress).await?;
    out.show(&record, || versions_table(std::slice::from_ref(&record)))?;
    if deploy {
        catalog_change(&name, client.deploy(&name, Some(record.version)).await?, out)?;
    }
    Ok(())
}
