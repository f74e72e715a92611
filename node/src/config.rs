//! The node's configuration: TOML file, then `MERIDIAN_NODE_*` env, then flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::collections::BTreeMap;

use meridian_models::runtime::gpu::MatmulTile;
pub use meridian_models::runtime::select::RuntimeMode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Unique name of this node in the mesh; answers carry it as `served_by`.
    pub id: String,
    pub region: String,
    /// Address of the HTTP/1.1 + HTTP/2 front end (TCP), TLS unless `tls.plaintext_http`.
    pub listen: SocketAddr,
    /// UDP address of HTTP/3 and the native QUIC protocol; with TLS and no address here, the
    /// same address and port as `listen`. Never without TLS.
    pub quic_listen: Option<SocketAddr>,
    /// The node's certificate and key, or plaintext HTTP/1.1 for local development.
    pub tls: crate::transport::tls::TlsConfig,
    /// PEM file of the CA the node trusts when it calls control and its peers over HTTPS.
    pub ca_file: Option<PathBuf>,
    /// URL clients and peers use to reach this node; `http://<bound address>` when absent.
    pub advertise_url: Option<String>,
    /// Control's base URL; without it the node serves its persisted catalog only.
    pub control_url: Option<String>,
    /// Persisted catalog and artifacts.
    pub data_dir: PathBuf,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// TCP connections (HTTP/1.1 and HTTP/2) open at once; the listener waits while this many
    /// are open.
    pub max_connections: usize,
    /// An HTTP/1.1 request's headers must arrive within this; an idle keep-alive connection
    /// is closed after it.
    pub header_timeout_ms: u64,
    /// A request body that sends nothing for this long is cut off (an NDJSON stream must send
    /// a line at least this often).
    pub body_idle_timeout_ms: u64,
    /// Most rows in one predict or infer request; more get 413.
    pub max_rows_per_request: usize,
    /// Requests waiting per model version; when full, new ones get 429 at once.
    pub queue_capacity: usize,
    /// Worker threads per loaded model version.
    pub workers_per_model: usize,
    /// A worker runs up to this many queued rows as one batch.
    pub max_batch_rows: usize,
    /// How long a request may wait for others to batch with; 0 (the default) runs whatever
    /// is queued at once, which already batches under load without adding latency when idle.
    pub max_queue_delay_us: u64,
    /// A request not answered within this gets 503.
    pub request_timeout_ms: u64,
    /// How long one catalog long-poll to control waits.
    pub catalog_wait_ms: u64,
    /// Interval of reports to control.
    pub heartbeat_ms: u64,
    /// Interval of latency histogram reports to control.
    pub report_interval_ms: u64,
    /// Largest artifact the node downloads.
    pub max_artifact_bytes: u64,
    /// One-row answers kept by (model, version, input vector); 0 turns the cache off.
    pub result_cache_capacity: u64,
    pub result_cache_ttl_secs: u64,
    /// One-row predictions remembered for feedback: how many, and for how long.
    pub feedback_capacity: u64,
    pub feedback_window_secs: u64,
    /// Largest feature ingest body (NDJSON or CSV).
    pub max_ingest_bytes: usize,
    /// The feature store: Redis, caches, breaker.
    pub features: crate::features::FeatureStoreConfig,
    /// Injected faults (tests, game days): model versions made slow on this node.
    pub faults: Vec<crate::inference::fault::Fault>,
    /// Where models run: `auto` (the GPU when there is one and it covers the model), `cpu`
    /// (tract only) or `gpu` (the node refuses to start without an adapter).
    pub runtime: RuntimeMode,
    pub gpu: GpuConfig,
    /// Per-model overrides, `[models.<name>]`: batching and runtime.
    pub models: BTreeMap<String, ModelTuning>,
    /// Batch jobs: upload size, checkpoint size, concurrency.
    pub batch: crate::batch::BatchConfig,
    /// Who may call: JWT issuers, API keys (from the catalog), on by default.
    pub auth: crate::auth::AuthConfig,
    /// Rate limits per key: predictions per second per model, batch submissions per minute.
    pub limits: crate::auth::LimitsConfig,
    /// The mesh: membership, the catalog from peers, forwarding (`[mesh]`, off without
    /// `mesh.listen`).
    pub mesh: crate::mesh::settings::MeshSettings,
}

/// The GPU runtime's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    /// Use a software adapter (Mesa lavapipe, WARP) when there is no real GPU: tests and CI.
    pub allow_software: bool,
    /// Rows per GPU submission at most; larger batches run as several (bounds device memory).
    pub max_rows_per_submission: usize,
    /// The tiled matmul kernel for batches of more than 8 rows: `auto` (128×128 tiles for large
    /// products, else 64×64), `64` or `128`.
    pub matmul_tile: MatmulTile,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self { allow_software: false, max_rows_per_submission: 8192, matmul_tile: MatmulTile::Auto }
    }
}

/// Overrides of the node-wide settings for one model (every version of it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelTuning {
    pub max_batch_rows: Option<usize>,
    pub max_queue_delay_us: Option<u64>,
    pub workers: Option<usize>,
    pub runtime: Option<RuntimeMode>,
}

