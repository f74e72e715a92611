//! `meridian predict`: one row from flags, or a CSV / NDJSON file sent in batches or as one
//! stream; over HTTP/1.1, HTTP/3 or the native QUIC protocol (the node client library). With
//! `--mesh` or several `--node`s, to the nearest node of the mesh that can answer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use meridian_node::client::{
    Answer, Client, ClientError, ClientOptions, MeshClient, MeshOptions, Prediction, Rows, Transport,
};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::output::{progress, table, Output};

#[derive(Debug, Args)]
pub struct PredictArgs {
    pub model: String,
    /// Base URL of a node. QUIC transports use the same host and port over UDP. Several,
    /// comma-separated, mean `--mesh` with these as seeds.
    #[arg(long, env = "MERIDIAN_NODE", default_value = "http://127.0.0.1:7071")]
    pub node: String,
    /// Call the mesh: learn its nodes from `--node`, send to the nearest (measured RTT) and
    /// move on to the next when one is unreachable, too slow or draining.
    #[arg(long)]
    pub mesh: bool,
    /// `http1`, `h3` (HTTP/3) or `native` (the QUIC protocol of docs/protocol.md).
    #[arg(long, default_value = "http1")]
    pub transport: Transport,
    /// PEM file of the CA that signed the node's certificate (`meridian up`: .meridian/up/certs/ca.pem).
    #[arg(long, env = "MERIDIAN_CA")]
    pub ca: Option<PathBuf>,
    /// One row as a JSON object of features.
    #[arg(long, conflicts_with_all = ["feature", "file"])]
    pub features: Option<String>,
    /// One feature as name=value; repeat for each.
    #[arg(short = 'f', long = "feature", conflicts_with = "file")]
    pub feature: Vec<String>,
    /// A CSV (with a header row) or NDJSON file of rows; predictions are printed as NDJSON.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Rows per request (or per stream chunk) when reading a file.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Send the file as one stream: predictions come back in order as they are computed.
    #[arg(long, requires = "file")]
    pub stream: bool,
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

/// One node, or the mesh with failover.
enum Target {
    Node(Client),
    Mesh(MeshClient),
}

impl Target {
    async fn connect(args: &PredictArgs, api_key: Option<&str>) -> anyhow::Result<Self> {
        let token = api_key.map(str::to_string);
        let seeds: Vec<String> =
            args.node.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
        if !args.mesh && seeds.len() <= 1 {
            let options = ClientOptions {
                url: args.node.clone(),
                transport: args.transport,
                ca: args.ca.clone(),
                token,
                timeout: Duration::from_secs(60),
                ..Default::default()
            };
            let client =
                Client::connect(options).await.with_context(|| format!("connecting to {}", args.node))?;
            return Ok(Self::Node(client));
        }
        if args.stream {
            bail!("--stream sends the file to one node: give one --node, without --mesh");
        }
        let options = MeshOptions {
            transport: args.transport,
            ca: args.ca.clone(),
            token,
            timeout: Duration::from_secs(30),
            ..MeshOptions::default()
        };
        let mesh = MeshClient::connect(seeds, options)
            .await
            .with_context(|| format!("asking {} for the mesh's nodes", args.node))?;
        Ok(Self::Mesh(mesh))
    }

