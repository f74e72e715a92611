//! `/api/v1/batch`: submit, list, status, cancel, result (and the input, for spread shards).
//!
//! Submit takes either an upload (the body is the file; parameters in the query string, the
//! format from `format=` or the `Content-Type`) or a JSON body naming the input (`"input"`: a
//! path on the node, `file://…`, or an `http(s)://` URL the node fetches). Everything a job
//! needs is checked before it is accepted: the model, a readable input, a writable output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::format::Format;
use super::job::{JobRecord, JobState};
use super::JobStatus;
use crate::auth::{Principal, Scope};
use crate::features::row::unix_ms;
use crate::serve::error::ApiError;
use crate::serve::AppState;

/// Largest JSON submission body (it names the input; it is not the input).
const MAX_SPEC_BYTES: usize = 64 << 10;

/// Submission parameters: the JSON body, or the query string of an upload.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitParams {
    pub model: Option<String>,
    pub version: Option<u32>,
    /// JSON form only: the input's path on the node, `file://` URL or `http(s)://` URL.
    pub input: Option<String>,
    /// `csv`, `ndjson` or `parquet`; by default from the file name or `Content-Type`.
    pub format: Option<String>,
    /// A path on the node to write the output to; by default the node keeps it for download.
    pub output: Option<String>,
    pub output_format: Option<String>,
    /// The input column copied to the output to identify rows (default `id`).
    pub id_column: Option<String>,
    /// Score only data rows `[first_row, end_row)` (a shard of a spread job).
    pub first_row: Option<u64>,
    pub end_row: Option<u64>,
    /// Split the job across the ready nodes of this node's region.
    pub spread: Option<bool>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, message)
}

fn over_limit(message: String, wait: Duration) -> ApiError {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u32;
    ApiError { retry_after: Some(secs), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message) }
}