impl NodeConfig {
    /// An HTTP client builder for calls to control and peers: trusts `ca_file` when set.
    pub fn http_client(&self) -> reqwest::ClientBuilder {
        // Idle connections are dropped before a meridian listener closes them (its header
        // timeout, 10 s by default), so a request never races that close.
        let builder = reqwest::Client::builder().pool_idle_timeout(crate::client::POOL_IDLE);
        let Some(path) = &self.ca_file else { return builder };
        match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string()))
        {
            Ok(cert) => builder.add_root_certificate(cert),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read ca_file; HTTPS calls will fail");
                builder
            }
        }
    }

    /// The batching and runtime settings for `model`: its overrides over the node's.
    pub fn tuning(&self, model: &str) -> (crate::inference::worker::PoolConfig, RuntimeMode) {
        let t = self.models.get(model).cloned().unwrap_or_default();
        let pool = crate::inference::worker::PoolConfig {
            workers: t.workers.unwrap_or(self.workers_per_model),
            queue_capacity: self.queue_capacity,
            max_batch_rows: t.max_batch_rows.unwrap_or(self.max_batch_rows),
            max_queue_delay: std::time::Duration::from_micros(
                t.max_queue_delay_us.unwrap_or(self.max_queue_delay_us),
            ),
        };
        (pool, t.runtime.unwrap_or(self.runtime))
    }

    /// Whether any model may run on the GPU (so the node looks for an adapter).
    pub fn wants_gpu(&self) -> bool {
        self.runtime != RuntimeMode::Cpu
            || self.models.values().any(|m| m.runtime.is_some_and(|r| r != RuntimeMode::Cpu))
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: "node-1".to_string(),
            region: "local".to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            quic_listen: None,
            tls: crate::transport::tls::TlsConfig::default(),
            ca_file: None,
            advertise_url: None,
            control_url: None,
            data_dir: PathBuf::from("/var/lib/meridian/node"),
            max_body_bytes: 4 << 20,
            max_connections: 4096,
            header_timeout_ms: 10_000,
            body_idle_timeout_ms: 30_000,
            max_rows_per_request: 10_000,
            queue_capacity: 256,
            workers_per_model: 1,
            max_batch_rows: 1024,
            max_queue_delay_us: 0,
            request_timeout_ms: 5_000,
            catalog_wait_ms: 20_000,
            heartbeat_ms: 5_000,
            report_interval_ms: 10_000,
            max_artifact_bytes: 1 << 30,
            max_ingest_bytes: 256 << 20,
            result_cache_capacity: 0,
            feedback_capacity: 200_000,
            feedback_window_secs: 3_600,
            result_cache_ttl_secs: 300,
            features: crate::features::FeatureStoreConfig::default(),
            faults: Vec::new(),
            runtime: RuntimeMode::Auto,
            gpu: GpuConfig::default(),
            models: BTreeMap::new(),
            batch: crate::batch::BatchConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            limits: crate::auth::LimitsConfig::default(),
            mesh: crate::mesh::settings::MeshSettings::default(),
        }
    }
}

impl NodeConfig {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Every problem at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        let name_ok =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok(&self.id) {
            p.push(format!("id {:?} must be non-empty letters, digits, '-', '_' or '.'", self.id));
        }
        if !name_ok(&self.region) {
            p.push(format!("region {:?} must be non-empty letters, digits, '-', '_' or '.'", self.region));
        }
        if let Some(url) = &self.control_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                p.push(format!("control_url {url:?} must start with http:// or https://"));
            }
        }
        p.extend(self.tls.problems());
        if let Some(ca) = &self.ca_file {
            if let Err(e) = crate::transport::tls::read_certs(ca) {
                p.push(format!("ca_file: {e}"));
            }
        }
        if self.quic_listen.is_some() && !self.tls.enabled() {
            p.push("quic_listen needs tls.cert and tls.key: QUIC is always encrypted".to_string());
        }
        if self.data_dir.as_os_str().is_empty() {
            p.push("data_dir must be set".to_string());
        }
        for (name, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_connections", self.max_connections),
            ("header_timeout_ms", self.header_timeout_ms as usize),
            ("body_idle_timeout_ms", self.body_idle_timeout_ms as usize),
            ("max_rows_per_request", self.max_rows_per_request),
            ("queue_capacity", self.queue_capacity),
            ("workers_per_model", self.workers_per_model),
            ("max_batch_rows", self.max_batch_rows),
        ] {
            if value == 0 {
                p.push(format!("{name} must be positive"));
            }
        }
        if self.gpu.max_rows_per_submission == 0 {
            p.push("gpu.max_rows_per_submission must be positive".to_string());
        }
        for (name, t) in &self.models {
            if t.max_batch_rows == Some(0) || t.workers == Some(0) || t.workers.is_some_and(|w| w > 64) {
                p.push(format!("models.{name}: max_batch_rows must be positive and workers 1 to 64"));
            }
        }
        if self.workers_per_model > 64 {
            p.push("workers_per_model must be at most 64".to_string());
        }
        if self.request_timeout_ms == 0 || self.heartbeat_ms == 0 || self.report_interval_ms == 0 {
            p.push("request_timeout_ms, heartbeat_ms and report_interval_ms must be positive".to_string());
        }
        if let Some(url) = &self.features.redis_url {
            if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                p.push(format!("features.redis_url {url:?} must start with redis:// or rediss://"));
            }
        }
        if self.features.redis_timeout_ms == 0 || self.features.l1_capacity == 0 {
            p.push("features.redis_timeout_ms and features.l1_capacity must be positive".to_string());
        }
        p.extend(self.batch.problems());
        p.extend(self.auth.problems());
        p.extend(self.mesh.problems(self));
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }
}
