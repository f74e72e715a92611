//! Loaded models and the path a batch takes through them. Worker threads do the compute.
//!
//! - [`worker`]: a bounded queue per model version and the threads that drain it in batches.
//! - [`batching`]: the dynamic batching policy (pure).
//! - [`fault`]: injected slowness for tests and game days.
//! - [`priority`]: lowering a thread's CPU priority for batch work.
//! - [`loaded`]: a model version loaded, warmed up and ready to take rows.
//! - [`requests`]: recently served request ids, for feedback.
//! - [`result_cache`]: answers of one-row predictions by model, version and input vector.
//! - [`table`]: which loaded version answers for each model name; swapped atomically.

pub mod batching;
pub mod fault;
pub mod loaded;
pub mod priority;
pub mod requests;
pub mod result_cache;
pub mod table;
pub mod worker;

pub use loaded::LoadedModel;
pub use table::ServingTable;
pub use worker::{SubmitError, WorkerPool};
