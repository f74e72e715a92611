//! Job checkpoints in the node's `batch.sled` database: tree `jobs` (id → record, JSON) and
//! tree `chunks` (id, chunk number → that chunk's scored rows and refusals). A chunk and the
//! record that counts it are written in one transaction, so after a crash either both are there
//! or neither: a resumed job starts at `chunks_done` and never scores a row twice.

use std::path::Path;

use sled::Transactional;

use super::job::{ChunkOutput, JobRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the job database failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("a stored job is unreadable: {0}")]
    Decode(#[from] serde_json::Error),
}

#[derive(Clone)]
pub struct JobStore {
    db: sled::Db,
    jobs: sled::Tree,
    chunks: sled::Tree,
}

impl std::fmt::Debug for JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobStore")
    }
}

fn chunk_key(id: &str, k: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 9);
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key.extend_from_slice(&k.to_be_bytes());
    key
}

fn chunk_prefix(id: &str) -> Vec<u8> {
    let mut key = id.as_bytes().to_vec();
    key.push(0);
    key
}

fn transaction_error(e: sled::transaction::TransactionError<()>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        sled::transaction::TransactionError::Abort(()) => {
            StoreError::Sled(sled::Error::Unsupported("transaction aborted".into()))
        }
    }
}

impl JobStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::open(path)?;
        let jobs = db.open_tree("jobs")?;
        let chunks = db.open_tree("chunks")?;
        Ok(Self { db, jobs, chunks })
    }

    pub fn put(&self, job: &JobRecord) -> Result<(), StoreError> {
        self.jobs.insert(job.id.as_bytes(), serde_json::to_vec(job)?)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        match self.jobs.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every job, oldest first.
    pub fn all(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut jobs = Vec::new();
        for item in self.jobs.iter() {
            let (_, bytes) = item?;
            jobs.push(serde_json::from_slice::<JobRecord>(&bytes)?);
        }
        jobs.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then_with(|| a.id.cmp(&b.id)));
        Ok(jobs)
    }

    /// Store chunk `k`'s output and `job` (which already counts it) atomically, durably.
    pub fn commit_chunk(&self, job: &JobRecord, k: u64, output: &ChunkOutput) -> Result<(), StoreError> {
        let record = serde_json::to_vec(job)?;
        let chunk = serde_json::to_vec(output)?;
        let key = chunk_key(&job.id, k);
        (&self.jobs, &self.chunks)
            .transaction(|(jobs, chunks)| {
                chunks.insert(key.as_slice(), chunk.as_slice())?;
                jobs.insert(job.id.as_bytes(), record.as_slice())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(transaction_error)?;
        self.db.flush()?;
        Ok(())
    }

    /// The job's checkpointed chunks, in order.
    pub fn chunks(&self, id: &str) -> impl Iterator<Item = Result<(u64, ChunkOutput), StoreError>> {
        let prefix = chunk_prefix(id);
        self.chunks.scan_prefix(prefix.clone()).map(move |item| {
            let (key, bytes) = item?;
            let mut k = [0u8; 8];
            k.copy_from_slice(key.get(prefix.len()..).unwrap_or_default().get(..8).unwrap_or(&[0; 8]));
            Ok((u64::from_be_bytes(k), serde_json::from_slice(&bytes)?))
        })
    }

    /// Store the finished `job` and drop its checkpointed chunks, in one transaction.
    pub fn finish(&self, job: &JobRecord) -> Result<(), StoreError> {
        let record = serde_json::to_vec(job)?;
        let keys: Vec<sled::IVec> =
            self.chunks.scan_prefix(chunk_prefix(&job.id)).keys().collect::<Result<_, _>>()?;
        (&self.jobs, &self.chunks)
            .transaction(|(jobs, chunks)| {
                for key in &keys {
                    chunks.remove(key)?;
                }
                jobs.insert(job.id.as_bytes(), record.as_slice())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(transaction_error)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn chunk_count(&self, id: &str) -> usize {
        self.chunks.scan_prefix(chunk_prefix(id)).count()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::batch::job::{record, Refusal};
    use crate::batch::write::Scored;

    fn chunk(first: u64, n: u64) -> ChunkOutput {
        ChunkOutput {
            scored: (first..first + n)
                .map(|index| Scored { index, id: None, prediction: index as f64, confidence: None })
                .collect(),
            refusals: vec![],
        }
    }

    #[test]
    fn checkpoints_survive_reopening_and_resume_where_they_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.sled");
        let mut job = record((0, 25), 10);
        {
            let store = JobStore::open(&path).unwrap();
            store.put(&job).unwrap();
            job.complete_chunk(0, 10, &[]);
            store.commit_chunk(&job, 0, &chunk(0, 10)).unwrap();
            let refused = [Refusal { line: 13, reason: "bad".into() }];
            job.complete_chunk(1, 9, &refused);
            let mut second = chunk(10, 9);
            second.refusals = refused.to_vec();
            store.commit_chunk(&job, 1, &second).unwrap();
        }
        let store = JobStore::open(&path).unwrap();
        let stored = store.get("j").unwrap().unwrap();
        assert_eq!(stored, job);
        assert_eq!(stored.chunks_done, 2, "resumes at chunk 2");
        let chunks: Vec<_> = store.chunks("j").map(Result::unwrap).collect();
        assert_eq!(chunks.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![0, 1]);
        let indexes: Vec<u64> = chunks.iter().flat_map(|(_, c)| c.scored.iter().map(|s| s.index)).collect();
        assert_eq!(indexes, (0..19).collect::<Vec<_>>());
        // Another job's chunks are not this job's.
        let mut other = record((0, 5), 10);
        other.id = "j2".into();
        store.commit_chunk(&other, 0, &chunk(0, 5)).unwrap();
        assert_eq!(store.chunk_count("j"), 2);
        job.state = crate::batch::job::JobState::Done;
        store.finish(&job).unwrap();
        assert_eq!((store.chunk_count("j"), store.chunk_count("j2")), (0, 1));
        assert_eq!(store.get("j").unwrap().unwrap().state, crate::batch::job::JobState::Done);
        assert_eq!(store.all().unwrap().len(), 2);
    }
}
