//! `meridian predict`: one row from flags, or a CSV / NDJSON file sent in batches.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{Map, Value};

use super::output::{progress, table, Output};

#[derive(Debug, Args)]
pub struct PredictArgs {
    pub model: String,
    /// Base URL of a node.
    #[arg(long, env = "MERIDIAN_NODE", default_value = "http://127.0.0.1:7071")]
    pub node: String,
    /// One row as a JSON object of features.
    #[arg(long, conflicts_with_all = ["feature", "file"])]
    pub features: Option<String>,
    /// One feature as name=value; repeat for each.
    #[arg(short = 'f', long = "feature", conflicts_with = "file")]
    pub feature: Vec<String>,
    /// A CSV (with a header row) or NDJSON file of rows; predictions are printed as NDJSON.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Rows per request when reading a file.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let resp = http.post(url).json(body).send().await.with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let value: Value = resp.json().await.context("the node's answer is not JSON")?;
    if !status.is_success() {
        bail!("{status}: {}", value["error"].as_str().unwrap_or("(no message)"));
    }
    Ok(value)
}

fn row_from_flags(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut row = Map::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').with_context(|| format!("{pair:?} is not name=value"))?;
        let v: f64 = v.trim().parse().with_context(|| format!("feature {k:?}: {v:?} is not a number"))?;
        row.insert(k.trim().to_string(), Value::from(v));
    }
    Ok(row)
}

/// Rows of a CSV (header row names the features) or NDJSON file.
fn read_rows(path: &PathBuf) -> anyhow::Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let mut rows = Vec::new();
    if is_csv {
        let (_, header) = lines.next().context("the CSV file is empty")?;
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        for (n, line) in lines {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != names.len() {
                bail!("line {}: {} cells, the header has {}", n + 1, cells.len(), names.len());
            }
            let mut row = Map::new();
            for (name, cell) in names.iter().zip(cells) {
                let v: f64 = cell
                    .parse()
                    .with_context(|| format!("line {}: {name} = {cell:?} is not a number", n + 1))?;
                row.insert((*name).to_string(), Value::from(v));
            }
            rows.push(row);
        }
    } else {
        for (n, line) in lines {
            let row: Map<String, Value> =
                serde_json::from_str(line).with_context(|| format!("line {}: not a JSON object", n + 1))?;
            rows.push(row);
        }
    }
    Ok(rows)
}

pub async fn run(args: PredictArgs, api_key: Option<&str>, out: &Output) -> anyhow::Result<()> {
    let http = super::client::http_client(api_key, Duration::from_secs(60))?;
    let url = format!("{}/api/v1/models/{}/predict", args.node.trim_end_matches('/'), args.model);
    if let Some(file) = &args.file {
        return predict_file(&http, &url, file, args.batch_size.max(1)).await;
    }
    let row = match &args.features {
        Some(json) => serde_json::from_str(json).context("--features must be a JSON object")?,
        None if !args.feature.is_empty() => row_from_flags(&args.feature)?,
        None => bail!("give the row with --features '{{...}}', -f name=value, or --file"),
    };
    let answer = post(&http, &url, &serde_json::json!({ "features": row })).await?;
    out.show(&answer, || {
        let mut t = table(&["prediction", "confidence", "model", "version", "served by", "latency ms"]);
        t.add_row(vec![
            answer["prediction"].to_string(),
            answer.get("confidence").map_or("-".to_string(), Value::to_string),
            answer["model"].as_str().unwrap_or_default().to_string(),
            answer["model_version"].to_string(),
            answer["served_by"].as_str().unwrap_or_default().to_string(),
            format!("{:.3}", answer["latency_ms"].as_f64().unwrap_or_default()),
        ]);
        t
    })
}

async fn predict_file(http: &reqwest::Client, url: &str, file: &PathBuf, batch: usize) -> anyhow::Result<()> {
    let rows = read_rows(file)?;
    let bar = progress(rows.len(), "rows", false);
    for (i, chunk) in rows.chunks(batch).enumerate() {
        let answer = post(http, url, &serde_json::json!({ "rows": chunk }))
            .await
            .with_context(|| format!("rows {}..{}", i * batch, i * batch + chunk.len()))?;
        let version = &answer["model_version"];
        for (j, p) in answer["predictions"].as_array().into_iter().flatten().enumerate() {
            let line = serde_json::json!({
                "row": i * batch + j,
                "prediction": p["prediction"],
                "confidence": p.get("confidence"),
                "model_version": version,
            });
            bar.suspend(|| say!("{line}"));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}
