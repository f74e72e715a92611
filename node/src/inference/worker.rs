//! Worker threads behind a bounded queue. A worker takes the oldest job, adds whatever else is
//! waiting, and, when `max_queue_delay` allows, waits for more (the [`BatchPolicy`]), up to
//! `max_batch_rows` rows; it runs them as one batch and hands each job its rows. When the queue is full a submit fails at once: the
//! caller answers 429 rather than queueing without bound.
//!
//! A second, low-priority lane takes batch-job chunks ([`WorkerPool::submit_low`]). One more
//! thread serves it, at a lowered CPU priority (`SCHED_IDLE`): real-time workers never run batch
//! work, and when both want the CPU the scheduler favours real time. Callers keep chunks small
//! (~1,000 rows) and the lane is short ([`LOW_QUEUE_CAPACITY`]).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use meridian_models::{InputBatch, ModelError, OutputBatch, Runtime};
use tokio::sync::oneshot;

use super::batching::{BatchPolicy, Decision};

/// A job's rows of output and how long the runtime took for the batch it ran in.
#[derive(Debug)]
pub struct Computed {
    pub out: OutputBatch,
    pub compute: std::time::Duration,
}

pub type JobResult = Result<Computed, ModelError>;

/// Run `input` and time it.
fn timed(runtime: &dyn Runtime, input: &InputBatch) -> JobResult {
    let started = std::time::Instant::now();
    let out = runtime.run(input)?;
    Ok(Computed { out, compute: started.elapsed() })
}

struct Job {
    input: InputBatch,
    reply: oneshot::Sender<JobResult>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the model's queue is full ({0} requests waiting)")]
    QueueFull(usize),
    #[error("the model is being unloaded")]
    Closed,
}

/// The queue and threads of one loaded model version. Dropping it closes the queue; the
/// workers finish what is queued and exit.
pub struct WorkerPool {
    tx: Sender<Job>,
    capacity: usize,
    /// Batch-job chunks, served by the pool's own low-priority thread.
    low_tx: Sender<Job>,
}

/// Low-priority chunks waiting per model version (each is a bounded number of rows).
pub const LOW_QUEUE_CAPACITY: usize = 4;

#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    pub workers: usize,
    pub queue_capacity: usize,
    pub max_batch_rows: usize,
    /// How long a request may wait for others to batch with (zero: never waits).
    pub max_queue_delay: std::time::Duration,
}

impl WorkerPool {
    pub fn start(label: &str, runtime: Arc<dyn Runtime>, config: PoolConfig) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
        for i in 0..config.workers {
            let rx = rx.clone();
            let runtime = runtime.clone();
            let policy = BatchPolicy { max_rows: config.max_batch_rows, max_delay: config.max_queue_delay };
            std::thread::Builder::new()
                .name(format!("model-{label}-{i}"))
                .spawn(move || work(&rx, runtime.as_ref(), policy))?;
        }
        let (low_tx, low_rx) = crossbeam_channel::bounded::<Job>(LOW_QUEUE_CAPACITY);
        std::thread::Builder::new().name(format!("model-{label}-low")).spawn(move || {
            super::priority::lower_current_thread();
            // One chunk at a time; the thread ends when the pool is dropped.
            while let Ok(job) = low_rx.recv() {
                run_jobs(runtime.as_ref(), &mut vec![job]);
            }
        })?;
        Ok(Self { tx, capacity: config.queue_capacity, low_tx })
    }

    /// Queue a batch-job chunk on the low-priority lane (its own lowered-priority thread, never
    /// the real-time workers). Full lane: `QueueFull` (the caller waits for its earlier chunks).
    pub fn submit_low(&self, input: InputBatch) -> Result<oneshot::Receiver<JobResult>, SubmitError> {
        queue(&self.low_tx, LOW_QUEUE_CAPACITY, input)
    }

    /// Queue `input`; the receiver gets the rows' outputs.
    pub fn submit(&self, input: InputBatch) -> Result<oneshot::Receiver<JobResult>, SubmitError> {
        queue(&self.tx, self.capacity, input)
    }

    /// Like [`Self::submit`], but a refused input comes back, so the caller can wait and retry
    /// (streams are flow-controlled rather than refused).
    pub fn try_submit(
        &self,
        input: InputBatch,
    ) -> Result<oneshot::Receiver<JobResult>, (SubmitError, InputBatch)> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { input, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(job)) => Err((SubmitError::QueueFull(self.capacity), job.input)),
            Err(TrySendError::Disconnected(job)) => Err((SubmitError::Closed, job.input)),
        }
    }

    /// Jobs waiting (not counting those being run).
    pub fn depth(&self) -> usize {
        self.tx.len()
    }
}

/// Put `input` on a bounded queue without waiting.
fn queue(
    tx: &Sender<Job>,
    capacity: usize,
    input: InputBatch,
) -> Result<oneshot::Receiver<JobResult>, SubmitError> {
    let (reply, rx) = oneshot::channel();
    match tx.try_send(Job { input, reply }) {
        Ok(()) => Ok(rx),
        Err(TrySendError::Full(_)) => Err(SubmitError::QueueFull(capacity)),
        Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
    }
}

