//! A batch job as it is stored and reported: what to score, where, and how far it got.
//! Plain data; the chunk arithmetic here is what makes resuming exact.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::format::Format;

/// Refusals listed in a job's summary; the count goes on beyond.
pub const MAX_LISTED_REFUSALS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// A row that was not scored: where it is and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub line: u64,
    pub reason: String,
}

/// A shard of a spread job scored by another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub node: String,
    pub url: String,
    pub job: String,
    pub rows: (u64, u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub model: String,
    pub version: u32,
    pub state: JobState,
    /// The input file on this node (an upload is kept in the node's data directory).
    pub input: PathBuf,
    pub input_format: Format,
    /// The input was uploaded (and is removed with the job).
    pub uploaded: bool,
    pub output: PathBuf,
    pub output_format: Format,
    pub id_column: String,
    /// The data rows `[start, end)` this job scores (all rows unless it is a shard).
    pub rows: (u64, u64),
    /// Rows per checkpoint.
    pub chunk_rows: u64,
    /// Chunks scored and checkpointed; the job resumes at the next.
    pub chunks_done: u64,
    pub rows_done: u64,
    pub rows_scored: u64,
    pub rows_refused: u64,
    /// The first [`MAX_LISTED_REFUSALS`] refused rows.
    pub refusals: Vec<Refusal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// For a spread job: the shards and the nodes scoring them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

impl JobRecord {
    pub fn total_rows(&self) -> u64 {
        self.rows.1.saturating_sub(self.rows.0)
    }

    /// Chunks the job has in all.
    pub fn chunks(&self) -> u64 {
        self.total_rows().div_ceil(self.chunk_rows.max(1))
    }

    /// The data rows `[start, end)` of chunk `k`.
    pub fn chunk_range(&self, k: u64) -> (u64, u64) {
        let start = self.rows.0.saturating_add(k.saturating_mul(self.chunk_rows));
        (start.min(self.rows.1), start.saturating_add(self.chunk_rows).min(self.rows.1))
    }

    /// Record chunk `k` as done (the caller stores the chunk's rows in the same transaction).
    pub fn complete_chunk(&mut self, k: u64, scored: u64, refusals: &[Refusal]) {
        let (start, end) = self.chunk_range(k);
        self.chunks_done = k + 1;
        self.rows_done += end - start;
        self.rows_scored += scored;
        self.rows_refused += refusals.len() as u64;
        let room = MAX_LISTED_REFUSALS.saturating_sub(self.refusals.len());
        self.refusals.extend(refusals.iter().take(room).cloned());
    }
}

/// What a chunk's checkpoint holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkOutput {
    pub scored: Vec<super::write::Scored>,
    pub refusals: Vec<Refusal>,
}

#[cfg(test)]
pub(crate) fn record(rows: (u64, u64), chunk_rows: u64) -> JobRecord {
    JobRecord {
        id: "j".into(),
        model: "m".into(),
        version: 1,
        state: JobState::Queued,
        input: PathBuf::from("/in.csv"),
        input_format: Format::Csv,
        uploaded: false,
        output: PathBuf::from("/out.csv"),
        output_format: Format::Csv,
        id_column: "id".into(),
        rows,
        chunk_rows,
        chunks_done: 0,
        rows_done: 0,
        rows_scored: 0,
        rows_refused: 0,
        refusals: vec![],
        error: None,
        created_ms: 0,
        finished_ms: None,
        parts: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_rows_once_and_in_order() {
        let job = record((10, 35), 10);
        assert_eq!(job.chunks(), 3);
        let ranges: Vec<_> = (0..job.chunks()).map(|k| job.chunk_range(k)).collect();
        assert_eq!(ranges, vec![(10, 20), (20, 30), (30, 35)]);
        assert_eq!(record((0, 0), 10).chunks(), 0);
    }

    #[test]
    fn completing_chunks_counts_rows_and_caps_the_listed_refusals() {
        let mut job = record((0, 25), 10);
        let many: Vec<Refusal> =
            (0..MAX_LISTED_REFUSALS as u64 + 5).map(|line| Refusal { line, reason: "x".into() }).collect();
        job.complete_chunk(0, 8, &many[..2]);
        job.complete_chunk(1, 0, &many);
        assert_eq!((job.chunks_done, job.rows_done, job.rows_scored), (2, 20, 8));
        assert_eq!(job.rows_refused, 2 + many.len() as u64);
        assert_eq!(job.refusals.len(), MAX_LISTED_REFUSALS);
        job.complete_chunk(2, 5, &[]);
        assert_eq!(job.rows_done, 25);
    }
}
