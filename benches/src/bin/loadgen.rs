//! The load generator: predictions against a node over HTTP/1.1, HTTP/3 or the native QUIC
//! protocol, seed API or V2 bodies, closed loop (a fixed number of callers) or open loop (a fixed
//! rate, latency measured from when each request was due, so a stalled server cannot hide its
//! queue: coordinated omission corrected), or streams (rows/s). Latency in HdrHistogram.
//!
//! ```text
//! cargo run --release -p meridian-benches --bin loadgen -- --url http://127.0.0.1:7071 \
//!     --transport native --ca .meridian/up/certs/ca.pem -c 64 -d 10
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use meridian_node::client::{Client, ClientOptions, Rows, Transport};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Api {
    /// `POST /api/v1/models/{model}/predict` with `{"features": {...}}` (native: a ROWS_F32 frame).
    Seed,
    /// `POST /v2/models/{model}/infer` with a JSON FP32 tensor (HTTP only).
    V2,
}

#[derive(Debug, Parser)]
#[command(about = "meridian load generator")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:7071")]
    url: String,
    /// http1, h3 or native.
    #[arg(long, default_value = "http1")]
    transport: Transport,
    #[arg(long, value_enum, default_value = "seed")]
    api: Api,
    /// A bundled demo model (its reference row is the request), or with `--width` any model.
    #[arg(long, default_value = "breast-cancer-mlp")]
    model: String,
    /// Send rows of this many features `f0`, `f1`, … with fixed pseudo-random values instead
    /// of a demo model's reference row (e.g. 784 for `make_model`'s mlp-large).
    #[arg(long)]
    width: Option<usize>,
    /// Callers (closed loop) or most requests in flight (open loop) or streams (--stream).
    #[arg(short, long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds of load after a one-second warm-up.
    #[arg(short, long, default_value_t = 10)]
    duration: u64,
    /// Open loop: requests per second, due at fixed intervals.
    #[arg(long)]
    rate: Option<f64>,
    /// Stream rows instead of unary requests; report rows/s.
    #[arg(long)]
    stream: bool,
    /// Rows per stream chunk.
    #[arg(long, default_value_t = 100)]
    chunk_rows: usize,
    /// QUIC connections the callers share (HTTP/1.1 uses a pool of its own).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    #[arg(long, env = "MERIDIAN_CA")]
    ca: Option<PathBuf>,
    #[arg(long, env = "MERIDIAN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print one JSON object instead of a table row.
    #[arg(long)]
    json: bool,
}

/// What one request sends.
#[derive(Clone)]
enum Request {
    Http { path: String, body: Bytes },
    Native { model: String, rows: Rows },
}

/// The request row: `--width` synthetic features, or the demo model's reference row; as named
/// features and as values in feature order.
fn row(args: &Args) -> anyhow::Result<(Map<String, Value>, Vec<f32>)> {
    if let Some(width) = args.width {
        let values: Vec<f32> = (0..width).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let row = values.iter().enumerate().map(|(i, v)| (format!("f{i}"), json!(v))).collect();
        return Ok((row, values));
    }
    let demo = meridian_models::demo::demo_model(&args.model)
        .ok_or_else(|| anyhow::anyhow!("{} is not a bundled demo model (use --width)", args.model))?;
    let reference: Value = serde_json::from_str(demo.reference)?;
    let row = reference["rows"][0].as_object().cloned().unwrap_or_default();
    let spec = meridian_models::ModelSpec::parse(demo.spec)?;
    let values: Vec<f32> =
        spec.feature_names().map(|f| row.get(f).and_then(Value::as_f64).unwrap_or(0.0) as f32).collect();
    Ok((row, values))
}

