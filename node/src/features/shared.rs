//! The shared online store in Redis: a hash per (view, entity) at `mf:{view}:{entity}`, one
//! field per feature (its JSON value) plus `_ts` (written at, Unix ms), expiring with the view's
//! TTL. Writes publish the written entities on `meridian:features` so every node drops its
//! cached copies. Every call is bounded by `timeout`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use meridian_models::features::FeatureValue;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::row::StoredRow;

pub const INVALIDATION_CHANNEL: &str = "meridian:features";

pub struct SharedRows {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    timeout: Duration,
}

fn redis_key(view: &str, entity: &str) -> String {
    format!("mf:{view}:{entity}")
}

/// An invalidation message: which entities of which view were written.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Invalidation {
    pub view: String,
    pub entities: Vec<String>,
}

impl SharedRows {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid redis_url {url:?}: {e}"))?;
        Ok(Self { client, conn: Mutex::new(None), timeout })
    }

    async fn conn(&self) -> Result<ConnectionManager, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout * 4))
            // Each call is bounded by our own timeout (reads: `timeout`; bulk writes: a budget
            // that grows with the pipeline). A response timeout here would cut a 1,000-row
            // pipeline at the read timeout (50 ms) on a busy machine.
            .set_response_timeout(None)
            .set_number_of_retries(1);
        let c = tokio::time::timeout(
            self.timeout * 4,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| "redis connect timed out".to_string())?
        .map_err(|e| format!("redis connect failed: {e}"))?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err(format!("redis did not answer within {} ms", self.timeout.as_millis())),
        }
    }

    pub async fn get(&self, view: &str, entity: &str) -> Result<Option<StoredRow>, String> {
        let mut conn = self.conn().await?;
        let fields: BTreeMap<String, String> =
            self.bounded(redis::cmd("HGETALL").arg(redis_key(view, entity)).query_async(&mut conn)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut row = StoredRow { values: BTreeMap::new(), written_at_ms: 0 };
        for (k, v) in fields {
            if k == "_ts" {
                row.written_at_ms = v.parse().unwrap_or_default();
            } else if let Ok(value) = serde_json::from_str::<FeatureValue>(&v) {
                row.values.insert(k, value);
            }
        }
        Ok(Some(row))
    }

    /// Write rows (merging into existing hashes), set their TTL, publish the invalidation.
    /// One pipeline round trip (pipelining is what makes bulk ingest fast).
    pub async fn put_many(
        &self,
        view: &str,
        rows: &[(String, StoredRow)],
        ttl_secs: u64,
    ) -> Result<(), String> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        let mut value = Vec::with_capacity(32);
        for (entity, row) in rows {
            let key = redis_key(view, entity);
            let hset = pipe.cmd("HSET").arg(&key);
            for (k, v) in &row.values {
                value.clear();
                let _ = serde_json::to_writer(&mut value, v);
                hset.arg(k.as_str()).arg(&value[..]);
            }
            hset.arg("_ts").arg(row.written_at_ms).ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(ttl_secs).ignore();
        }
        let message =
            Invalidation { view: view.to_string(), entities: rows.iter().map(|(e, _)| e.clone()).collect() };
        pipe.cmd("PUBLISH")
            .arg(INVALIDATION_CHANNEL)
            .arg(serde_json::to_string(&message).unwrap_or_default())
            .ignore();
        // Bulk writes get more time than reads: a pipeline of thousands of rows.
        let budget = self.timeout * (1 + (rows.len() / 500) as u32).min(100);
        match tokio::time::timeout(budget, pipe.query_async::<()>(&mut conn)).await {
            Ok(r) => r.map_err(|e| format!("redis: {e}")),
            Err(_) => Err(format!("redis did not finish the write within {} ms", budget.as_millis())),
        }
    }

    /// Deliver invalidations from other nodes to `on_message` until shutdown, reconnecting
    /// with a backoff while Redis is away.
    pub async fn subscribe(&self, shutdown: CancellationToken, on_message: impl Fn(Invalidation)) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let connected = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(INVALIDATION_CHANNEL).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                r = tokio::time::timeout(self.timeout * 4, connected) => r,
                _ = shutdown.cancelled() => return,
            };
            match pubsub {
                Ok(Ok(pubsub)) => {
                    backoff = Duration::from_millis(100);
                    let mut stream = pubsub.into_on_message();
                    loop {
                        let msg = tokio::select! {
                            m = stream.next() => m,
                            _ = shutdown.cancelled() => return,
                        };
                        let Some(msg) = msg else { break };
                        if let Ok(inv) = serde_json::from_slice::<Invalidation>(msg.get_payload_bytes()) {
                            on_message(inv);
                        }
                    }
                }
                _ => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}