    async fn predict(&self, model: &str, rows: Rows) -> Result<Answer, ClientError> {
        match self {
            Self::Node(client) => client.predict(model, rows).await,
            Self::Mesh(mesh) => mesh.predict(model, rows).await,
        }
    }
}

pub async fn run(args: PredictArgs, api_key: Option<&str>, out: &Output) -> anyhow::Result<()> {
    let target = Target::connect(&args, api_key).await?;
    if let Some(file) = &args.file {
        let rows = read_rows(file)?;
        let batch = args.batch_size.max(1);
        return match &target {
            Target::Node(client) if args.stream => stream_file(client, &args.model, rows, batch).await,
            _ => predict_file(&target, &args.model, rows, batch).await,
        };
    }
    let row = match &args.features {
        Some(json) => serde_json::from_str(json).context("--features must be a JSON object")?,
        None if !args.feature.is_empty() => row_from_flags(&args.feature)?,
        None => bail!("give the row with --features '{{...}}', -f name=value, or --file"),
    };
    let started = Instant::now();
    let answer = target.predict(&args.model, Rows::Json(vec![row])).await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let Some(p) = answer.predictions.first() else { bail!("the node answered no prediction") };
    let json = serde_json::json!({
        "prediction": p.prediction, "confidence": p.confidence, "model": answer.model,
        "model_version": answer.model_version, "served_by": answer.served_by, "latency_ms": ms,
        "transport": args.transport.to_string(),
    });
    out.show(&json, || {
        let mut t = table(&["prediction", "confidence", "model", "version", "served by", "round trip ms"]);
        t.add_row(vec![
            p.prediction.to_string(),
            p.confidence.map_or("-".to_string(), |c| c.to_string()),
            answer.model.clone(),
            answer.model_version.to_string(),
            answer.served_by.clone(),
            format!("{ms:.3}"),
        ]);
        t
    })
}

/// One NDJSON line per prediction, numbered from `first_row`; the version when it is known
/// (streams answer without it).
fn print_predictions(
    bar: &indicatif::ProgressBar,
    first_row: usize,
    predictions: &[Prediction],
    version: Option<u32>,
) {
    for (j, p) in predictions.iter().enumerate() {
        let mut line = serde_json::json!({ "row": first_row + j, "prediction": p.prediction, "confidence": p.confidence });
        if let Some(v) = version {
            line["model_version"] = v.into();
        }
        bar.suspend(|| say!("{line}"));
    }
}

/// The file in requests of `batch` rows; over the mesh, which nodes served how many rows (on
/// stderr at the end).
async fn predict_file(
    target: &Target,
    model: &str,
    rows: Vec<Map<String, Value>>,
    batch: usize,
) -> anyhow::Result<()> {
    let bar = progress(rows.len(), "rows", false);
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for (i, chunk) in rows.chunks(batch).enumerate() {
        let answer = target
            .predict(model, Rows::Json(chunk.to_vec()))
            .await
            .with_context(|| format!("rows {}..{}", i * batch, i * batch + chunk.len()))?;
        print_predictions(&bar, i * batch, &answer.predictions, Some(answer.model_version));
        *served.entry(answer.served_by).or_default() += chunk.len();
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if let Target::Mesh(_) = target {
        let by: Vec<String> = served.iter().map(|(node, n)| format!("{node} {n} rows")).collect();
        eprintln!("served by {}", by.join(", "));
    }
    Ok(())
}

/// The whole file on one stream; predictions printed as they arrive.
async fn stream_file(
    client: &Client,
    model: &str,
    rows: Vec<Map<String, Value>>,
    batch: usize,
) -> anyhow::Result<()> {
    let bar = progress(rows.len(), "rows", false);
    let (tx, rx) = mpsc::channel(8);
    let total = rows.len();
    tokio::spawn(async move {
        let mut rows = rows.into_iter();
        loop {
            let chunk: Vec<_> = rows.by_ref().take(batch).collect();
            if chunk.is_empty() || tx.send(Rows::Json(chunk)).await.is_err() {
                return;
            }
        }
    });
    let mut answers = client.stream(model, rx).await?;
    let mut done = 0;
    while let Some(item) = answers.recv().await {
        let predictions = item.with_context(|| format!("after {done} rows"))?;
        print_predictions(&bar, done, &predictions, None);
        done += predictions.len();
        bar.set_position(done as u64);
    }
    bar.finish_and_clear();
    anyhow::ensure!(done == total, "the stream ended after {done} of {total} rows");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn predict(args: &[&str]) -> super::PredictArgs {
        let cli = Cli::try_parse_from([&["meridian", "predict", "m"], args].concat()).unwrap();
        let Command::Predict(args) = cli.command else { panic!("not predict") };
        args
    }

    #[test]
    fn mesh_is_off_unless_asked() {
        assert!(!predict(&["--node", "http://a:7071"]).mesh);
        let args = predict(&["--mesh", "--node", "http://a:7071,http://b:7071"]);
        assert!(args.mesh);
        assert_eq!(args.node, "http://a:7071,http://b:7071");
    }
}
