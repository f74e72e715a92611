//! Spread jobs: one job split across the ready nodes of this node's region (as control's node
//! directory lists them; there is no gossip mesh yet). Each node, this one included, scores a
//! contiguous shard of the rows as an ordinary job that reads the input from this node; this
//! node then joins the shards' outputs in shard order, which is input order. Line numbers in
//! refusals are the input's own (every shard reads the whole file and scores its rows only).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::job::{JobRecord, JobState, Part, Refusal, MAX_LISTED_REFUSALS};
use super::runner::Stop;
use super::write::{OutputWriter, Scored};
use super::JobStatus;
use crate::node::NodeState;
use crate::serve::error::ApiError;

#[derive(Debug, Deserialize)]
struct Peer {
    id: String,
    region: String,
    http_url: String,
    ready: bool,
    state: String,
    models: Vec<PeerModel>,
}

#[derive(Debug, Deserialize)]
struct PeerModel {
    name: String,
    version: u32,
}

/// The client for control's directory and the peers; it sends `auth.peer_key` when set, as
/// peers with auth on need a `batch` credential for the shards.
fn client(state: &NodeState) -> Result<reqwest::Client, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &state.config.auth.peer_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| "auth.peer_key is not a valid header value".to_string())?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    state
        .config
        .http_client()
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())
}

/// Plan the shards of `job`: one per up, ready node of this region that has the job's model
/// version loaded, by node id. Sub-jobs are submitted when the job starts.
pub async fn split(state: &NodeState, job: &JobRecord) -> Result<Vec<Part>, ApiError> {
    let control = state.config.control_url.as_deref().ok_or_else(|| {
        ApiError::bad_request("spread needs control's node directory; this node has no control_url")
    })?;
    let url = format!("{}/api/v1/nodes", control.trim_end_matches('/'));
    let unavailable =
        |e: &dyn std::fmt::Display| ApiError::unavailable(format!("cannot list the nodes: {e}"));
    let client = client(state).map_err(|e| unavailable(&e))?;
    let resp = client.get(&url).send().await.map_err(|e| unavailable(&e))?;
    let peers: Vec<Peer> = resp.json().await.map_err(|e| unavailable(&e))?;
    let mut nodes: Vec<(String, String)> = peers
        .into_iter()
        .filter(|p| p.region == state.config.region && p.state == "up" && p.ready)
        .filter(|p| p.models.iter().any(|m| m.name == job.model && m.version == job.version))
        .map(|p| (p.id, p.http_url))
        .collect();
    nodes.sort();
    if nodes.is_empty() {
        return Err(ApiError::unavailable(format!(
            "no ready node of region {:?} has {} v{} loaded",
            state.config.region, job.model, job.version
        )));
    }
    let (start, total, n) = (job.rows.0, job.total_rows(), nodes.len() as u64);
    Ok(nodes
        .into_iter()
        .enumerate()
        .map(|(i, (node, url))| {
            let i = i as u64;
            let rows = (start + i * total / n, start + (i + 1) * total / n);
            Part { node, url, job: String::new(), rows }
        })
        .collect())
}

/// Run a spread job to the end: submit the shards not yet submitted, follow them, join them.
pub async fn coordinate(
    state: &Arc<NodeState>,
    mut job: JobRecord,
    token: &CancellationToken,
) -> Result<(), Stop> {
    let http = client(state).map_err(Stop::Failed)?;
    let followed = async {
        submit_parts(state, &http, &mut job).await?;
        follow(state, &http, &mut job, token).await
    }
    .await;
    match followed {
        Ok(statuses) => join(state, &http, job, statuses).await,
        Err(Stop::Shutdown) => Err(Stop::Shutdown),
        Err(stop) => {
            for part in job.parts.iter().filter(|p| !p.job.is_empty()) {
                let url = format!("{}/api/v1/batch/{}/cancel", part.url, part.job);
                let _ = http.post(url).send().await;
            }
            Err(stop)
        }
    }
}