fn request(args: &Args) -> anyhow::Result<(Request, Map<String, Value>)> {
    let (row, values) = row(args)?;
    let request = match (args.transport, args.api) {
        (Transport::Native, Api::V2) => anyhow::bail!("V2 bodies go over HTTP; use --api seed with native"),
        (Transport::Native, Api::Seed) => {
            Request::Native { model: args.model.clone(), rows: Rows::F32 { cols: values.len(), values } }
        }
        (_, Api::Seed) => Request::Http {
            path: format!("/api/v1/models/{}/predict", args.model),
            body: serde_json::to_vec(&json!({ "features": row }))?.into(),
        },
        (_, Api::V2) => Request::Http {
            path: format!("/v2/models/{}/infer", args.model),
            body: serde_json::to_vec(&json!({ "inputs": [{
                "name": "input", "shape": [1, values.len()], "datatype": "FP32", "data": values }] }))?
            .into(),
        },
    };
    Ok((request, row))
}

async fn once(client: &Client, request: &Request) -> bool {
    match request {
        Request::Http { path, body } => matches!(client.post(path, body.clone()).await, Ok((200, _))),
        Request::Native { model, rows } => client.predict(model, rows.clone()).await.is_ok(),
    }
}

#[derive(Default)]
struct Tally {
    latency: Option<Histogram<u64>>,
    ok: u64,
    failed: u64,
    rows: u64,
}

impl Tally {
    fn new() -> Self {
        Self { latency: Histogram::new_with_bounds(1, 60_000_000, 3).ok(), ..Self::default() }
    }
    fn record(&mut self, micros: u64, ok: bool, rows: u64) {
        if let Some(h) = &mut self.latency {
            let _ = h.record(micros.max(1));
        }
        if ok {
            self.ok += 1;
            self.rows += rows;
        } else {
            self.failed += 1;
        }
    }
    fn merge(&mut self, other: Tally) {
        if let (Some(a), Some(b)) = (&mut self.latency, &other.latency) {
            let _ = a.add(b);
        }
        self.ok += other.ok;
        self.failed += other.failed;
        self.rows += other.rows;
    }
}

/// `callers` loops, each sending the next request when the last is answered.
async fn closed_loop(
    clients: &[Client],
    request: &Request,
    callers: usize,
    until: Instant,
    warm: Instant,
) -> Tally {
    let mut tasks = Vec::new();
    for i in 0..callers {
        let (client, request) = (clients[i % clients.len()].clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            while Instant::now() < until {
                let started = Instant::now();
                let ok = once(&client, &request).await;
                if started >= warm {
                    tally.record(started.elapsed().as_micros() as u64, ok, 1);
                }
            }
            tally
        }));
    }
    gather(tasks).await
}

/// The callers' tallies, merged.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::new();
    for t in tasks {
        if let Ok(t) = t.await {
            total.merge(t);
        }
    }
    total
}

