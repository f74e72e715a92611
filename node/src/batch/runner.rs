//! Running one job. A reader thread parses each chunk of the input, looks up entities in the
//! feature store and assembles the rows (all the CPU work besides the model); the job's task
//! sends the assembled rows through the model's low-priority lane in calls of `model_rows`,
//! then checkpoints the chunk's output with the record that counts it. When every chunk is
//! done the output file is written from the checkpoint. Stops: cancel (the job is cancelled and
//! its files freed), node shutdown (left as is, resumed at the next start), failure (the
//! reason is recorded and the checkpoint is kept).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use meridian_models::features::{assemble_values, FeatureView};
use meridian_models::interpret::predictions;
use meridian_models::InputBatch;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::format::{Layout, Parsed, ParsedRow};
use super::job::{ChunkOutput, JobRecord, JobState, Refusal};
use super::write::{OutputWriter, Scored};
use crate::features::row::{unix_ms, StoredRow};
use crate::features::FeatureStore;
use crate::inference::table::Resolved;
use crate::inference::{LoadedModel, SubmitError};
use crate::node::NodeState;

/// Why a job's task stopped before the job was done.
#[derive(Debug)]
pub enum Stop {
    /// The node is shutting down: the job resumes at the next start.
    Shutdown,
    Cancelled,
    Failed(String),
}

fn stop_of(state: &NodeState) -> Stop {
    if state.shutdown.is_cancelled() {
        Stop::Shutdown
    } else {
        Stop::Cancelled
    }
}

impl From<super::store::StoreError> for Stop {
    fn from(e: super::store::StoreError) -> Self {
        Stop::Failed(e.to_string())
    }
}

/// The task of job `id`.
pub async fn run(state: Arc<NodeState>, id: String, token: CancellationToken) {
    let outcome = drive(&state, &id, &token).await;
    let batches = &state.batch;
    let stop = match outcome {
        Ok(()) => None,
        Err(Stop::Cancelled) | Err(Stop::Shutdown) if batches.cancel_requested(&id) => Some(Stop::Cancelled),
        Err(stop) => Some(stop),
    };
    if let Some(stop) = stop {
        let finished = match stop {
            Stop::Shutdown => None,
            Stop::Cancelled => Some((JobState::Cancelled, None)),
            Stop::Failed(reason) => Some((JobState::Failed, Some(reason))),
        };
        if let Some((to, error)) = finished {
            finish(&state, &id, to, error).await;
        }
    }
    batches.ended(&id);
}

/// Record the job's end; a cancelled job's files and checkpoint are freed.
async fn finish(state: &Arc<NodeState>, id: &str, to: JobState, error: Option<String>) {
    let batches = &state.batch;
    let Ok(Some(mut job)) = batches.store.get(id) else { return };
    if let Some(reason) = &error {
        tracing::warn!(job = %id, %reason, "batch job failed");
    }
    job.state = to;
    job.error = error;
    job.finished_ms = Some(unix_ms());
    if to == JobState::Failed {
        // The checkpoint stays: the reason may be fixed (disk space) and the rows are scored.
        if let Err(e) = batches.store.put(&job) {
            tracing::error!(job = %id, error = %e, "cannot record the end of a batch job");
        }
    } else {
        batches.end(&job);
    }
}

async fn drive(state: &Arc<NodeState>, id: &str, token: &CancellationToken) -> Result<(), Stop> {
    let batches = &state.batch;
    let permit = tokio::select! {
        permit = batches.running.clone().acquire_owned() => permit.map_err(|_| Stop::Shutdown)?,
        () = token.cancelled() => return Err(stop_of(state)),
    };
    let mut job = batches.store.get(id)?.ok_or_else(|| Stop::Failed("the job record is gone".into()))?;
    job.state = JobState::Running;
    batches.store.put(&job)?;
    if !job.parts.is_empty() {
        drop(permit);
        super::spread::coordinate(state, job, token).await?;
        finish(state, id, JobState::Done, None).await;
        return Ok(());
    }
    let model = wait_model(state, &job, token).await?;
    batches.scoring_from(id, job.rows_done);
    if job.chunks_done < job.chunks() {
        score(state, &model, &mut job, token).await?;
    }
    drop(permit);
    let store = batches.store.clone();
    let written = job.clone();
    let own = state.config.data_dir.join("batch");
    super::paths::recheck_output(&state.config.batch.paths, &own, &job.output).map_err(Stop::Failed)?;
    idle(move || write_output(&store, &written)).await?.map_err(Stop::Failed)?;
    finish(state, id, JobState::Done, None).await;
    Ok(())
}

