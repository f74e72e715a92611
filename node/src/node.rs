//! The node's shared state and its one start/stop path.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{NodeConfig, RuntimeMode};
use crate::features::FeatureStore;
use crate::inference::result_cache::ResultCache;
use crate::inference::ServingTable;
use crate::sync::store::LocalStore;
use crate::telemetry::Metrics;
use meridian_models::runtime::gpu::{GpuContext, GpuOptions};

pub struct NodeState {
    pub config: NodeConfig,
    /// The URL this node is reached at.
    pub url: String,
    pub table: ArcSwap<ServingTable>,
    pub metrics: Metrics,
    pub store: LocalStore,
    pub features: Arc<FeatureStore>,
    pub results: ResultCache,
    pub histograms: crate::telemetry::histograms::Recorder,
    pub requests: crate::inference::requests::RequestLog,
    pub batch: crate::batch::Batches,
    pub shutdown: CancellationToken,
    /// The GPU models may run on; `None` without an adapter or with `runtime = "cpu"`.
    pub gpu: Option<Arc<GpuContext>>,
    /// Credentials to principals; its key table follows the catalog.
    pub auth: crate::auth::Authenticator,
    /// Per-key, per-model rate limits.
    pub limits: crate::auth::Limits,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeState({})", self.config.id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("GPU: {0}")]
    Gpu(String),
}

/// One device per process and kind of adapter, shared by every node in it (`meridian up`
/// runs several).
fn shared_gpu(allow_software: bool) -> Result<Option<Arc<GpuContext>>, String> {
    type Opened = std::sync::Mutex<std::collections::HashMap<bool, Option<Arc<GpuContext>>>>;
    static OPENED: std::sync::OnceLock<Opened> = std::sync::OnceLock::new();
    let mut opened =
        OPENED.get_or_init(Default::default).lock().map_err(|_| "GPU lock poisoned".to_string())?;
    if let Some(ctx) = opened.get(&allow_software) {
        return Ok(ctx.clone());
    }
    let ctx = GpuContext::open(GpuOptions { allow_software })?;
    opened.insert(allow_software, ctx.clone());
    Ok(ctx)
}

/// The adapter this node's models may use, as its config asks.
async fn open_gpu(config: &NodeConfig) -> Result<Option<Arc<GpuContext>>, NodeError> {
    if !config.wants_gpu() {
        return Ok(None);
    }
    let allow = config.gpu.allow_software;
    let ctx = tokio::task::spawn_blocking(move || shared_gpu(allow))
        .await
        .map_err(|e| NodeError::Gpu(e.to_string()))?
        .map_err(NodeError::Gpu)?;
    match &ctx {
        Some(ctx) => tracing::info!(adapter = %ctx.describe(), "GPU runtime available"),
        None if config.runtime == RuntimeMode::Gpu => {
            let hint =
                if allow { "" } else { " (a software adapter is used only with gpu.allow_software = true)" };
            return Err(NodeError::Gpu(format!(
                "runtime = \"gpu\" but there is no usable GPU adapter{hint}"
            )));
        }
        None => tracing::info!("no GPU adapter: models run on tract (CPU)"),
    }
    Ok(ctx)
}

/// A running node.
pub struct NodeHandle {
    pub addr: SocketAddr,
    pub state: Arc<NodeState>,
    /// Ends when the node has stopped (front end drained, background tasks ended).
    pub task: JoinHandle<Result<(), NodeError>>,
}

impl NodeHandle {
    pub fn url(&self) -> String {
        self.state.url.clone()
    }
}

/// Start a node: bind the front end, load the persisted catalog, follow control, report to it.
/// Everything stops when `shutdown` is cancelled: the listener stops accepting, in-flight
/// requests finish, the background tasks end.
pub async fn spawn(config: NodeConfig, shutdown: CancellationToken) -> Result<NodeHandle, NodeError> {
    config.validate().map_err(NodeError::Config)?;
    let store = LocalStore::open(&config.data_dir)
        .map_err(|source| NodeError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let features = FeatureStore::open(config.features.clone(), &config.data_dir.join("features.sled"))
        .map_err(|e| NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            source: std::io::Error::other(e),
        })?;
    let features = Arc::new(features);
    let batch = crate::batch::Batches::open(&config.data_dir, &config.batch).map_err(|e| {
        NodeError::DataDir { path: config.data_dir.display().to_string(), source: std::io::Error::other(e) }
    })?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(NodeError::Serve)?;
    let url = config.advertise_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let results = ResultCache::new(
        config.result_cache_capacity,
        std::time::Duration::from_secs(config.result_cache_ttl_secs),
    );
    let requests = crate::inference::requests::RequestLog::new(
        config.feedback_capacity,
        std::time::Duration::from_secs(config.feedback_window_secs),
    );
    let gpu = open_gpu(&config).await?;
    let auth = crate::auth::Authenticator::new(&config.auth).map_err(|e| NodeError::Config(vec![e]))?;
    if !config.auth.enabled {
        tracing::warn!("auth is off (auth.enabled = false): every request is anonymous with every scope");
    }
    let limits = crate::auth::Limits::new(config.limits.clone());
    let state = Arc::new(NodeState {
        gpu,
        auth,
        limits,
        config,
        url,
        table: ArcSwap::from_pointee(ServingTable::default()),
        metrics: Metrics::default(),
        store,
        features: features.clone(),
        results,
        histograms: Default::default(),
        requests,
        batch,
        shutdown: shutdown.clone(),
    });
    if let Err(e) = state.batch.resume_all(&state) {
        tracing::error!(error = %e, "cannot resume batch jobs");
    }
    let app = crate::serve::router(state.clone());
    let sync = tokio::spawn(crate::sync::follow(state.clone()));
    let heartbeat = tokio::spawn(crate::sync::heartbeat(state.clone()));
    let invalidations = tokio::spawn(features.follow_invalidations(shutdown.clone()));
    let reports = tokio::spawn(crate::sync::report::report(state.clone()));
    tracing::info!(node = %state.config.id, region = %state.config.region, %addr, "node listening");
    let state_for_stop = state.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(NodeError::Serve);
        let _ = sync.await;
        let _ = heartbeat.await;
        let _ = invalidations.await;
        let _ = reports.await;
        // Batch jobs stop at shutdown and resume from their checkpoint at the next start.
        state_for_stop.batch.stopped().await;
        state_for_stop.features.flush().await;
        served
    });
    Ok(NodeHandle { addr, state, task })
}
