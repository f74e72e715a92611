//! Starting and stopping the control service.

use meridian_node::transport::tcp::{self, HttpLimits};
use std::net::SocketAddr;
use std::sync::Arc;

use meridian_node::transport::tls::ServerTls;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{router, ControlState};
use crate::config::ControlConfig;
use crate::directory::Directory;
use crate::registry::{Registry, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("cannot open the registry in {path}: {source}")]
    Registry { path: String, source: RegistryError },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("auth: {0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(#[from] meridian_node::transport::tls::TlsError),
}

/// A running control service.
pub struct ControlHandle {
    pub addr: SocketAddr,
    /// Whether the API is served over TLS (`https://`).
    pub tls: bool,
    /// Control's public catalog-signing key, hex: nodes list it in `mesh.control_keys`.
    pub public_key: String,
    pub task: JoinHandle<Result<(), ControlError>>,
}

impl ControlHandle {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

/// Open the registry, bind and serve until `shutdown` is cancelled; in-flight requests finish.
pub async fn spawn(
    config: ControlConfig,
    shutdown: CancellationToken,
) -> Result<ControlHandle, ControlError> {
    config.validate().map_err(ControlError::Config)?;
    let registry_error =
        |source| ControlError::Registry { path: config.data_dir.display().to_string(), source };
    let registry = Registry::open(&config.data_dir).map_err(registry_error)?;
    crate::api::auth::ensure_admin_key(&config, &registry).map_err(registry_error)?;
    let catalog = registry.catalog().map_err(registry_error)?;
    let auth = crate::api::auth::authenticator(&config, &catalog).map_err(ControlError::Auth)?;
    if !config.auth.enabled {
        tracing::warn!("control auth is off (auth.enabled = false): anyone reaching it can operate it");
    }
    let signing = crate::signing::load_or_create(&config).map_err(|e| ControlError::Config(vec![e]))?;
    let public_key = signing.public().to_hex();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ControlError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(ControlError::Serve)?;
    let tls = if config.tls.plaintext_http { None } else { ServerTls::load(&config.tls)? };
    let (catalog_tx, _) = watch::channel(catalog);
    let state = Arc::new(ControlState {
        config,
        registry,
        catalog: catalog_tx,
        directory: Directory::default(),
        sink: Default::default(),
        shutdown: shutdown.clone(),
        auth,
        signing,
        signed: Default::default(),
    });
    let rollouts = crate::rollout::driver::drive(
        state.clone(),
        std::time::Duration::from_millis(state.config.rollout_tick_ms),
    );
    let rollouts = tokio::spawn(rollouts);
    let held = state.clone();
    let app = router(state);
    tracing::info!(%addr, tls = tls.is_some(), "control listening");
    let https = tls.is_some();
    // The task ends when everything holding the registry has stopped, so the next control can
    // open the same data directory at once.
    let task = tokio::spawn(async move {
        let served = match tls {
            Some(tls) => tcp::serve(listener, Some(tls.tcp), app, HttpLimits::default(), shutdown).await,
            None => tcp::serve(listener, None, app, HttpLimits::default(), shutdown).await,
        }
        .map_err(ControlError::Serve);
        let _ = rollouts.await;
        release(held).await;
        served
    });
    Ok(ControlHandle { addr, tls: https, public_key, task })
}

/// Wait (bounded) until nothing else holds the state — a connection task finishing, a registry
/// operation on a blocking thread — so the registry's sled lock is released when `spawn`'s task
/// ends and a new control can open the same directory at once.
async fn release(state: Arc<ControlState>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while Arc::strong_count(&state) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
