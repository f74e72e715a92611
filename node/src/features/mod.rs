//! The node's feature store client: in-memory L1 (short TTL) in front of the node's sled
//! database in front of Redis (shared); without Redis configured, sled is the store.
//! I/O: sled and Redis. The breaker and row types are plain data.
//!
//! - [`breaker`]: the circuit breaker state machine in front of Redis.
//! - [`local`]: sled rows (the store, or the cache that survives restarts).
//! - [`shared`]: Redis rows, pipelined writes, invalidation by pub/sub.
//! - [`row`]: a stored row and its age.
//!
//! Staleness bound: a write through any node reaches Redis, then every node drops its L1 and
//! sled copies when the pub/sub message arrives (milliseconds on a LAN). If that message is
//! lost, `l1_ttl_secs` bounds how long an old value is served. While the breaker is open,
//! nodes serve sled copies up to `stale_bound_secs` old and mark answers `degraded`.

pub mod breaker;
pub mod local;
pub mod row;
pub mod shared;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use meridian_models::features::FeatureView;
use moka::future::Cache;
use serde::{Deserialize, Serialize};

use breaker::{Breaker, BreakerState};
use local::LocalRows;
use row::{unix_ms, StoredRow};
use shared::SharedRows;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureStoreConfig {
    /// Redis URL (`redis://host:6379/0`); without it the node's sled database is the store.
    pub redis_url: Option<String>,
    /// Longest a Redis call may take before it counts as a failure.
    pub redis_timeout_ms: u64,
    /// In-memory cache entry lifetime and size.
    pub l1_ttl_secs: u64,
    pub l1_capacity: u64,
    /// While Redis is unreachable, sled copies up to this old are served (marked degraded).
    pub stale_bound_secs: u64,
    /// Consecutive Redis failures that open the breaker, and how long it stays open.
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
}

impl Default for FeatureStoreConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_timeout_ms: 50,
            l1_ttl_secs: 60,
            l1_capacity: 100_000,
            stale_bound_secs: 3_600,
            breaker_failures: 3,
            breaker_open_ms: 1_000,
        }
    }
}

/// Where a lookup was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    L1,
    Sled,
    Redis,
    /// The sled copy served while Redis is unavailable.
    SledStale,
}