/// Requests due every 1/rate s; each one's latency counts from when it was due. At most
/// `in_flight` at once: past that, due requests wait (and their wait counts).
async fn open_loop(
    clients: &[Client],
    request: &Request,
    rate: f64,
    in_flight: usize,
    until: Instant,
    warm: Instant,
) -> Tally {
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let tally = Arc::new(std::sync::Mutex::new(Tally::new()));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut n: u64 = 0;
    loop {
        let due = start + interval.mul_f64(n as f64);
        if due >= until {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = gate.clone().acquire_owned().await else { break };
        let (client, request, tally) =
            (clients[n as usize % clients.len()].clone(), request.clone(), tally.clone());
        tokio::spawn(async move {
            let ok = once(&client, &request).await;
            if due >= warm {
                if let Ok(mut t) = tally.lock() {
                    t.record(due.elapsed().as_micros() as u64, ok, 1);
                }
            }
            drop(permit);
        });
        n += 1;
    }
    let _ = gate.acquire_many(in_flight as u32).await;
    let mut out = Tally::new();
    if let Ok(mut t) = tally.lock() {
        out.merge(std::mem::take(&mut *t));
    }
    out
}

/// `streams` streams, each sending chunks of `chunk` rows until `until`; per-chunk latency is
/// from sending a chunk to its answer.
async fn streams(
    clients: &[Client],
    request: &Request,
    row: &Map<String, Value>,
    args: &Args,
    until: Instant,
    warm: Instant,
) -> Tally {
    // One chunk, sent again and again: the request's f32 row (native) or named features.
    let rows = match request {
        Request::Native { rows: Rows::F32 { cols, values }, .. } => {
            Rows::F32 { cols: *cols, values: values.repeat(args.chunk_rows) }
        }
        _ => Rows::Json(vec![row.clone(); args.chunk_rows]),
    };
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let (client, rows) = (clients[i % clients.len()].clone(), rows.clone());
        let (model, chunk_rows) = (args.model.clone(), args.chunk_rows);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
            tokio::spawn(async move {
                while Instant::now() < until {
                    if tx.send(rows.clone()).await.is_err() {
                        return;
                    }
                    let _ = sent_tx.send(Instant::now());
                }
            });
            let mut answers = match client.stream(&model, rx).await {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("stream refused: {e}");
                    tally.record(0, false, 0);
                    return tally;
                }
            };
            let (mut got, chunk_size) = (0usize, chunk_rows);
            while let Some(item) = answers.recv().await {
                let p = match item {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("stream failed: {e}");
                        tally.record(0, false, 0);
                        break;
                    }
                };
                got += p.len();
                // HTTP streams answer per line: a chunk is done when its last row is.
                while chunk_size > 0 && got >= chunk_size {
                    got -= chunk_size;
                    if let Ok(sent) = sent_rx.try_recv() {
                        if sent >= warm {
                            tally.record(sent.elapsed().as_micros() as u64, true, chunk_size as u64);
                        }
                    }
                }
            }
            tally
        }));
    }
    gather(tasks).await
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (request, row) = request(&args)?;
    let options = ClientOptions {
        url: args.url.clone(),
        transport: args.transport,
        ca: args.ca.clone(),
        token: args.api_key.clone(),
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let connections = if args.transport == Transport::Http1 { 1 } else { args.connections.max(1) };
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(Client::connect(options.clone()).await?);
    }
    let warm = Instant::now() + Duration::from_secs(1);
    let until = warm + Duration::from_secs(args.duration);
    let tally = match (args.stream, args.rate) {
        (true, _) => streams(&clients, &request, &row, &args, until, warm).await,
        (false, Some(rate)) => {
            open_loop(&clients, &request, rate, args.concurrency.max(1), until, warm).await
        }
        (false, None) => closed_loop(&clients, &request, args.concurrency.max(1), until, warm).await,
    };
    report(&args, &tally);
    Ok(())
}

fn report(args: &Args, tally: &Tally) {
    let secs = args.duration as f64;
    let Some(h) = &tally.latency else { return };
    let mode = match (args.stream, args.rate) {
        (true, _) => "stream".to_string(),
        (false, Some(r)) => format!("open {r}/s"),
        (false, None) => "closed".to_string(),
    };
    let out = json!({
        "transport": args.transport.to_string(), "api": format!("{:?}", args.api).to_lowercase(),
        "mode": mode, "concurrency": args.concurrency,
        "requests_per_s": tally.ok as f64 / secs, "rows_per_s": tally.rows as f64 / secs,
        "p50_ms": ms(h, 0.5), "p90_ms": ms(h, 0.9), "p99_ms": ms(h, 0.99), "p999_ms": ms(h, 0.999),
        "max_ms": h.max() as f64 / 1000.0, "ok": tally.ok, "failed": tally.failed,
    });
    if args.json {
        println!("{out}");
        return;
    }
    println!(
        "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
        out["transport"].as_str().unwrap_or_default(),
        out["api"].as_str().unwrap_or_default(),
        mode,
        args.concurrency,
        out["requests_per_s"].as_f64().unwrap_or_default(),
        out["rows_per_s"].as_f64().unwrap_or_default(),
        ms(h, 0.5),
        ms(h, 0.9),
        ms(h, 0.99),
        ms(h, 0.999),
        h.max() as f64 / 1000.0,
        tally.failed
    );
}
