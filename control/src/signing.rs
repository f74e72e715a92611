//! Control's catalog-signing key: every catalog it serves to the mesh carries its ed25519
//! signature, so a node adopts a catalog a peer gossiped only if control made it.

use std::path::{Path, PathBuf};

use meridian_gossip::mesh::ControlKey;

use crate::config::ControlConfig;

/// Default name of the seed file in control's data directory.
pub const SIGNING_KEY_FILE: &str = "mesh-signing.key";

/// Where `config`'s signing seed lives.
pub fn key_path(config: &ControlConfig) -> PathBuf {
    config.signing_key.clone().unwrap_or_else(|| config.data_dir.join(SIGNING_KEY_FILE))
}

/// The signing key from its file; without a configured file, one is created at first start.
pub fn load_or_create(config: &ControlConfig) -> Result<ControlKey, String> {
    let path = key_path(config);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_seed(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.signing_key.is_none() => create(&path),
        Err(e) => Err(format!("cannot read the signing key {}: {e}", path.display())),
    }
}

fn parse_seed(text: &str) -> Result<ControlKey, String> {
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the signing key must be 64 hex digits (a 32-byte ed25519 seed)")?;
    Ok(ControlKey::from_seed(&seed))
}

fn create(path: &Path) -> Result<ControlKey, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness for the signing key: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    crate::api::auth::write_private(path, &hex::encode(seed))
        .map_err(|e| format!("cannot write the signing key {}: {e}", path.display()))?;
    let key = ControlKey::from_seed(&seed);
    tracing::warn!(
        path = %path.display(), public_key = %key.public().to_hex(),
        "created control's catalog-signing key; give nodes its public key as mesh.control_keys"
    );
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_created_key_is_reused_and_a_bad_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = ControlConfig { data_dir: dir.path().to_path_buf(), ..ControlConfig::default() };
        let first = load_or_create(&config).unwrap().public();
        let again = load_or_create(&config).unwrap().public();
        assert_eq!(first, again);
        std::fs::write(key_path(&config), "not hex").unwrap();
        assert!(load_or_create(&config).unwrap_err().contains("64 hex digits"));
        let missing = ControlConfig { signing_key: Some(dir.path().join("absent.key")), ..config.clone() };
        assert!(load_or_create(&missing).unwrap_err().contains("cannot read"));
    }
}