pub async fn submit(
    State(state): State<AppState>,
    principal: Option<Extension<Arc<Principal>>>,
    headers: HeaderMap,
    query: Result<Query<SubmitParams>, QueryRejection>,
    body: Body,
) -> Result<(StatusCode, Json<JobStatus>), ApiError> {
    // The submission rate limit per key was taken by the auth layer (`limits.batch_per_minute`).
    let unfinished = state.batch.unfinished().map_err(|e| internal("the job database failed", e))?;
    if unfinished >= state.config.batch.max_jobs {
        let message = format!("{unfinished} batch jobs are queued or running here; the limit is reached");
        return Err(over_limit(message, Duration::from_secs(60)));
    }
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let json_form = content_type.starts_with("application/json");
    let (params, body) = if json_form {
        let bytes = axum::body::to_bytes(body, MAX_SPEC_BYTES).await.map_err(|_| {
            ApiError::too_large("a JSON submission names its input; upload files as the body")
        })?;
        (crate::serve::error::parse_json::<SubmitParams>(&bytes)?, None)
    } else {
        (query, Some(body))
    };
    let name = params.model.clone().ok_or_else(|| {
        ApiError::bad_request("name the model: \"model\" in the JSON body, or ?model=NAME with an upload")
    })?;
    // The auth layer checked the `batch` scope; the model is known only now.
    if let Some(Extension(principal)) = &principal {
        principal.allow(Scope::Batch, Some(&name)).map_err(ApiError::from)?;
    }
    let model = crate::serve::path::resolve(&state, &name, params.version)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = state.batch.job_dir(&id);
    std::fs::create_dir_all(&dir).map_err(|e| internal("cannot create the job directory", e))?;
    let accepted = accept(&state, &id, &params, content_type, body, &model).await;
    let job = match accepted {
        Ok(job) => job,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    tracing::info!(job = %id, model = %job.model, version = job.version, rows = job.total_rows(), "batch job accepted");
    state.batch.start(&state, &id);
    Ok((StatusCode::ACCEPTED, Json(JobStatus::of(&state.batch, job))))
}

/// Check and store everything the job needs; the job record, stored as queued.
async fn accept(
    state: &AppState,
    id: &str,
    params: &SubmitParams,
    content_type: &str,
    body: Option<Body>,
    model: &crate::inference::LoadedModel,
) -> Result<JobRecord, ApiError> {
    let dir = state.batch.job_dir(id);
    let named = |f: &Option<String>| -> Result<Option<Format>, ApiError> {
        f.as_deref()
            .map(|name| {
                Format::parse(name).ok_or_else(|| {
                    ApiError::bad_request(format!("format {name:?} is not one of csv, ndjson, parquet"))
                })
            })
            .transpose()
    };
    let (input, input_format, uploaded) = match body {
        Some(body) => {
            let format = named(&params.format)?
                .or_else(|| Format::of_content_type(content_type))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "say the upload's format: ?format=csv|ndjson|parquet or a Content-Type of text/csv, \
                     application/x-ndjson or application/vnd.apache.parquet",
                    )
                })?;
            let path = dir.join(format!("input.{}", format.extension()));
            save(body.into_data_stream(), &path, state.config.batch.max_upload_bytes).await?;
            (path, format, true)
        }
        None => source(state, params, &named(&params.format)?, &dir).await?,
    };
    let counted = input.clone();
    let total = tokio::task::spawn_blocking(move || super::read::count_rows(&counted, input_format))
        .await
        .map_err(|e| internal("counting rows failed", e))?
        .map_err(|e| ApiError::bad_request(format!("cannot read the input: {e}")))?;
    let output_format = named(&params.output_format)?.unwrap_or(input_format);
    let output = match &params.output {
        Some(path) => super::paths::output_file(&state.config.batch.paths, path, &input)?,
        None => dir.join(format!("output.{}", output_format.extension())),
    };
    let first = params.first_row.unwrap_or(0).min(total);
    let end = params.end_row.unwrap_or(total).clamp(first, total);
    let mut job = JobRecord {
        id: id.to_string(),
        model: model.manifest.name.clone(),
        version: model.manifest.version,
        state: JobState::Queued,
        input,
        input_format,
        uploaded,
        output,
        output_format,
        id_column: params.id_column.clone().unwrap_or_else(|| "id".to_string()),
        rows: (first, end),
        chunk_rows: state.config.batch.checkpoint_rows,
        chunks_done: 0,
        rows_done: 0,
        rows_scored: 0,
        rows_refused: 0,
        refusals: Vec::new(),
        error: None,
        created_ms: unix_ms(),
        finished_ms: None,
        parts: Vec::new(),
    };
    if params.spread == Some(true) {
        job.parts = super::spread::split(state, &job).await?;
    }
    state.batch.store.put(&job).map_err(|e| internal("the job database failed", e))?;
    Ok(job)
}

/// The input named by a JSON submission: a path on the node, or a URL fetched into `dir`.
async fn source(
    state: &AppState,
    params: &SubmitParams,
    format: &Option<Format>,
    dir: &Path,
) -> Result<(PathBuf, Format, bool), ApiError> {
    let input = params.input.as_deref().ok_or_else(|| {
        ApiError::bad_request("\"input\" must name the file: a path on the node, file://… or http(s)://…")
    })?;
    let by_name = |name: &str| {
        format.or_else(|| Format::of_path(Path::new(name))).ok_or_else(|| {
            ApiError::bad_request(format!(
                "cannot tell the format of {input:?} from its name; add \"format\": \"csv\"|\"ndjson\"|\"parquet\""
            ))
        })
    };
    if input.starts_with("http://") || input.starts_with("https://") {
        let url_path = input.split(['?', '#']).next().unwrap_or_default();
        let format = by_name(url_path)?;
        let path = dir.join(format!("input.{}", format.extension()));
        fetch(input, &path, state.config.batch.max_upload_bytes).await?;
        return Ok((path, format, true));
    }
    let path = input.strip_prefix("file://").unwrap_or(input);
    if path.contains("://") {
        return Err(ApiError::bad_request(format!(
            "input {input:?}: only node paths, file:// and http(s):// URLs are supported (no object stores yet)"
        )));
    }
    let format = by_name(input)?;
    let path =
        super::paths::input_file(&state.config.batch.paths, path, state.config.batch.max_upload_bytes)?;
    Ok((path, format, false))
}

