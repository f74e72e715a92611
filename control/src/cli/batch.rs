//! `meridian batch`: submit a file of rows to a node as a batch job, follow it with a progress
//! bar (rows done, rows/s, ETA), print its summary, download its output; list, cancel.

use meridian_node::client::segment;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use meridian_node::batch::format::Format;
use meridian_node::batch::JobStatus;
use serde_json::Value;

use super::output::{progress, table, Output};

#[derive(Debug, Args)]
pub struct NodeArg {
    /// Base URL of a node.
    #[arg(long, env = "MERIDIAN_NODE", default_value = "http://127.0.0.1:7071")]
    pub node: String,
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Submit FILE (CSV, NDJSON or Parquet) for scoring; with --output, wait and download.
    Submit(SubmitArgs),
    /// A job's state and summary; --watch follows it to the end.
    Status {
        id: String,
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        node: NodeArg,
    },
    /// Jobs on a node.
    List(NodeArg),
    /// Stop a job and free what it holds.
    Cancel {
        id: String,
        #[command(flatten)]
        node: NodeArg,
    },
    /// Save a done job's output to OUT.
    Download {
        id: String,
        out: PathBuf,
        #[command(flatten)]
        node: NodeArg,
    },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The input file (uploaded), or with --remote a path or http(s) URL the node reads.
    pub file: String,
    /// The model to score with.
    #[arg(long)]
    pub model: String,
    /// Its version (default: the live one); the job keeps it to the end.
    #[arg(long)]
    pub version: Option<u32>,
    /// Wait for the job and save its output here.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// The input's format when its name does not say (csv, ndjson, parquet).
    #[arg(long)]
    pub format: Option<String>,
    /// The output's format (default: the input's).
    #[arg(long)]
    pub output_format: Option<String>,
    /// The input column that identifies rows in the output.
    #[arg(long, default_value = "id")]
    pub id_column: String,
    /// Split the job across the ready nodes of the node's region.
    #[arg(long)]
    pub spread: bool,
    /// FILE is on the node (a path or URL it reads), not uploaded.
    #[arg(long)]
    pub remote: bool,
    /// Wait for the job to finish even without --output.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub node: NodeArg,
}

fn http(api_key: Option<&str>) -> anyhow::Result<reqwest::Client> {
    super::client::http_client(api_key, Duration::from_secs(3600))
}

fn base(node: &NodeArg) -> String {
    format!("{}/api/v1/batch", node.node.trim_end_matches('/'))
}

/// The answer as JSON, or the node's error message.
async fn answer<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(text);
        bail!("the node answered {status}: {message}");
    }
    resp.json().await.context("the node's answer is not what was expected")
}

async fn get_status(http: &reqwest::Client, node: &NodeArg, id: &str) -> anyhow::Result<JobStatus> {
    let url = format!("{}/{}", base(node), segment(id));
    answer(http.get(&url).send().await.with_context(|| format!("cannot reach {url}"))?).await
}

pub async fn run(cmd: BatchCommand, api_key: Option<&str>, out: &Output) -> anyhow::Result<()> {
    let http = http(api_key)?;
    match cmd {
        BatchCommand::Submit(args) => submit(&http, args, out).await,
        BatchCommand::Status { id, watch, node } => {
            let status = if watch {
                follow(&http, &node, &id, out).await?
            } else {
                get_status(&http, &node, &id).await?
            };
            summary(&status, out)
        }
        BatchCommand::List(node) => {
            let jobs: Vec<JobStatus> = answer(http.get(base(&node)).send().await?).await?;
            out.show(&jobs, || {
                let mut t = table(&["id", "model", "version", "state", "rows done", "scored", "refused"]);
                for j in &jobs {
                    let job = &j.job;
                    t.add_row(vec![
                        job.id.clone(),
                        job.model.clone(),
                        job.version.to_string(),
                        format!("{:?}", job.state).to_lowercase(),
                        format!("{}/{}", job.rows_done, j.total_rows),
                        job.rows_scored.to_string(),
                        job.rows_refused.to_string(),
                    ]);
                }
                t
            })
        }
        BatchCommand::Cancel { id, node } => {
            let status: JobStatus =
                answer(http.post(format!("{}/{}/cancel", base(&node), segment(&id))).send().await?).await?;
            summary(&status, out)
        }
        BatchCommand::Download { id, out: path, node } => download(&http, &node, &id, &path).await,
    }
}