fn work(rx: &Receiver<Job>, runtime: &dyn Runtime, policy: BatchPolicy) {
    let mut jobs = Vec::new();
    while let Ok(first) = rx.recv() {
        let started = std::time::Instant::now();
        let mut rows = first.input.rows;
        jobs.push(first);
        // Take what is already queued, then wait (bounded by the policy) for more.
        loop {
            let next = match policy.decide(rows, started.elapsed()) {
                // Check the size before taking a job: a job taken is a job that must be run.
                Decision::Run if rows >= policy.max_rows => None,
                Decision::Run => rx.try_recv().ok(),
                Decision::Wait(left) => match rx.recv_timeout(left) {
                    Ok(job) => Some(job),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                    // The model is being unloaded: run what we have, do not spin.
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                },
            };
            match next {
                Some(job) => {
                    rows += job.input.rows;
                    jobs.push(job);
                }
                None if policy.decide(rows, started.elapsed()) == Decision::Run => break,
                None => {}
            }
        }
        run_jobs(runtime, &mut jobs);
    }
}

fn run_jobs(runtime: &dyn Runtime, jobs: &mut Vec<Job>) {
    // Jobs whose caller gave up (timeout, disconnect) are not run.
    jobs.retain(|j| !j.reply.is_closed());
    if let [job] = jobs.as_slice() {
        let result = timed(runtime, &job.input);
        if let Some(job) = jobs.pop() {
            let _ = job.reply.send(result);
        }
        return;
    }
    if jobs.is_empty() {
        return;
    }
    let width = jobs[0].input.width;
    if jobs.iter().any(|j| j.input.width != width) {
        for job in jobs.drain(..) {
            let result = timed(runtime, &job.input);
            let _ = job.reply.send(result);
        }
        return;
    }
    let rows: usize = jobs.iter().map(|j| j.input.rows).sum();
    let mut values = Vec::with_capacity(rows * width);
    for job in jobs.iter() {
        values.extend_from_slice(&job.input.values);
    }
    let batch = InputBatch { rows, width, values };
    match timed(runtime, &batch) {
        Ok(Computed { out, compute }) => {
            let mut start = 0;
            for job in jobs.drain(..) {
                let end = start + job.input.rows;
                let _ = job.reply.send(Ok(Computed { out: out.slice_rows(start, end), compute }));
                start = end;
            }
        }
        // A failed batch is retried job by job so one bad job cannot fail its neighbours.
        Err(_) => {
            for job in jobs.drain(..) {
                let result = timed(runtime, &job.input);
                let _ = job.reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_models::{DType, OutputTensor, Signature, TensorData, TensorInfo};
    use std::sync::Mutex;
    use std::time::Duration;

    /// Doubles its input; blocks while `gate` is held so tests control when batches run.
    struct Doubler {
        signature: Signature,
        gate: Arc<Mutex<()>>,
        entered: std::sync::atomic::AtomicUsize,
        batches: Mutex<Vec<usize>>,
    }

    impl Runtime for Doubler {
        fn name(&self) -> &str {
            "doubler"
        }
        fn signature(&self) -> &Signature {
            &self.signature
        }
        fn run(&self, input: &InputBatch) -> Result<OutputBatch, ModelError> {
            self.entered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _g = self.gate.lock().unwrap();
            self.batches.lock().unwrap().push(input.rows);
            Ok(OutputBatch {
                rows: input.rows,
                tensors: vec![OutputTensor {
                    name: "y".into(),
                    shape: vec![input.rows, input.width],
                    data: TensorData::F32(input.values.iter().map(|v| v * 2.0).collect()),
                }],
            })
        }
    }

    fn doubler(gate: Arc<Mutex<()>>) -> Arc<Doubler> {
        let t = TensorInfo { name: "x".into(), dtype: DType::Fp32, shape: vec![None, Some(1)] };
        Arc::new(Doubler {
            signature: Signature { inputs: vec![t.clone()], outputs: vec![t] },
            gate,
            entered: Default::default(),
            batches: Mutex::new(vec![]),
        })
    }

    /// Jobs queued past a full batch wait for the next batch; none is taken and dropped.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn jobs_beyond_a_full_batch_are_answered_in_the_next_one() {
        let gate = Arc::new(Mutex::new(()));
        let runtime = doubler(gate.clone());
        let config =
            PoolConfig { workers: 1, queue_capacity: 16, max_batch_rows: 4, max_queue_delay: Duration::ZERO };
        let pool = WorkerPool::start("t", runtime.clone(), config).unwrap();
        let held = gate.lock().unwrap();
        let first = pool.submit(InputBatch::new(1, 1, vec![0.0]).unwrap()).unwrap();
        while runtime.entered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Six jobs of 2 rows queue while the worker is busy: batches of 4 rows take them.
        let queued: Vec<_> = (0..6)
            .map(|i| pool.submit(InputBatch::new(2, 1, vec![i as f32, 1.0]).unwrap()).unwrap())
            .collect();
        drop(held);
        first.await.unwrap().unwrap();
        for (i, rx) in queued.into_iter().enumerate() {
            let out = rx.await.expect("every queued job is answered").unwrap();
            assert_eq!(out.out.tensors[0].data, TensorData::F32(vec![2.0 * i as f32, 2.0]));
        }
        assert_eq!(*runtime.batches.lock().unwrap(), vec![1, 4, 4, 4]);
    }

    // The std lock is held across awaits on purpose: it blocks the worker *thread*.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn full_queue_refuses_at_once_and_queued_jobs_are_batched_and_answered_in_order() {
        let gate = Arc::new(Mutex::new(()));
        let runtime = doubler(gate.clone());
        let pool = WorkerPool::start(
            "t",
            runtime.clone(),
            PoolConfig {
                workers: 1,
                queue_capacity: 3,
                max_batch_rows: 100,
                max_queue_delay: Duration::ZERO,
            },
        )
        .unwrap();
        let held = gate.lock().unwrap();
        // The worker takes the first job and blocks on the gate; three more fill the queue.
        let first = pool.submit(InputBatch::new(1, 1, vec![1.0]).unwrap()).unwrap();
        while runtime.entered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued: Vec<_> = (0..3)
            .map(|i| pool.submit(InputBatch::new(2, 1, vec![i as f32, 10.0 + i as f32]).unwrap()).unwrap())
            .collect();
        assert_eq!(
            pool.submit(InputBatch::new(1, 1, vec![9.0]).unwrap()).unwrap_err(),
            SubmitError::QueueFull(3)
        );
        drop(held);
        assert_eq!(first.await.unwrap().unwrap().out.tensors[0].data, TensorData::F32(vec![2.0]));
        for (i, rx) in queued.into_iter().enumerate() {
            let out = rx.await.unwrap().unwrap().out;
            assert_eq!(out.rows, 2);
            assert_eq!(out.tensors[0].data, TensorData::F32(vec![2.0 * i as f32, 20.0 + 2.0 * i as f32]));
        }
        // The three queued jobs ran as one batch of six rows.
        assert_eq!(*runtime.batches.lock().unwrap(), vec![1, 6]);
    }

    #[tokio::test]
    async fn with_a_queue_delay_requests_arriving_apart_share_one_batch() {
        let runtime = doubler(Arc::new(Mutex::new(())));
        let config = PoolConfig {
            workers: 1,
            queue_capacity: 8,
            max_batch_rows: 100,
            max_queue_delay: Duration::from_millis(300),
        };
        let pool = WorkerPool::start("t", runtime.clone(), config).unwrap();
        let a = pool.submit(InputBatch::new(1, 1, vec![1.0]).unwrap()).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = pool.submit(InputBatch::new(2, 1, vec![2.0, 3.0]).unwrap()).unwrap();
        assert_eq!(a.await.unwrap().unwrap().out.tensors[0].data, TensorData::F32(vec![2.0]));
        assert_eq!(b.await.unwrap().unwrap().out.tensors[0].data, TensorData::F32(vec![4.0, 6.0]));
        assert_eq!(*runtime.batches.lock().unwrap(), vec![3], "one batch of both requests");
    }

    // The std lock is held across awaits on purpose: it blocks the low worker *thread*.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn batch_chunks_run_on_their_own_thread_and_never_hold_up_real_time_requests() {
        let gate = Arc::new(Mutex::new(()));
        let runtime = doubler(gate.clone());
        let config = PoolConfig {
            workers: 1,
            queue_capacity: 8,
            max_batch_rows: 100,
            max_queue_delay: Duration::ZERO,
        };
        let pool = WorkerPool::start("t", runtime.clone(), config).unwrap();
        let held = gate.lock().unwrap();
        // A batch chunk enters the runtime and blocks there (on the gate), on the low thread.
        let stuck = pool.submit_low(InputBatch::new(3, 1, vec![1.0; 3]).unwrap()).unwrap();
        while runtime.entered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued: Vec<_> = (0..LOW_QUEUE_CAPACITY)
            .map(|_| pool.submit_low(InputBatch::new(3, 1, vec![1.0; 3]).unwrap()).unwrap())
            .collect();
        assert_eq!(
            pool.submit_low(InputBatch::new(1, 1, vec![1.0]).unwrap()).unwrap_err(),
            SubmitError::QueueFull(LOW_QUEUE_CAPACITY),
            "the low lane is bounded"
        );
        // A real-time request goes to the real-time worker, which also waits on the gate here
        // (one runtime for both): it entered the runtime while the batch chunk is still inside.
        let real_time = pool.submit(InputBatch::new(2, 1, vec![5.0, 6.0]).unwrap()).unwrap();
        while runtime.entered.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(held);
        let out = real_time.await.unwrap().unwrap().out;
        assert_eq!(out.tensors[0].data, TensorData::F32(vec![10.0, 12.0]));
        stuck.await.unwrap().unwrap();
        for rx in queued {
            assert_eq!(rx.await.unwrap().unwrap().out.rows, 3, "each chunk on its own");
        }
    }
}
