//! The node's sled database of feature rows, in two roles: the store itself when no Redis is
//! configured (the embedded default), and the cache behind L1 when Redis is (longer TTL,
//! survives restarts, what the node serves from while the breaker is open).

use std::path::Path;

use super::row::StoredRow;

#[derive(Debug, Clone)]
pub struct LocalRows {
    db: sled::Db,
}

fn key(view: &str, entity: &str) -> Vec<u8> {
    let mut k = view.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(entity.as_bytes());
    k
}

impl LocalRows {
    pub fn open(dir: &Path) -> Result<Self, sled::Error> {
        Ok(Self { db: sled::open(dir)? })
    }

    pub fn get(&self, view: &str, entity: &str) -> Result<Option<StoredRow>, sled::Error> {
        Ok(self.db.get(key(view, entity))?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    pub fn put(&self, view: &str, entity: &str, row: &StoredRow) -> Result<(), sled::Error> {
        let bytes = serde_json::to_vec(row).unwrap_or_default();
        self.db.insert(key(view, entity), bytes)?;
        Ok(())
    }

    /// Write many rows in one sled batch.
    pub fn put_many<'a>(
        &self,
        view: &str,
        rows: impl Iterator<Item = (&'a str, &'a StoredRow)>,
    ) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        for (entity, row) in rows {
            batch.insert(key(view, entity), serde_json::to_vec(row).unwrap_or_default());
        }
        self.db.apply_batch(batch)
    }

    /// Remove many rows in one sled batch.
    pub fn remove_many<'a>(
        &self,
        view: &str,
        entities: impl Iterator<Item = &'a str>,
    ) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        for entity in entities {
            batch.remove(key(view, entity));
        }
        self.db.apply_batch(batch)
    }

    pub fn remove(&self, view: &str, entity: &str) -> Result<(), sled::Error> {
        self.db.remove(key(view, entity))?;
        Ok(())
    }

    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush_async().await.map(|_| ())
    }
}