async fn submit_parts(state: &NodeState, http: &reqwest::Client, job: &mut JobRecord) -> Result<(), Stop> {
    let input = format!("{}/api/v1/batch/{}/input", state.url, job.id);
    for i in 0..job.parts.len() {
        if !job.parts[i].job.is_empty() {
            continue;
        }
        let part = &job.parts[i];
        let body = json!({
            "model": job.model, "version": job.version, "input": input,
            "format": job.input_format, "output_format": "ndjson", "id_column": job.id_column,
            "first_row": part.rows.0, "end_row": part.rows.1,
        });
        let resp = http
            .post(format!("{}/api/v1/batch", part.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| Stop::Failed(format!("cannot submit the shard to node {}: {e}", part.node)))?;
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap_or_default();
        let Some(id) = answer["id"].as_str().filter(|_| status.is_success()) else {
            let why = answer["error"].as_str().unwrap_or("no job id in the answer").to_string();
            return Err(Stop::Failed(format!("node {} refused its shard ({status}): {why}", part.node)));
        };
        job.parts[i].job = id.to_string();
        state.batch.store.put(job)?;
    }
    Ok(())
}

/// Poll the shards until all are done; their final statuses.
async fn follow(
    state: &NodeState,
    http: &reqwest::Client,
    job: &mut JobRecord,
    token: &CancellationToken,
) -> Result<Vec<JobStatus>, Stop> {
    loop {
        let mut statuses = Vec::with_capacity(job.parts.len());
        for part in &job.parts {
            let url = format!("{}/api/v1/batch/{}", part.url, part.job);
            let got = async { http.get(&url).send().await?.error_for_status()?.json::<JobStatus>().await };
            match got.await {
                Ok(s) => statuses.push(s),
                // A node restarting: ask again next round.
                Err(e) => tracing::debug!(node = %part.node, error = %e, "shard status unavailable"),
            }
        }
        if let Some(s) =
            statuses.iter().find(|s| matches!(s.job.state, JobState::Failed | JobState::Cancelled))
        {
            let why = s.job.error.clone().unwrap_or_else(|| "cancelled".to_string());
            return Err(Stop::Failed(format!("the shard {} failed: {why}", s.job.id)));
        }
        if statuses.len() == job.parts.len() {
            job.rows_done = statuses.iter().map(|s| s.job.rows_done).sum();
            state.batch.store.put(job)?;
            if statuses.iter().all(|s| s.job.state == JobState::Done) {
                return Ok(statuses);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = token.cancelled() => return Err(if state.shutdown.is_cancelled() { Stop::Shutdown } else { Stop::Cancelled }),
        }
    }
}

/// Download the shards' outputs in order and write the job's output; count and list refusals.
async fn join(
    state: &NodeState,
    http: &reqwest::Client,
    mut job: JobRecord,
    statuses: Vec<JobStatus>,
) -> Result<(), Stop> {
    let mut shards = Vec::with_capacity(job.parts.len());
    for part in &job.parts {
        let url = format!("{}/api/v1/batch/{}/result", part.url, part.job);
        let fetched = async { http.get(&url).send().await?.error_for_status()?.bytes().await };
        let bytes = fetched
            .await
            .map_err(|e| Stop::Failed(format!("cannot fetch the shard of {}: {e}", part.node)))?;
        shards.push(bytes);
    }
    let (mut scored, mut refused) = (0, 0);
    let mut refusals: Vec<Refusal> = Vec::new();
    for s in &statuses {
        scored += s.job.rows_scored;
        refused += s.job.rows_refused;
        refusals.extend(s.job.refusals.iter().cloned());
    }
    refusals.truncate(MAX_LISTED_REFUSALS);
    let written = job.clone();
    let id_column = job.id_column.clone();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let fail =
            |e: &dyn std::fmt::Display| format!("cannot write the output {}: {e}", written.output.display());
        let mut writer =
            OutputWriter::create(&written.output, written.output_format, &id_column, written.version)
                .map_err(|e| fail(&e))?;
        let mut index = 0;
        for shard in &shards {
            for line in shard.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: Value = serde_json::from_slice(line).map_err(|e| fail(&e))?;
                let row = Scored {
                    index,
                    id: v[id_column.as_str()].as_str().map(str::to_string),
                    prediction: v["prediction"].as_f64().unwrap_or(f64::NAN),
                    confidence: v["confidence"].as_f64(),
                };
                writer.write(&row).map_err(|e| fail(&e))?;
                index += 1;
            }
        }
        writer.finish().map_err(|e| fail(&e))
    })
    .await
    .map_err(|e| Stop::Failed(e.to_string()))?
    .map_err(Stop::Failed)?;
    job.rows_done = job.total_rows();
    job.rows_scored = scored;
    job.rows_refused = refused;
    job.refusals = refusals;
    job.chunks_done = job.chunks();
    state.batch.store.put(&job)?;
    Ok(())
}