async fn submit(http: &reqwest::Client, args: SubmitArgs, out: &Output) -> anyhow::Result<()> {
    if let Some(path) = &args.output {
        check_writable(path)?;
    }
    let url = base(&args.node);
    let mut query: Vec<(&str, String)> =
        vec![("model", args.model.clone()), ("id_column", args.id_column.clone())];
    for (k, v) in [
        ("version", args.version.map(|v| v.to_string())),
        ("format", args.format.clone()),
        ("output_format", args.output_format.clone()),
    ] {
        if let Some(v) = v {
            query.push((k, v));
        }
    }
    if args.spread {
        query.push(("spread", "true".into()));
    }
    let req = if args.remote {
        let mut body: serde_json::Map<String, Value> =
            query.iter().map(|(k, v)| ((*k).to_string(), Value::from(v.clone()))).collect();
        body.insert("input".into(), Value::from(args.file.clone()));
        body.insert("version".into(), serde_json::json!(args.version));
        body.insert("spread".into(), Value::from(args.spread));
        http.post(&url).json(&body)
    } else {
        let path = Path::new(&args.file);
        let format = args
            .format
            .as_deref()
            .and_then(Format::parse)
            .or_else(|| Format::of_path(path))
            .context("cannot tell the input's format from its name; pass --format csv|ndjson|parquet")?;
        let file =
            tokio::fs::File::open(path).await.with_context(|| format!("cannot read {}", path.display()))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        http.post(&url).query(&query).header("content-type", format.content_type()).body(body)
    };
    let status: JobStatus = answer(req.send().await.with_context(|| format!("cannot reach {url}"))?).await?;
    let id = status.job.id.clone();
    if args.output.is_none() && !args.wait {
        return out.show(&status, || {
            let mut t = table(&["job", "model", "version", "rows", "state"]);
            t.add_row(vec![
                id.clone(),
                status.job.model.clone(),
                status.job.version.to_string(),
                status.total_rows.to_string(),
                format!("{:?}", status.job.state).to_lowercase(),
            ]);
            t
        });
    }
    let status = follow(http, &args.node, &id, out).await?;
    summary(&status, out)?;
    if let (Some(path), meridian_node::batch::job::JobState::Done) = (&args.output, status.job.state) {
        download(http, &args.node, &id, path).await?;
    }
    Ok(())
}

/// `path` can be written (created now and removed if it did not exist).
fn check_writable(path: &Path) -> anyhow::Result<()> {
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Poll the job with a progress bar until it is finished.
async fn follow(http: &reqwest::Client, node: &NodeArg, id: &str, out: &Output) -> anyhow::Result<JobStatus> {
    let mut status = get_status(http, node, id).await?;
    let bar = progress(status.total_rows as usize, "rows", out.json);
    while !status.job.state.finished() {
        bar.set_position(status.job.rows_done);
        tokio::time::sleep(Duration::from_millis(250)).await;
        status = get_status(http, node, id).await?;
    }
    bar.set_position(status.job.rows_done);
    bar.finish_and_clear();
    Ok(status)
}

/// Rows scored and refused (with lines and reasons), or why the job stopped.
fn summary(status: &JobStatus, out: &Output) -> anyhow::Result<()> {
    if out.json {
        return out.show(status, || table(&[]));
    }
    let job = &status.job;
    let state = format!("{:?}", job.state).to_lowercase();
    say!("job {} ({} v{}): {state}", job.id, job.model, job.version);
    say!(
        "rows: {} of {} done, {} scored, {} refused",
        job.rows_done,
        status.total_rows,
        job.rows_scored,
        job.rows_refused
    );
    if let Some(rate) = status.rows_per_sec {
        say!("rate: {rate:.0} rows/s");
    }
    if let Some(error) = &job.error {
        say!("error: {error}");
    }
    const SHOWN: usize = 20;
    for r in job.refusals.iter().take(SHOWN) {
        say!("  line {}: {}", r.line, r.reason);
    }
    if job.rows_refused > SHOWN as u64 {
        say!(
            "  … {} more refused rows (--json lists up to {})",
            job.rows_refused - SHOWN as u64,
            job.refusals.len()
        );
    }
    Ok(())
}

async fn download(http: &reqwest::Client, node: &NodeArg, id: &str, path: &Path) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let url = format!("{}/{}/result", base(node), segment(id));
    let resp = http.get(&url).send().await.with_context(|| format!("cannot reach {url}"))?;
    if !resp.status().is_success() {
        return answer::<Value>(resp).await.map(|_| ());
    }
    let file =
        tokio::fs::File::create(path).await.with_context(|| format!("cannot write {}", path.display()))?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = resp.bytes_stream();
    let mut bytes = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the download broke off")?;
        bytes += chunk.len();
        file.write_all(&chunk).await.with_context(|| format!("cannot write {}", path.display()))?;
    }
    file.flush().await?;
    file.get_ref().sync_all().await?;
    say!("saved {} ({bytes} bytes)", path.display());
    Ok(())
}
