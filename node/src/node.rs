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
    /// Where HTTP/3 and the native protocol listen (UDP); `None` without TLS.
    pub quic_addr: Option<SocketAddr>,
    /// One HTTP client for calls to control and peers on the request path (feedback relays),
    /// built once with the trusted CA.
    pub peers: reqwest::Client,
    /// Credentials to principals; its key table follows the catalog.
    pub auth: crate::auth::Authenticator,
    /// Per-key, per-model rate limits.
    pub limits: crate::auth::Limits,
    /// The mesh (membership, catalog from peers, forwarding); `None` without `mesh.listen`.
    pub mesh: Option<crate::mesh::Mesh>,
    /// Set by drain: no new predictions, `/readyz` 503, leaving the mesh.
    pub draining: std::sync::atomic::AtomicBool,
    /// Held while a catalog is adopted: adoptions run one at a time.
    pub adopting: tokio::sync::Mutex<()>,
    /// On-demand models a request asked this node for: loaded at every adoption from then on.
    pub demanded: std::sync::Mutex<std::collections::BTreeSet<String>>,
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
    #[error("TLS: {0}")]
    Tls(#[from] crate::transport::tls::TlsError),
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

/// The bound front doors: TCP (TLS or plaintext) and, with TLS, the QUIC endpoint.
struct Front {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    tls: Option<crate::transport::tls::ServerTls>,
    quic: Option<quinn::Endpoint>,
    quic_addr: Option<SocketAddr>,
    plaintext: bool,
}

impl Front {
    async fn bind(config: &NodeConfig) -> Result<Self, NodeError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| NodeError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(NodeError::Serve)?;
        let tls = crate::transport::tls::ServerTls::load(&config.tls)?;
        let quic = match &tls {
            Some(tls) => {
                let at = config.quic_listen.unwrap_or(addr);
                let bound = crate::transport::quic::bind(at, tls);
                Some(bound.map_err(|source| NodeError::Bind { addr: at, source })?)
            }
            None => None,
        };
        let quic_addr =
            quic.as_ref().map(quinn::Endpoint::local_addr).transpose().map_err(NodeError::Serve)?;
        let plaintext = config.tls.plaintext_http;
        Ok(Self { listener, addr, tls, quic, quic_addr, plaintext })
    }

    /// Serve `app` on every front door until `shutdown`; ends when all have drained.
    async fn serve(
        self,
        state: Arc<NodeState>,
        app: axum::Router,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let tls = self.tcp_tls();
        let limits = crate::transport::tcp::HttpLimits {
            max_connections: state.config.max_connections,
            header_timeout: std::time::Duration::from_millis(state.config.header_timeout_ms),
            body_idle_timeout: std::time::Duration::from_millis(state.config.body_idle_timeout_ms),
        };
        let quic = self.quic.map(|endpoint| {
            tokio::spawn(crate::transport::quic::serve(endpoint, state, app.clone(), shutdown.clone()))
        });
        let tcp_app = match self.quic_addr {
            Some(at) => crate::serve::advertise_h3(app, at.port()),
            None => app,
        };
        let served =
            crate::transport::tcp::serve(self.listener, tls.map(|t| t.tcp), tcp_app, limits, shutdown).await;
        if let Some(quic) = quic {
            let _ = quic.await;
        }
        served
    }

    /// TLS for the TCP listener: none when plaintext HTTP was asked for.
    fn tcp_tls(&self) -> Option<crate::transport::tls::ServerTls> {
        if self.plaintext {
            None
        } else {
            self.tls.clone()
        }
    }
}

/// A running node.
pub struct NodeHandle {
    pub addr: SocketAddr,
    /// The QUIC endpoint's address (HTTP/3 and native), when the node has TLS.
    pub quic_addr: Option<SocketAddr>,
    pub state: Arc<NodeState>,
    /// Ends when the node has stopped (front end drained, background tasks ended).
    pub task: JoinHandle<Result<(), NodeError>>,
}

impl NodeHandle {
    pub fn url(&self) -> String {
        self.state.url.clone()
    }
}