/// Write a body stream to `path`, at most `limit` bytes.
async fn save<S, E>(mut stream: S, path: &Path, limit: u64) -> Result<u64, ApiError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let file = tokio::fs::File::create(path).await.map_err(|e| internal("cannot store the input", e))?;
    // Buffered: each write to a tokio file is a trip to the blocking pool.
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read the input: {e}")))?;
        n += chunk.len() as u64;
        if n > limit {
            return Err(ApiError::too_large(format!(
                "the input is larger than this node's batch.max_upload_bytes ({limit})"
            )));
        }
        file.write_all(&chunk).await.map_err(|e| internal("cannot store the input", e))?;
    }
    file.flush().await.map_err(|e| internal("cannot store the input", e))?;
    file.get_ref().sync_all().await.map_err(|e| internal("cannot store the input", e))?;
    Ok(n)
}

/// Fetch `url` into `path`.
async fn fetch(url: &str, path: &Path, limit: u64) -> Result<u64, ApiError> {
    let refuse =
        |e: &dyn std::fmt::Display| ApiError::bad_request(format!("cannot fetch the input {url}: {e}"));
    let client =
        reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().map_err(|e| refuse(&e))?;
    let resp = client.get(url).send().await.map_err(|e| refuse(&e))?;
    if !resp.status().is_success() {
        return Err(refuse(&resp.status()));
    }
    save(resp.bytes_stream().boxed(), path, limit).await
}

fn job_of(state: &AppState, id: &str) -> Result<JobRecord, ApiError> {
    state
        .batch
        .store
        .get(id)
        .map_err(|e| internal("the job database failed", e))?
        .ok_or_else(|| ApiError::not_found(format!("no batch job {id:?} on this node")))
}

pub async fn status(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<JobStatus>, ApiError> {
    let job = job_of(&state, &id)?;
    Ok(Json(JobStatus::of(&state.batch, job)))
}

/// Every job on the node, oldest first (refusals listed by `status` only).
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<JobStatus>>, ApiError> {
    let jobs = state.batch.store.all().map_err(|e| internal("the job database failed", e))?;
    Ok(Json(
        jobs.into_iter().map(|j| JobStatus::of(&state.batch, JobRecord { refusals: vec![], ..j })).collect(),
    ))
}

/// Stop the job and free its files; answers once it is cancelled (or after 10 s, still going).
pub async fn cancel(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<JobStatus>, ApiError> {
    let job = job_of(&state, &id)?;
    if job.state.finished() {
        return Err(conflict(format!("batch job {id} is already {:?}", job.state).to_lowercase()));
    }
    if !state.batch.request_cancel(&id) {
        // No task here (it could not be resumed): cancel the record directly.
        let job = JobRecord { state: JobState::Cancelled, finished_ms: Some(unix_ms()), ..job };
        state.batch.end(&job);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let job = job_of(&state, &id)?;
        if job.state.finished() || tokio::time::Instant::now() > deadline {
            return Ok(Json(JobStatus::of(&state.batch, job)));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn send_file(path: &Path, content_type: &'static str, name: String) -> Result<Response, ApiError> {
    let file = tokio::fs::File::open(path).await.map_err(|e| internal("cannot open the file", e))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 << 10));
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok(([(header::CONTENT_TYPE, content_type.to_string()), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response())
}

/// The output file of a done job.
pub async fn result(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let job = job_of(&state, &id)?;
    if job.state != JobState::Done {
        let state_name = format!("{:?}", job.state).to_lowercase();
        return Err(conflict(format!("batch job {id} is {state_name}; its result is ready once it is done")));
    }
    let name = format!("{id}.{}", job.output_format.extension());
    send_file(&job.output, job.output_format.content_type(), name).await
}

/// The input file of an unfinished job (spread shards on other nodes read it from here).
pub async fn input(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let job = job_of(&state, &id)?;
    if job.state.finished() {
        return Err(conflict(format!("batch job {id} is finished; its input is gone")));
    }
    let name = format!("input.{}", job.input_format.extension());
    send_file(&job.input, job.input_format.content_type(), name).await
}
