//! Content-addressed artifact files: `<dir>/<sha256>`. Written to a temporary file, synced and
//! renamed, so a crash never leaves a half-written artifact under a digest's name.

use std::io::Write;
use std::path::{Path, PathBuf};

use meridian_models::digest::is_sha256_hex;

#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// Path of the artifact with `digest`; `None` for anything that is not a digest, so a
    /// digest from a URL can never name another file.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        is_sha256_hex(digest).then(|| self.dir.join(digest))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_some_and(|p| p.is_file())
    }

    /// Store `bytes` under `digest` (already computed by the caller) unless present.
    pub fn put(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self
            .path(digest)
            .ok_or_else(|| std::io::Error::other(format!("{digest:?} is not a sha256 digest")))?;
        if path.is_file() {
            return Ok(());
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }
}
