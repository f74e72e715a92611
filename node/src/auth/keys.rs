//! The API keys a node accepts: built from each adopted catalog (hashes, scopes, models,
//! limits), checked on every request by id lookup, one sha256 of the presented key and a
//! constant-time compare. The key is 32 random bytes, so a fast hash is the right one: no
//! password stretching is needed, and verifying costs well under a microsecond.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use meridian_gossip::keys::{key_hash, key_id};
use meridian_gossip::Catalog;
use subtle::ConstantTimeEq;

use super::{AuthError, Principal};

#[derive(Debug, Default)]
pub struct KeyTable {
    epoch: u64,
    keys: HashMap<String, ([u8; 32], Arc<Principal>)>,
    revoked: BTreeSet<String>,
}

impl KeyTable {
    pub fn from_catalog(catalog: &Catalog) -> Self {
        let mut keys = HashMap::with_capacity(catalog.keys.len());
        for (id, entry) in &catalog.keys {
            let Some(hash) = hex::decode(&entry.hash).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
                tracing::warn!(key = %id, "the catalog's hash of this key is malformed; the key is refused");
                continue;
            };
            let principal = Principal {
                id: id.clone(),
                scopes: entry.scopes,
                models: entry.models.clone(),
                limits: entry.limits,
                expires_at: None,
            };
            keys.insert(id.clone(), (hash, Arc::new(principal)));
        }
        Self { epoch: catalog.epoch, keys, revoked: catalog.revoked_keys.clone() }
    }

    /// The catalog epoch this table was built from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn verify(&self, key: &str) -> Result<Arc<Principal>, AuthError> {
        let id =
            key_id(key).ok_or_else(|| AuthError::Malformed("not an API key (mk_<id>_<secret>)".into()))?;
        if self.revoked.contains(id) {
            return Err(AuthError::Revoked(id.to_string()));
        }
        let (hash, principal) = self.keys.get(id).ok_or_else(|| AuthError::UnknownKey(id.to_string()))?;
        if bool::from(key_hash(key).ct_eq(hash)) {
            Ok(principal.clone())
        } else {
            Err(AuthError::Invalid(format!("wrong secret for API key {id}")))
        }
    }
}