/// The one-row result cache and the log of requests kept for feedback.
fn caches(config: &NodeConfig) -> (ResultCache, crate::inference::requests::RequestLog) {
    let results = ResultCache::new(
        config.result_cache_capacity,
        std::time::Duration::from_secs(config.result_cache_ttl_secs),
    );
    let requests = crate::inference::requests::RequestLog::new(
        config.feedback_capacity,
        std::time::Duration::from_secs(config.feedback_window_secs),
    );
    (results, requests)
}

/// The node's background loops (each ends at shutdown): the catalog (from control, or from
/// the mesh), the mesh's own loops, heartbeats, feature invalidations, latency reports.
fn start_background(state: &Arc<NodeState>, features: &Arc<FeatureStore>) -> Vec<JoinHandle<()>> {
    let follow = if state.mesh.is_some() {
        tokio::spawn(crate::mesh::tasks::follow(state.clone()))
    } else {
        tokio::spawn(crate::sync::follow(state.clone()))
    };
    vec![
        follow,
        tokio::spawn(crate::mesh::tasks::publish_control(state.clone())),
        tokio::spawn(crate::mesh::tasks::publish_info(state.clone())),
        tokio::spawn(crate::mesh::tasks::watch_members(state.clone())),
        tokio::spawn(crate::mesh::tasks::leave_on_shutdown(state.clone())),
        tokio::spawn(crate::sync::heartbeat(state.clone())),
        tokio::spawn(features.clone().follow_invalidations(state.shutdown.clone())),
        tokio::spawn(crate::sync::report::report(state.clone())),
    ]
}

/// Start a node: bind the front end, load the persisted catalog, follow control, report to it.
/// Everything stops when `shutdown` is cancelled: the listener stops accepting, in-flight
/// requests finish, the background tasks end.
pub async fn spawn(config: NodeConfig, shutdown: CancellationToken) -> Result<NodeHandle, NodeError> {
    config.validate().map_err(NodeError::Config)?;
    let data_error = |e: String| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        source: std::io::Error::other(e),
    };
    let store = LocalStore::open(&config.data_dir).map_err(|e| data_error(e.to_string()))?;
    let features = FeatureStore::open(config.features.clone(), &config.data_dir.join("features.sled"))
        .map_err(|e| data_error(e.to_string()))?;
    let features = Arc::new(features);
    let batch = crate::batch::Batches::open(&config.data_dir, &config.batch)
        .map_err(|e| data_error(e.to_string()))?;
    let front = Front::bind(&config).await?;
    let (addr, quic_addr) = (front.addr, front.quic_addr);
    let scheme = if front.tcp_tls().is_some() { "https" } else { "http" };
    let url = config.advertise_url.clone().unwrap_or_else(|| format!("{scheme}://{addr}"));
    let (results, requests) = caches(&config);
    let gpu = open_gpu(&config).await?;
    let auth = crate::auth::Authenticator::new(&config.auth).map_err(|e| NodeError::Config(vec![e]))?;
    if !config.auth.enabled {
        tracing::warn!("auth is off (auth.enabled = false): every request is anonymous with every scope");
    }
    let limits = crate::auth::Limits::new(config.limits.clone());
    let peers = config
        .http_client()
        .connect_timeout(std::time::Duration::from_secs(2))
        .build()
        .map_err(|e| NodeError::Config(vec![format!("HTTP client: {e}")]))?;
    let mesh = crate::mesh::start(&config).await?;
    let state = Arc::new(NodeState {
        mesh,
        draining: Default::default(),
        adopting: Default::default(),
        demanded: Default::default(),
        gpu,
        quic_addr,
        peers,
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
    let background = start_background(&state, &features);
    tracing::info!(
        node = %state.config.id, region = %state.config.region, %addr, quic = ?quic_addr,
        mesh = ?state.mesh.as_ref().map(|m| m.handle.addr()),
        tls = front.tcp_tls().is_some(), "node listening"
    );
    let serving = tokio::spawn(front.serve(state.clone(), app, shutdown.clone()));
    let state_for_stop = state.clone();
    let task = tokio::spawn(async move {
        let served =
            serving.await.unwrap_or_else(|e| Err(std::io::Error::other(e))).map_err(NodeError::Serve);
        for task in background {
            let _ = task.await;
        }
        // Batch jobs stop at shutdown and resume from their checkpoint at the next start.
        state_for_stop.batch.stopped().await;
        state_for_stop.features.flush().await;
        served
    });
    Ok(NodeHandle { addr, quic_addr, state, task })
}