/// The job's model version, once this node has it loaded (after a restart it loads first).
async fn wait_model(
    state: &NodeState,
    job: &JobRecord,
    token: &CancellationToken,
) -> Result<Arc<LoadedModel>, Stop> {
    loop {
        match state.table.load().resolve(&job.model, Some(job.version)) {
            Resolved::Model(m) => return Ok(m),
            Resolved::UnknownModel | Resolved::UnknownVersion { .. } => {
                return Err(Stop::Failed(format!(
                    "model {:?} version {} is no longer served by this node",
                    job.model, job.version
                )))
            }
            Resolved::NoCatalog | Resolved::NotLoaded(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = token.cancelled() => return Err(stop_of(state)),
        }
    }
}

/// Run `f` on a thread of its own at batch priority (serialising a checkpoint, writing the
/// output): batch CPU work stays below real-time serving, not only the reading and scoring.
async fn idle<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Stop> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("batch-io".to_string())
        .spawn(move || {
            crate::inference::priority::lower_current_thread();
            let _ = tx.send(f());
        })
        .map_err(|e| Stop::Failed(format!("cannot start a batch thread: {e}")))?;
    rx.await.map_err(|_| Stop::Failed("a batch thread ended without an answer".to_string()))
}

/// One chunk, read and assembled: the model's input for its good rows and the refused ones.
struct Prepared {
    k: u64,
    values: Vec<f32>,
    ok: Vec<(u64, Option<String>)>,
    refusals: Vec<Refusal>,
}

async fn score(
    state: &Arc<NodeState>,
    model: &Arc<LoadedModel>,
    job: &mut JobRecord,
    token: &CancellationToken,
) -> Result<(), Stop> {
    let (tx, mut rx) = mpsc::channel(2);
    let reader = Reader::new(state, model, job, token.clone())?;
    let handle = tokio::runtime::Handle::current();
    let (ended, reading) = tokio::sync::oneshot::channel::<()>();
    // Its own thread (not the blocking pool) so its priority can be lowered for it alone.
    std::thread::Builder::new()
        .name(format!("batch-{}", job.id))
        .spawn(move || {
            crate::inference::priority::lower_current_thread();
            reader.run(&handle, &tx);
            drop(ended);
        })
        .map_err(|e| Stop::Failed(format!("cannot start the reader thread: {e}")))?;
    let result = async {
        while job.chunks_done < job.chunks() {
            let prepared = tokio::select! {
                next = rx.recv() => match next {
                    Some(Ok(p)) => p,
                    Some(Err(reason)) => return Err(Stop::Failed(reason)),
                    None => return Err(stop_of(state)),
                },
                () = token.cancelled() => return Err(stop_of(state)),
            };
            let output = infer(state, model, prepared.values, prepared.ok, prepared.refusals, token).await?;
            job.complete_chunk(prepared.k, output.scored.len() as u64, &output.refusals);
            let (store, record, k) = (state.batch.store.clone(), job.clone(), prepared.k);
            idle(move || store.commit_chunk(&record, k, &output)).await??;
        }
        Ok(())
    }
    .await;
    drop(rx);
    let _ = reading.await;
    result
}

