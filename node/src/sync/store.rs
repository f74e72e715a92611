//! The node's data directory: `catalog.json` (the last catalog fully loaded) and
//! `artifacts/<sha256>`. Files are written to a temporary name, synced and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

use meridian_gossip::Catalog;
use meridian_models::digest::{is_sha256_hex, sha256_hex};

#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    artifacts: PathBuf,
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl LocalStore {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let artifacts = dir.join("artifacts");
        std::fs::create_dir_all(&artifacts)?;
        Ok(Self { dir: dir.to_path_buf(), artifacts })
    }

    pub fn load_catalog(&self) -> std::io::Result<Option<Catalog>> {
        match std::fs::read(self.dir.join("catalog.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save_catalog(&self, catalog: &Catalog) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(catalog).map_err(std::io::Error::other)?;
        write_atomic(&self.dir, &self.dir.join("catalog.json"), &bytes)
    }

    /// Where the artifact with `digest` is stored when this node holds it (opening it says
    /// whether it does; not checked against its digest: whoever reads it verifies).
    pub fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        is_sha256_hex(digest).then(|| self.artifacts.join(digest))
    }

    /// The artifact's bytes if present and intact; a file whose digest no longer matches
    /// (disk corruption) is removed so it is fetched again.
    pub fn artifact(&self, digest: &str) -> Option<Vec<u8>> {
        if !is_sha256_hex(digest) {
            return None;
        }
        let path = self.artifacts.join(digest);
        let bytes = std::fs::read(&path).ok()?;
        if sha256_hex(&bytes) == digest {
            Some(bytes)
        } else {
            tracing::warn!(%digest, "stored artifact is corrupt; removing it");
            let _ = std::fs::remove_file(path);
            None
        }
    }

    pub fn put_artifact(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        if !is_sha256_hex(digest) {
            return Err(std::io::Error::other(format!("{digest:?} is not a sha256 digest")));
        }
        write_atomic(&self.artifacts, &self.artifacts.join(digest), bytes)
    }

    /// Remove artifacts no longer referenced by `keep`.
    pub fn prune(&self, keep: &std::collections::BTreeSet<&str>) {
        let Ok(entries) = std::fs::read_dir(&self.artifacts) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if is_sha256_hex(&name) && !keep.contains(name.as_ref()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
