//! Batch inference jobs: a file of rows in, a file of predictions out, checkpointed so a node
//! restart resumes a job where it stopped. I/O: files, the node's `batch.sled`, HTTP to peers.
//!
//! - [`format`]: file formats and how input columns map to a model's features (pure).
//! - [`read`], [`write`]: CSV / NDJSON / Parquet rows in, scored rows out (blocking).
//! - [`job`]: the job record and its chunk arithmetic (pure).
//! - [`store`]: checkpoints in sled: a chunk's output and the record counting it, atomically.
//! - [`runner`]: runs one job: a reader thread parses and assembles chunks, the model's
//!   low-priority lane scores them, each chunk is checkpointed, then the output is written.
//! - [`spread`]: a job split across the nodes of a region, outputs joined in input order.
//! - [`http`]: `/api/v1/batch` endpoints.
//!
//! Backpressure: at most `max_running` jobs score at once (the rest wait, `queued`), at most
//! `max_jobs` unfinished jobs exist (more are refused with 429), a job has at most two chunks
//! parsed ahead and a few model calls queued on the model's low-priority lane. The lane's
//! thread and the job's reader thread run at a lowered CPU priority, below real-time serving.

pub mod format;
pub mod http;
pub mod job;
pub mod paths;
pub mod read;
pub mod runner;
pub mod spread;
pub mod store;
pub mod write;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use job::{JobRecord, JobState};
use store::{JobStore, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Largest uploaded (or downloaded) input file.
    pub max_upload_bytes: u64,
    /// Rows per checkpoint: a restarted job redoes at most this many rows' work.
    pub checkpoint_rows: u64,
    /// Rows per model call on the low-priority lane (the lane's own thread; ~1.6 ms for 1,024
    /// rows of the MLP on tract).
    pub model_rows: usize,
    /// Jobs scoring at once; others wait in `queued`.
    pub max_running: usize,
    /// Unfinished jobs (queued or running) a node keeps; more are refused with 429.
    pub max_jobs: usize,
    /// Directories under which a submission may name input and output files on the node's
    /// disk; empty (the default): none, only uploads and http(s) inputs, results fetched.
    pub paths: Vec<std::path::PathBuf>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 1 << 30,
            checkpoint_rows: 16_384,
            model_rows: 1_024,
            max_running: 1,
            max_jobs: 100,
            paths: Vec::new(),
        }
    }
}

impl BatchConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (name, value) in [
            ("batch.max_upload_bytes", self.max_upload_bytes),
            ("batch.checkpoint_rows", self.checkpoint_rows),
            ("batch.model_rows", self.model_rows as u64),
            ("batch.max_running", self.max_running as u64),
            ("batch.max_jobs", self.max_jobs as u64),
        ] {
            if value == 0 {
                p.push(format!("{name} must be positive"));
            }
        }
        p
    }
}

/// A job with a task on this node: how to stop it and how fast it goes.
struct Live {
    token: CancellationToken,
    cancel_requested: bool,
    /// When scoring (re)started here, and the rows done then: for rows/s and the ETA.
    since: Option<(Instant, u64)>,
}

/// The node's batch jobs: the store, the running tasks and the limits (the per-key submission
/// rate is one of the auth layer's limits).
pub struct Batches {
    pub store: JobStore,
    /// Uploads and results: `<data_dir>/batch/<job id>/`.
    pub dir: PathBuf,
    running: Arc<Semaphore>,
    live: Mutex<HashMap<String, Live>>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batches")
    }
}

impl Batches {
    pub fn open(data_dir: &std::path::Path, config: &BatchConfig) -> Result<Self, StoreError> {
        let dir = data_dir.join("batch");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        Ok(Self {
            store: JobStore::open(&data_dir.join("batch.sled"))?,
            dir,
            running: Arc::new(Semaphore::new(config.max_running)),
            live: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Start the task of job `id` (new, or resumed after a restart).
    pub fn start(&self, state: &Arc<crate::node::NodeState>, id: &str) {
        let token = state.shutdown.child_token();
        self.lock()
            .insert(id.to_string(), Live { token: token.clone(), cancel_requested: false, since: None });
        self.tasks.spawn(runner::run(state.clone(), id.to_string(), token));
    }

    /// Start every job a previous run left queued or running.
    pub fn resume_all(&self, state: &Arc<crate::node::NodeState>) -> Result<(), StoreError> {
        for job in self.store.all()? {
            if !job.state.finished() {
                tracing::info!(job = %job.id, chunks_done = job.chunks_done, "resuming batch job");
                self.start(state, &job.id);
            }
        }
        Ok(())
    }

    /// Ask job `id` to stop and be cancelled; false when it has no task here.
    pub fn request_cancel(&self, id: &str) -> bool {
        match self.lock().get_mut(id) {
            Some(live) => {
                live.cancel_requested = true;
                live.token.cancel();
                true
            }
            None => false,
        }
    }

    fn cancel_requested(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|l| l.cancel_requested)
    }

    fn scoring_from(&self, id: &str, rows_done: u64) {
        if let Some(live) = self.lock().get_mut(id) {
            live.since = Some((Instant::now(), rows_done));
        }
    }

    fn ended(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Rows per second since scoring (re)started here, for a job with a task.
    pub fn rate(&self, job: &JobRecord) -> Option<f64> {
        let (since, rows_then) = self.lock().get(&job.id)?.since?;
        let secs = since.elapsed().as_secs_f64();
        (secs > 0.0).then(|| job.rows_done.saturating_sub(rows_then) as f64 / secs)
    }

    /// Unfinished jobs.
    pub fn unfinished(&self) -> Result<usize, StoreError> {
        Ok(self.store.all()?.iter().filter(|j| !j.state.finished()).count())
    }

    /// Wait for every job task to stop (the node is shutting down: they stop at once and
    /// resume at the next start).
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Record the end of `job` (done or cancelled) and free what it no longer needs: its
    /// checkpoint (in the same transaction as the record), its uploaded input, and for a
    /// cancelled job its files. Files go first for a cancelled job, so a job reported cancelled
    /// holds nothing; the checkpoint goes with the record, so a done job never resumes without it.
    fn end(&self, job: &JobRecord) {
        let cancelled = job.state == JobState::Cancelled;
        if cancelled {
            self.remove_files(job, true);
        }
        if let Err(e) = self.store.finish(job) {
            tracing::error!(job = %job.id, error = %e, "cannot record the end of a batch job");
        }
        if !cancelled {
            self.remove_files(job, false);
        }
    }

    fn remove_files(&self, job: &JobRecord, result: bool) {
        if job.uploaded {
            let _ = std::fs::remove_file(&job.input);
        }
        if result {
            if job.output.starts_with(&self.dir) {
                let _ = std::fs::remove_file(&job.output);
            }
            let _ = std::fs::remove_dir(self.job_dir(&job.id));
        }
    }
}

/// A job's status as the API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    #[serde(flatten)]
    pub job: JobRecord,
    pub total_rows: u64,
    /// Rows per second since scoring (re)started on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<f64>,
}

impl JobStatus {
    pub fn of(batches: &Batches, job: JobRecord) -> Self {
        let rate = if job.state == JobState::Running { batches.rate(&job) } else { None };
        let left = job.total_rows().saturating_sub(job.rows_done) as f64;
        let eta = rate.filter(|r| *r > 0.0).map(|r| left / r);
        Self { total_rows: job.total_rows(), rows_per_sec: rate, eta_secs: eta, job }
    }
}