/// Score one chunk's good rows through the low-priority lane, a few calls in flight.
async fn infer(
    state: &NodeState,
    model: &LoadedModel,
    values: Vec<f32>,
    ok: Vec<(u64, Option<String>)>,
    refusals: Vec<Refusal>,
    token: &CancellationToken,
) -> Result<ChunkOutput, Stop> {
    let width = model.width();
    let per_call = state.config.batch.model_rows.max(1);
    let mut calls = values.chunks(per_call * width.max(1));
    let mut pending = VecDeque::new();
    let mut scored = Vec::with_capacity(ok.len());
    let mut rows = ok.into_iter();
    let failed = |e: &dyn std::fmt::Display| Stop::Failed(format!("the model failed: {e}"));
    loop {
        let next = if pending.len() < 2 { calls.next() } else { None };
        if let Some(slice) = next {
            let input =
                InputBatch::new(slice.len() / width.max(1), width, slice.to_vec()).map_err(|e| failed(&e))?;
            loop {
                match model.pool.submit_low(input.clone()) {
                    Ok(reply) => break pending.push_back(reply),
                    // Another job shares the lane: wait for room.
                    Err(SubmitError::QueueFull(_)) => tokio::time::sleep(Duration::from_millis(1)).await,
                    Err(e @ SubmitError::Closed) => return Err(failed(&e)),
                }
                if token.is_cancelled() {
                    return Err(stop_of(state));
                }
            }
            continue;
        }
        let Some(reply) = pending.pop_front() else { break };
        let computed = tokio::select! {
            r = reply => r.map_err(|e| failed(&e))?.map_err(|e| failed(&e))?,
            () = token.cancelled() => return Err(stop_of(state)),
        };
        let answers = predictions(&model.manifest.spec.output, &computed.out).map_err(|e| failed(&e))?;
        for (p, (index, id)) in answers.into_iter().zip(rows.by_ref()) {
            scored.push(Scored { index, id, prediction: p.prediction, confidence: p.confidence });
        }
    }
    Ok(ChunkOutput { scored, refusals })
}

/// The job's reader thread: parse, look up, assemble, chunk by chunk.
struct Reader {
    rows: super::read::Rows,
    job: JobRecord,
    model: Arc<LoadedModel>,
    /// For each view the model reads: the view and the index of its join key in the layout.
    views: Vec<(FeatureView, usize)>,
    features: Arc<FeatureStore>,
    token: CancellationToken,
}

impl Reader {
    fn new(
        state: &NodeState,
        model: &Arc<LoadedModel>,
        job: &JobRecord,
        token: CancellationToken,
    ) -> Result<Self, Stop> {
        if !job.uploaded {
            let batch = &state.config.batch;
            super::paths::recheck_input(&batch.paths, &job.input, batch.max_upload_bytes)
                .map_err(Stop::Failed)?;
        }
        let (layout, views) = layout_for(state, model, &job.id_column).map_err(Stop::Failed)?;
        // The layout lives in the row reader.
        let rows = super::read::open(&job.input, job.input_format, &layout).map_err(Stop::Failed)?;
        Ok(Self {
            rows,
            job: job.clone(),
            model: model.clone(),
            views,
            features: state.features.clone(),
            token,
        })
    }

    fn run(mut self, handle: &tokio::runtime::Handle, tx: &mpsc::Sender<Result<Prepared, String>>) {
        for k in self.job.chunks_done..self.job.chunks() {
            if self.token.is_cancelled() {
                return;
            }
            let prepared = self.chunk(k, handle);
            let failed = prepared.is_err();
            if tx.blocking_send(prepared).is_err() || failed {
                return;
            }
        }
    }

