//! The registry: model versions (the spec's `models` table) and the catalog in sled, artifacts
//! as content-addressed files. Does disk I/O (sled, files); no network.
//!
//! - [`record`]: a stored model version and its status.
//! - [`artifacts`]: blobs on disk named by their sha256.
//! - [`store`]: push, deploy, rollback, archive, each one sled transaction.
//! - [`keys`]: API keys, stored hashed, published in the catalog, revoked by id.
//! - [`rollouts`]: rollout state and the catalog changes a rollout makes.
//! - [`validate`]: what a pushed artifact must pass before anything is stored.

pub mod artifacts;
pub mod keys;
pub mod record;
pub mod rollouts;
pub mod store;
pub mod validate;

pub use record::{ModelRecord, Status};
pub use store::Registry;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    /// The push was refused: the artifact or its spec is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (e.g. archiving the live version).
    #[error("{0}")]
    Conflict(String),
    #[error("registry storage failed: {0}")]
    Storage(String),
}

impl From<sled::Error> for RegistryError {
    fn from(e: sled::Error) -> Self {
        RegistryError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for RegistryError {
    fn from(e: std::io::Error) -> Self {
        RegistryError::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for RegistryError {
    fn from(e: serde_json::Error) -> Self {
        RegistryError::Storage(format!("corrupt record: {e}"))
    }
}
