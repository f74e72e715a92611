//! `meridian features apply|views|put|get|ingest`.

use meridian_node::client::segment;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use meridian_models::features::FeatureView;
use serde::Deserialize;
use serde_json::Value;

use super::client::Client;
use super::output::{progress, table, Output};

#[derive(Debug, Subcommand)]
pub enum FeaturesCommand {
    /// Define or update feature views from a TOML file of `[[views]]` tables.
    Apply { file: PathBuf },
    /// List the feature views.
    Views,
    /// Write one entity's features: `--features '{"age": 42}'`.
    Put {
        view: String,
        entity: String,
        #[arg(long)]
        features: String,
        #[arg(long, env = "MERIDIAN_NODE", default_value = "http://127.0.0.1:7071")]
        node: String,
    },
    /// Read one entity's features as a node sees them.
    Get {
        view: String,
        entity: String,
        #[arg(long, env = "MERIDIAN_NODE", default_value = "http://127.0.0.1:7071")]
        node: String,
    },
    /// Bulk-load a CSV (header row) or NDJSON file into a view, with progress and a summary.
    Ingest {
        file: PathBuf,
        #[arg(long)]
        view: String,
        #[arg(long, env = "MERIDIAN_NODE", default_value = "http://127.0.0.1:7071")]
        node: String,
        /// Lines per request.
        #[arg(long, default_value_t = 20_000)]
        chunk: usize,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewsFile {
    views: Vec<FeatureView>,
}

/// Parse a views file (`[[views]]` tables) and check every view.
pub fn parse_views(text: &str) -> anyhow::Result<Vec<FeatureView>> {
    let parsed: ViewsFile = toml::from_str(text)?;
    for view in &parsed.views {
        let problems = view.problems();
        anyhow::ensure!(problems.is_empty(), "view {:?}: {}", view.name, problems.join("; "));
    }
    Ok(parsed.views)
}

fn http(api_key: Option<&str>) -> anyhow::Result<reqwest::Client> {
    super::client::http_client(api_key, Duration::from_secs(300))
}

async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let value: Value = resp.json().await.context("the node's answer is not JSON")?;
    if !status.is_success() {
        bail!("{status}: {}", value["error"].as_str().unwrap_or("(no message)"));
    }
    Ok(value)
}

pub async fn run(client: &Client, cmd: FeaturesCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        FeaturesCommand::Apply { file } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let parsed: ViewsFile =
                toml::from_str(&text).with_context(|| format!("in {}", file.display()))?;
            for view in &parsed.views {
                let catalog = client.put_view(view).await?;
                eprintln!("view {} applied (catalog epoch {})", view.name, catalog.epoch);
            }
            Ok(())
        }
        FeaturesCommand::Views => {
            let views = client.views().await?;
            out.show(&views, || {
                let mut t = table(&["view", "entity key", "features", "ttl", "description"]);
                for v in &views {
                    let mut features: Vec<String> = v
                        .features
                        .iter()
                        .take(4)
                        .map(|(k, ty)| format!("{k}: {ty:?}").to_lowercase())
                        .collect();
                    if v.features.len() > 4 {
                        features.push(format!("… ({} in all)", v.features.len()));
                    }
                    let row = vec![
                        v.name.clone(),
                        v.entity.clone(),
                        features.join(", "),
                        format!("{} s", v.ttl_secs),
                    ];
                    t.add_row([row, vec![v.description.clone()]].concat());
                }
                t
            })
        }
        FeaturesCommand::Put { view, entity, features, node } => {
            let features: Value =
                serde_json::from_str(&features).context("--features must be a JSON object")?;
            let url = format!(
                "{}/api/v1/features/{}/{}",
                node.trim_end_matches('/'),
                segment(&view),
                segment(&entity)
            );
            let value = answer(
                http(client.api_key())?
                    .put(url)
                    .json(&serde_json::json!({ "features": features }))
                    .send()
                    .await?,
            )
            .await?;
            out.show(&value, || {
                let mut t = table(&["written", "store"]);
                t.add_row(vec![value["written"].to_string(), value["store"].to_string()]);
                t
            })
        }
        FeaturesCommand::Get { view, entity, node } => {
            let url = format!(
                "{}/api/v1/features/{}/{}",
                node.trim_end_matches('/'),
                segment(&view),
                segment(&entity)
            );
            let value = answer(http(client.api_key())?.get(url).send().await?).await?;
            say!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        FeaturesCommand::Ingest { file, view, node, chunk } => {
            ingest(&file, &view, &node, chunk.max(1), client.api_key(), out).await
        }
    }
}

async fn ingest(
    file: &PathBuf,
    view: &str,
    node: &str,
    chunk: usize,
    api_key: Option<&str>,
    out: &Output,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let is_csv = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut lines: Vec<&str> = text.lines().collect();
    let header = if is_csv && !lines.is_empty() { Some(lines.remove(0)) } else { None };
    let bar = progress(lines.len(), "lines", out.json);
    let url = format!("{}/api/v1/features/{}/ingest", node.trim_end_matches('/'), segment(view));
    let http = http(api_key)?;
    let (mut written, mut refused_count, mut refused, mut store) = (0u64, 0u64, Vec::new(), String::new());
    for (i, part) in lines.chunks(chunk).enumerate() {
        // Line numbers in the answer count from the chunk's first line (1, or 2 after a header).
        let first_line = i * chunk + 1 + usize::from(header.is_some());
        let mut body = header.map(|h| format!("{h}\n")).unwrap_or_default();
        body.push_str(&part.join("\n"));
        let content_type = if is_csv { "text/csv" } else { "application/x-ndjson" };
        let resp = http.post(&url).header("content-type", content_type).body(body).send().await?;
        let value =
            answer(resp).await.with_context(|| format!("lines {first_line}..{}", first_line + part.len()))?;
        written += value["written"].as_u64().unwrap_or(0);
        refused_count += value["refused_count"].as_u64().unwrap_or(0);
        store = value["store"].as_str().unwrap_or_default().to_string();
        let offset = first_line - 1 - usize::from(header.is_some());
        for r in value["refused"].as_array().into_iter().flatten() {
            let line = r["line"].as_u64().unwrap_or(0) as usize + offset;
            refused.push(serde_json::json!({ "line": line, "error": r["error"] }));
        }
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();
    let summary = serde_json::json!({
        "view": view, "written": written, "refused_count": refused_count, "refused": refused, "store": store,
    });
    if refused.is_empty() && !out.json {
        say!("{written} rows written to {store}, none refused");
        return Ok(());
    }
    out.show(&summary, || {
        let mut t = table(&["line", "refused because"]);
        for r in refused.iter().take(50) {
            t.add_row(vec![r["line"].to_string(), r["error"].as_str().unwrap_or_default().to_string()]);
        }
        t
    })?;
    if !out.json {
        say!("{written} rows written to {store}, {refused_count} refused");
        if store == "sled" {
            say!("note: this node has no Redis; its sled store is local to it");
        }
    }
    Ok(())
}
