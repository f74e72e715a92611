//! Feature store latency per tier (L1 hit, sled hit, Redis hit) and bulk ingest into Redis.
//!
//!   cargo run --release -p meridian-benches --bin feature_tiers [-- --redis redis://127.0.0.1:6379/0]
//!
//! Without `--redis` it starts its own `redis-server` on a free port (needs it on PATH).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use meridian_models::features::{FeatureType, FeatureValue, FeatureView};
use meridian_node::features::row::StoredRow;
use meridian_node::features::{FeatureStore, FeatureStoreConfig};

const ENTITIES: usize = 1_000;
const SAMPLES: usize = 20_000;

fn view() -> FeatureView {
    FeatureView {
        name: "users".into(),
        entity: "user_id".into(),
        features: (0..30).map(|i| (format!("f{i}"), FeatureType::Float)).collect(),
        ttl_secs: 3600,
        description: String::new(),
    }
}

fn row(i: usize) -> StoredRow {
    let values: BTreeMap<String, FeatureValue> =
        (0..30).map(|f| (format!("f{f}"), FeatureValue::Number((i * 31 + f) as f64 * 0.5))).collect();
    StoredRow { values, written_at_ms: meridian_node::features::row::unix_ms() }
}

struct RedisServer(Child, u16);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> anyhow::Result<RedisServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(RedisServer(child, port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("redis-server did not start")
}

fn report(name: &str, h: &Histogram<u64>) {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("| {name} | {:.1} | {:.1} | {:.1} | {} |", us(0.5), us(0.99), us(0.999), h.len());
}

/// Time `get` on every sample; `before` runs untimed before each (to force a tier).
async fn measure(store: &FeatureStore, view: &FeatureView, evict: bool) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    for s in 0..SAMPLES {
        let entity = format!("u{}", s % ENTITIES);
        if evict {
            store.invalidate(&view.name, &entity).await;
        }
        let t = Instant::now();
        let found = store.get(view, &entity).await;
        h.record(t.elapsed().as_nanos() as u64)?;
        anyhow::ensure!(found.row.is_some(), "entity {entity} not found");
    }
    Ok(h)
}

async fn fill(store: &FeatureStore, view: &FeatureView) -> anyhow::Result<()> {
    let rows: Vec<_> = (0..ENTITIES).map(|i| (format!("u{i}"), row(i))).collect();
    store.write(view, rows).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let given = args.iter().position(|a| a == "--redis").and_then(|i| args.get(i + 1)).cloned();
    let server = if given.is_none() { Some(start_redis()?) } else { None };
    let url = given.unwrap_or_else(|| format!("redis://127.0.0.1:{}/0", server.as_ref().map_or(0, |s| s.1)));
    let view = view();
    let dir = tempfile::tempdir()?;

    println!("| lookup | p50 µs | p99 µs | p99.9 µs | samples |\n|---|---:|---:|---:|---:|");
    let embedded = FeatureStore::open(FeatureStoreConfig::default(), &dir.path().join("embedded"))
        .map_err(anyhow::Error::msg)?;
    fill(&embedded, &view).await?;
    measure(&embedded, &view, false).await?; // warm L1
    report("L1 hit (in-memory)", &measure(&embedded, &view, false).await?);
    report("sled hit (embedded store)", &measure(&embedded, &view, true).await?);

    let config =
        FeatureStoreConfig { redis_url: Some(url.clone()), redis_timeout_ms: 1_000, ..Default::default() };
    let shared = FeatureStore::open(config, &dir.path().join("shared")).map_err(anyhow::Error::msg)?;
    fill(&shared, &view).await?;
    report("Redis hit (loopback)", &measure(&shared, &view, true).await?);

    let n = 100_000;
    let mut chunks: Vec<Vec<_>> = Vec::new();
    for start in (0..n).step_by(10_000) {
        chunks.push((start..start + 10_000).map(|i| (format!("bulk{i}"), row(i))).collect());
    }
    let t = Instant::now();
    for chunk in chunks {
        shared.write(&view, chunk).await?;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("\ningest into Redis: {n} rows × 30 features in {secs:.2} s = {:.0} rows/s (pipelined, 1,000 rows per round trip)", n as f64 / secs);
    Ok(())
}