impl Tier {
    pub fn label(self) -> &'static str {
        match self {
            Tier::L1 => "l1",
            Tier::Sled => "sled",
            Tier::Redis => "redis",
            Tier::SledStale => "sled_stale",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Lookup {
    pub row: Option<Arc<StoredRow>>,
    pub tier: Tier,
    pub degraded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FeatureStoreError {
    #[error("the feature store is unavailable: {0}")]
    Unavailable(String),
    #[error("the node's feature database failed: {0}")]
    Local(#[from] sled::Error),
}

type Key = (String, String);

pub struct FeatureStore {
    config: FeatureStoreConfig,
    local: LocalRows,
    shared: Option<SharedRows>,
    l1: Cache<Key, Option<Arc<StoredRow>>>,
    breaker: Mutex<Breaker>,
}

impl std::fmt::Debug for FeatureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FeatureStore({})", self.kind())
    }
}

impl FeatureStore {
    pub fn open(config: FeatureStoreConfig, dir: &std::path::Path) -> Result<Self, String> {
        let local = LocalRows::open(dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let shared = config.redis_url.as_deref().map(|url| SharedRows::new(url, timeout)).transpose()?;
        let l1 = Cache::builder()
            .max_capacity(config.l1_capacity)
            .time_to_live(Duration::from_secs(config.l1_ttl_secs.max(1)))
            .build();
        let breaker =
            Mutex::new(Breaker::new(config.breaker_failures, Duration::from_millis(config.breaker_open_ms)));
        Ok(Self { config, local, shared, l1, breaker })
    }

    /// `redis` or `sled` (node-local).
    pub fn kind(&self) -> &'static str {
        if self.shared.is_some() {
            "redis"
        } else {
            "sled"
        }
    }

    pub fn breaker_open(&self) -> bool {
        self.shared.is_some() && self.lock_breaker().state() != BreakerState::Closed
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The row of `entity` in `view`. Concurrent misses for one key make one backing call.
    pub async fn get(&self, view: &FeatureView, entity: &str) -> Lookup {
        let key = (view.name.clone(), entity.to_string());
        let now = unix_ms();
        let fresh = |row: Option<Arc<StoredRow>>| row.filter(|r| !r.expired(view.ttl_secs, now));
        if let Some(row) = self.l1.get(&key).await {
            return Lookup { row: fresh(row), tier: Tier::L1, degraded: false };
        }
        let loaded = self.l1.try_get_with(key, self.load(view, entity)).await;
        match loaded {
            Ok(row) => Lookup {
                row: fresh(row),
                tier: if self.shared.is_some() { Tier::Redis } else { Tier::Sled },
                degraded: false,
            },
            Err(stale) => Lookup { row: stale.as_ref().clone(), tier: Tier::SledStale, degraded: true },
        }
    }

    /// From the backing store; `Err` carries the degraded fallback (not cached in L1).
    async fn load(
        &self,
        view: &FeatureView,
        entity: &str,
    ) -> Result<Option<Arc<StoredRow>>, Option<Arc<StoredRow>>> {
        let Some(shared) = &self.shared else {
            return Ok(self.local.get(&view.name, entity).ok().flatten().map(Arc::new));
        };
        let allowed = self.lock_breaker().allow(tokio::time::Instant::now());
        if allowed {
            match shared.get(&view.name, entity).await {
                Ok(row) => {
                    self.lock_breaker().success();
                    let _ = match &row {
                        Some(r) => self.local.put(&view.name, entity, r),
                        None => self.local.remove(&view.name, entity),
                    };
                    return Ok(row.map(Arc::new));
                }
                Err(e) => {
                    tracing::warn!(error = %e, view = %view.name, "feature store read failed");
                    self.lock_breaker().failure(tokio::time::Instant::now());
                }
            }
        }
        let bound = self.config.stale_bound_secs.saturating_mul(1000);
        let now = unix_ms();
        Err(self
            .local
            .get(&view.name, entity)
            .ok()
            .flatten()
            .filter(|r| r.age_ms(now) <= bound)
            .map(Arc::new))
    }

    /// Write rows (features merged into what is stored) and invalidate cached copies.
    pub async fn write(
        &self,
        view: &FeatureView,
        rows: Vec<(String, StoredRow)>,
    ) -> Result<usize, FeatureStoreError> {
        let n = rows.len();
        if let Some(shared) = &self.shared {
            if !self.lock_breaker().allow(tokio::time::Instant::now()) {
                return Err(FeatureStoreError::Unavailable(
                    "Redis is unreachable (circuit breaker open)".into(),
                ));
            }
            // Pipelines of 1,000 rows, four in flight on the multiplexed connection.
            let pending: Vec<_> =
                rows.chunks(1_000).map(|chunk| shared.put_many(&view.name, chunk, view.ttl_secs)).collect();
            let mut writes = futures_util::stream::iter(pending).buffer_unordered(4);
            while let Some(result) = writes.next().await {
                if let Err(e) = result {
                    self.lock_breaker().failure(tokio::time::Instant::now());
                    return Err(FeatureStoreError::Unavailable(e));
                }
            }
            drop(writes);
            self.lock_breaker().success();
            for (entity, _) in &rows {
                self.l1.invalidate(&(view.name.clone(), entity.clone())).await;
            }
            self.local.remove_many(&view.name, rows.iter().map(|(e, _)| e.as_str()))?;
            return Ok(n);
        }
        let mut merged = Vec::with_capacity(n);
        for (entity, mut row) in rows {
            if let Some(old) = self.local.get(&view.name, &entity)? {
                for (k, v) in old.values {
                    row.values.entry(k).or_insert(v);
                }
            }
            merged.push((entity, row));
        }
        self.local.put_many(&view.name, merged.iter().map(|(e, r)| (e.as_str(), r)))?;
        for (entity, _) in &merged {
            self.l1.invalidate(&(view.name.clone(), entity.clone())).await;
        }
        Ok(n)
    }

    /// Drop cached copies of one entity (L1 and, in front of Redis, the sled copy).
    pub async fn invalidate(&self, view: &str, entity: &str) {
        self.l1.invalidate(&(view.to_string(), entity.to_string())).await;
        if self.shared.is_some() {
            let _ = self.local.remove(view, entity);
        }
    }

    /// Follow other nodes' writes until shutdown (no-op without Redis).
    pub async fn follow_invalidations(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let Some(shared) = &self.shared else { return };
        let store = self.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<shared::Invalidation>(1_024);
        let apply = tokio::spawn(async move {
            while let Some(inv) = rx.recv().await {
                for entity in &inv.entities {
                    store.invalidate(&inv.view, entity).await;
                }
            }
        });
        shared
            .subscribe(shutdown, |inv| {
                // A full channel drops the message; L1's TTL still bounds staleness.
                let _ = tx.try_send(inv);
            })
            .await;
        drop(tx);
        let _ = apply.await;
    }

    pub async fn flush(&self) {
        let _ = self.local.flush().await;
    }
}
