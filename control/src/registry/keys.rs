//! API keys: created with a random secret shown once, stored as sha256 of the key, revoked by
//! id. Each change is one sled transaction over the `keys` tree and the catalog, whose epoch it
//! bumps so nodes learn of it: active keys travel in `catalog.keys`, revoked ids in
//! `catalog.revoked_keys`.

use std::collections::BTreeSet;

use meridian_gossip::keys::{key_hash_hex, KeyEntry, KeyLimits, Scopes, KEY_PREFIX};
use meridian_gossip::Catalog;
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::store::{abort, read_json, unwrap_tx, write_json, Registry, CATALOG_KEY};
use super::RegistryError;

/// What a new key may do.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub name: String,
    pub scopes: Scopes,
    /// Limit the key to these models; absent: every model.
    #[serde(default)]
    pub models: Option<BTreeSet<String>>,
    #[serde(default)]
    pub limits: KeyLimits,
}

/// A stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// Hex sha256 of the whole key text.
    pub hash: String,
    pub scopes: Scopes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<BTreeSet<String>>,
    #[serde(default)]
    pub limits: KeyLimits,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl KeyRecord {
    pub fn entry(&self) -> KeyEntry {
        KeyEntry {
            hash: self.hash.clone(),
            scopes: self.scopes,
            models: self.models.clone(),
            limits: self.limits,
        }
    }
}

/// A new key: `mk_<10 hex id>_<64 hex secret>` from the OS's CSPRNG.
pub fn generate_key() -> Result<(String, String), RegistryError> {
    let mut bytes = [0u8; 37];
    getrandom::fill(&mut bytes).map_err(|e| RegistryError::Storage(format!("no randomness: {e}")))?;
    let id = hex::encode(&bytes[..5]);
    let key = format!("{KEY_PREFIX}{id}_{}", hex::encode(&bytes[5..]));
    Ok((id, key))
}

impl KeySpec {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_. ".contains(&b))
        };
        if !name_ok(&self.name) {
            p.push(format!("key name {:?} must be 1-64 letters, digits, spaces, '-', '_' or '.'", self.name));
        }
        if self.scopes.is_empty() {
            p.push("a key needs at least one scope (predict, batch, features:write, admin)".to_string());
        }
        if self.models.as_ref().is_some_and(BTreeSet::is_empty) {
            p.push("an empty model list would allow no model; leave it out to allow every model".to_string());
        }
        p
    }
}

impl Registry {
    /// Store a new key and publish it; the key text (shown once) and its record.
    pub fn create_key(
        &self,
        spec: KeySpec,
        created_at: String,
    ) -> Result<(String, KeyRecord), RegistryError> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(RegistryError::Invalid(problems.join("; ")));
        }
        let (id, key) = generate_key()?;
        let record = KeyRecord {
            id: id.clone(),
            name: spec.name,
            hash: key_hash_hex(&key),
            scopes: spec.scopes,
            models: spec.models,
            limits: spec.limits,
            created_at,
            revoked_at: None,
        };
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = (&self.keys, &self.catalog).transaction(|(keys, catalog_tree)| {
            if keys.get(id.as_bytes())?.is_some() {
                return abort(RegistryError::Conflict(format!("key id {id} exists; try again")));
            }
            write_json(keys, id.as_bytes(), &record)?;
            let mut catalog: Catalog = read_json(catalog_tree, CATALOG_KEY)?.unwrap_or_default();
            catalog.keys.insert(id.clone(), record.entry());
            catalog.epoch += 1;
            write_json(catalog_tree, CATALOG_KEY, &catalog)
        });
        unwrap_tx(result)?;
        self.db.flush()?;
        Ok((key, record))
    }

    /// Every key, active and revoked, by id.
    pub fn keys(&self) -> Result<Vec<KeyRecord>, RegistryError> {
        self.keys.iter().values().map(|v| Ok(serde_json::from_slice(&v?)?)).collect()
    }

    /// Revoke a key: it leaves the catalog's keys and joins its revoked ids. Revoking twice is
    /// not an error.
    pub fn revoke_key(&self, id: &str, revoked_at: String) -> Result<KeyRecord, RegistryError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = (&self.keys, &self.catalog).transaction(|(keys, catalog_tree)| {
            let Some(record) = read_json::<KeyRecord>(keys, id.as_bytes())? else {
                return abort(RegistryError::NotFound(format!("no API key with id {id:?}")));
            };
            if record.revoked_at.is_some() {
                return Ok(record);
            }
            let record = KeyRecord { revoked_at: Some(revoked_at.clone()), ..record };
            write_json(keys, id.as_bytes(), &record)?;
            let mut catalog: Catalog = read_json(catalog_tree, CATALOG_KEY)?.unwrap_or_default();
            catalog.keys.remove(id);
            catalog.revoked_keys.insert(id.to_string());
            catalog.epoch += 1;
            write_json(catalog_tree, CATALOG_KEY, &catalog)?;
            Ok(record)
        });
        let record = unwrap_tx(result)?;
        self.db.flush()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use meridian_gossip::keys::{key_id, Scope};

    #[test]
    fn keys_are_published_hashed_and_revocation_moves_them_to_the_revoked_set() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let spec = KeySpec {
            name: "ci".into(),
            scopes: [Scope::Predict].into_iter().collect(),
            ..Default::default()
        };
        let (key, record) = registry.create_key(spec, "t0".into()).unwrap();
        assert_eq!(key_id(&key), Some(record.id.as_str()));
        assert_ne!(record.hash, key);
        let catalog = registry.catalog().unwrap();
        assert_eq!(catalog.keys[&record.id].hash, key_hash_hex(&key));
        let revoked = registry.revoke_key(&record.id, "t1".into()).unwrap();
        assert_eq!(revoked.revoked_at.as_deref(), Some("t1"));
        let after = registry.catalog().unwrap();
        assert!(after.keys.is_empty() && after.revoked_keys.contains(&record.id));
        assert_eq!(after.epoch, catalog.epoch + 1);
        assert_eq!(registry.revoke_key(&record.id, "t2".into()).unwrap().revoked_at.as_deref(), Some("t1"));
        assert!(matches!(registry.revoke_key("nope", "t".into()), Err(RegistryError::NotFound(_))));
        assert!(matches!(
            registry.create_key(KeySpec::default(), "t".into()),
            Err(RegistryError::Invalid(_))
        ));
        assert_eq!(registry.keys().unwrap().len(), 1);
    }
}