    fn chunk(&mut self, k: u64, handle: &tokio::runtime::Handle) -> Result<Prepared, String> {
        let (start, end) = self.job.chunk_range(k);
        let mut parsed = Vec::with_capacity((end - start) as usize);
        while parsed.len() < (end - start) as usize {
            let Some(item) = self.rows.next() else {
                return Err(format!("the input ended at row {} (expected {end}); was it changed?", start));
            };
            let item = item?;
            if item.index() >= start {
                parsed.push(item);
            }
        }
        let stored = if self.views.is_empty() {
            vec![Vec::new(); parsed.len()]
        } else {
            handle.block_on(self.lookups(&parsed))
        };
        let width = self.model.width();
        let features = &self.model.manifest.spec.features;
        let mut out =
            Prepared { k, values: Vec::with_capacity(parsed.len() * width), ok: vec![], refusals: vec![] };
        for (item, stored) in parsed.into_iter().zip(stored) {
            let row = match item {
                Parsed::Row(row) => row,
                Parsed::Bad { line, reason, .. } => {
                    out.refusals.push(Refusal { line, reason });
                    continue;
                }
            };
            let lookup = |view: &str, feature: &str| {
                let i = self.views.iter().position(|(v, _)| v.name == view)?;
                stored.get(i)?.as_ref()?.values.get(feature).cloned()
            };
            match assemble_values(features, width, &row.values, lookup) {
                Ok(assembled) => {
                    out.values.extend_from_slice(&assembled.values);
                    out.ok.push((row.index, row.id));
                }
                Err(e) => out.refusals.push(Refusal { line: row.line, reason: e.to_string() }),
            }
        }
        Ok(out)
    }

    /// Stored rows of each parsed row's entities, by view (in `self.views` order).
    async fn lookups(&self, parsed: &[Parsed]) -> Vec<Vec<Option<Arc<StoredRow>>>> {
        use futures_util::StreamExt;
        let wanted = |item: &Parsed| -> Vec<Option<(FeatureView, String)>> {
            let Parsed::Row(ParsedRow { entity, .. }) = item else { return vec![] };
            self.views.iter().map(|(v, key)| entity.get(*key)?.clone().map(|id| (v.clone(), id))).collect()
        };
        let features = &self.features;
        futures_util::stream::iter(parsed.iter().map(wanted))
            .map(|views| async move {
                let mut rows = Vec::with_capacity(views.len());
                for found in views {
                    rows.push(match found {
                        Some((view, id)) => features.get(&view, &id).await.row,
                        None => None,
                    });
                }
                rows
            })
            .buffered(64)
            .collect()
            .await
    }
}

/// How a job reads rows for `model`: its features and the join keys of the views it reads.
pub fn layout_for(
    state: &NodeState,
    model: &LoadedModel,
    id_column: &str,
) -> Result<(Layout, Vec<(FeatureView, usize)>), String> {
    let table = state.table.load();
    let mut keys: Vec<String> = Vec::new();
    let mut views = Vec::new();
    for name in model.manifest.spec.views() {
        let view = table
            .catalog
            .views
            .get(name)
            .cloned()
            .ok_or_else(|| format!("feature view {name:?} is not in this node's catalog yet"))?;
        let key = match keys.iter().position(|k| *k == view.entity) {
            Some(i) => i,
            None => {
                keys.push(view.entity.clone());
                keys.len() - 1
            }
        };
        views.push((view, key));
    }
    Ok((Layout::new(&model.manifest.spec, keys, id_column), views))
}

/// Write the output file from the checkpoint, in input order. The checkpoint stays whatever
/// happens here; a failure (disk full) leaves no partial regular file behind.
pub fn write_output(store: &super::store::JobStore, job: &JobRecord) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot write the output {}: {e}", job.output.display());
    let result = (|| -> Result<(), String> {
        let mut writer = OutputWriter::create(&job.output, job.output_format, &job.id_column, job.version)
            .map_err(|e| fail(&e))?;
        for chunk in store.chunks(&job.id) {
            let (_, chunk) = chunk.map_err(|e| fail(&e))?;
            for row in &chunk.scored {
                writer.write(row).map_err(|e| fail(&e))?;
            }
        }
        writer.finish().map_err(|e| fail(&e))
    })();
    if result.is_err() && std::fs::metadata(&job.output).is_ok_and(|m| m.is_file()) {
        let _ = std::fs::remove_file(&job.output);
    }
    result
}
