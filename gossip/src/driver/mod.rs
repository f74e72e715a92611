//! The QUIC driver of the mesh core (feature `driver`, on by default): one quinn endpoint per
//! node, server and client on the same UDP socket, mutual TLS 1.3 with the mesh CA
//! ([`tls`]), ALPN `meridian-mesh/1`.
//!
//! - SWIM packets and anti-entropy summaries travel as QUIC datagrams on a connection cached
//!   per peer address (opened on first send, with a timeout; reused in both directions).
//! - Pulls travel on a bidirectional stream each: the puller writes its request (≤ 64 KiB)
//!   and finishes; the server answers with `MeshCore::serve_pull` (≤ 64 MiB) and finishes.
//! - The core runs on one tokio task ([`MeshDriver::start`]); everything else talks to it
//!   through a [`MeshHandle`]. Every network wait has a timeout; bad input is counted
//!   ([`DriverCounters`]) or handed to the core, which counts it; nothing panics.
//!
//! How a node uses it: build a [`DriverConfig`] (node id, region, generation = unix seconds
//! at start, listen address, seeds, [`MeshTls`]) and call [`MeshDriver::start`] inside the
//! runtime with the control keys' [`Verifier`]. Publish what control sends with
//! [`MeshHandle::publish_catalog`] / [`MeshHandle::publish_revocation`]; report the node's own
//! state with [`MeshHandle::set_local_info`]; react to [`MeshHandle::subscribe`] events
//! (`CatalogAdopted`: apply it; `KeysRevoked`: refuse those keys; `MemberUp`/`MemberDown`:
//! routing); read [`MeshHandle::members`] for `/api/v1/mesh/nodes`; call
//! [`MeshHandle::leave`] on shutdown.

mod net;
mod runner;
pub mod tls;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::mesh::{
    AdoptedCatalog, Counters, Event, InfoRecord, MeshConfig, Rejection, SignedCatalog, SignedRevocation,
    Verifier,
};
use crate::NodeInfo;
pub use net::DriverCounters;
pub use tls::{MeshTls, TlsError, ALPN_MESH};

/// Largest SWIM datagram that fits a QUIC datagram frame in QUIC's minimum 1,200-byte packet
/// (~1,162 bytes with 8-byte connection ids). Larger ones wait for path MTU discovery or are
/// dropped (counted as `datagrams_too_large`).
pub const MAX_QUIC_DATAGRAM: usize = 1_150;

/// Everything the driver needs but the control keys.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub node: String,
    pub region: String,
    /// Bump on every restart (unix seconds at start-up) so the new process wins over its
    /// previous life.
    pub generation: u32,
    /// UDP address of the mesh endpoint; port 0 lets the OS choose (see `advertise`).
    pub listen: SocketAddr,
    /// The address peers reach this node at. `None`: the bound address, which must then not
    /// be unspecified (0.0.0.0 / ::).
    pub advertise: Option<SocketAddr>,
    /// Mesh addresses of a few nodes to join through (ours is skipped).
    pub seeds: Vec<SocketAddr>,
    pub mesh: MeshConfig,
    pub tls: MeshTls,
    /// Name checked in peers' server certificates. `None`: the peer's IP address (mesh
    /// certificates carry their node's IP address as a SAN); `Some(name)`: every mesh
    /// certificate carries this DNS name.
    pub server_name: Option<String>,
    /// Handshake deadline for a new connection to a peer.
    pub connect_timeout: Duration,
    /// A connection silent this long is closed (keep-alives keep live peers' open).
    pub idle_timeout: Duration,
    /// Keep-alive interval of every connection. Connections stay open to every peer this
    /// node has talked to, so that a SWIM probe never waits for a handshake (which would eat
    /// `probe_rtt` on long routes); each costs one small packet per interval.
    pub keep_alive: Duration,
    /// On leave: how long to wait for the goodbye to go out and connections to close.
    pub leave_grace: Duration,
    /// Seed of the core's RNG; `None`: derived from node id, address and generation.
    pub rng_seed: Option<u64>,
    /// Capacity of the event channel ([`MeshHandle::subscribe`]); a slow subscriber lags.
    pub event_capacity: usize,
}

impl DriverConfig {
    /// Defaults for a WAN mesh of ~100 nodes (`MeshConfig::wan`, its datagrams capped at
    /// [`MAX_QUIC_DATAGRAM`]); set `seeds`, and `mesh` for other sizes or `MeshConfig::lan`.
    pub fn new(node: &str, region: &str, generation: u32, listen: SocketAddr, tls: MeshTls) -> Self {
        let mut mesh = MeshConfig::wan(100);
        mesh.max_datagram = mesh.max_datagram.min(MAX_QUIC_DATAGRAM);
        Self {
            node: node.to_string(),
            region: region.to_string(),
            generation,
            listen,
            advertise: None,
            seeds: Vec::new(),
            mesh,
            tls,
            server_name: None,
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(10),
            leave_grace: Duration::from_millis(500),
            rng_seed: None,
            event_capacity: 1_024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("mesh TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("mesh endpoint on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("mesh config: {}", .0.join("; "))]
    Config(Vec<String>),
}

/// Why a handle call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("the mesh driver has stopped")]
    Stopped,
}

/// A member's SWIM state as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
}

/// One member of the mesh (never this node) as this node sees it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub node: String,
    pub addr: SocketAddr,
    pub region: String,
    pub generation: u32,
    pub state: MemberState,
    /// QUIC's smoothed RTT estimate, while a connection to the member is open.
    pub rtt: Option<Duration>,
    /// The member's latest info, once it has published one.
    pub info: Option<Arc<InfoRecord>>,
}

/// The core's counters and the driver's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshCounters {
    pub core: Counters,
    pub driver: DriverCounters,
}

pub(crate) enum Command {
    PublishCatalog(Box<SignedCatalog>, oneshot::Sender<Result<u64, Rejection>>),
    PublishRevocation(SignedRevocation, oneshot::Sender<Result<u64, Rejection>>),
    SetLocalInfo(Box<NodeInfo>),
    Members(oneshot::Sender<Vec<MemberView>>),
    NodeInfos(oneshot::Sender<Vec<Arc<InfoRecord>>>),
    RevokedKeys(oneshot::Sender<Vec<String>>),
    Counters(oneshot::Sender<MeshCounters>),
    SetBlocked(HashSet<SocketAddr>),
    Leave(oneshot::Sender<()>),
}

/// Talks to a running driver. Cheap to clone.
#[derive(Clone)]
pub struct MeshHandle {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    catalog: watch::Receiver<Option<Arc<AdoptedCatalog>>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for MeshHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MeshHandle({})", self.addr)
    }
}

impl MeshHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| MeshError::Stopped)?;
        rx.await.map_err(|_| MeshError::Stopped)
    }

    async fn tell(&self, command: Command) -> Result<(), MeshError> {
        self.commands.send(command).await.map_err(|_| MeshError::Stopped)
    }

    /// The address peers reach this node at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Publish a catalog signed by control into the mesh; its epoch once adopted, or why not.
    pub async fn publish_catalog(&self, signed: SignedCatalog) -> Result<u64, MeshError> {
        Ok(self.ask(|tx| Command::PublishCatalog(Box::new(signed), tx)).await??)
    }

    /// Publish a revocation batch signed by control; its serial once accepted.
    pub async fn publish_revocation(&self, signed: SignedRevocation) -> Result<u64, MeshError> {
        Ok(self.ask(|tx| Command::PublishRevocation(signed, tx)).await??)
    }

    /// This node's info changed (coalesced by the core to `info_min_interval`).
    pub async fn set_local_info(&self, info: NodeInfo) -> Result<(), MeshError> {
        self.tell(Command::SetLocalInfo(Box::new(info))).await
    }

    /// Every member this node knows (not itself), with state, RTT and info.
    pub async fn members(&self) -> Result<Vec<MemberView>, MeshError> {
        self.ask(Command::Members).await
    }

    /// Every node info this node holds (its own included).
    pub async fn node_infos(&self) -> Result<Vec<Arc<InfoRecord>>, MeshError> {
        self.ask(Command::NodeInfos).await
    }

    pub async fn revoked_keys(&self) -> Result<Vec<String>, MeshError> {
        self.ask(Command::RevokedKeys).await
    }

    pub async fn counters(&self) -> Result<MeshCounters, MeshError> {
        self.ask(Command::Counters).await
    }

    /// The catalog this node holds (the newest it verified), without waiting.
    pub fn catalog(&self) -> Option<Arc<AdoptedCatalog>> {
        self.catalog.borrow().clone()
    }

    /// A receiver that sees every catalog this node adopts.
    pub fn watch_catalog(&self) -> watch::Receiver<Option<Arc<AdoptedCatalog>>> {
        self.catalog.clone()
    }

    /// What changes from now on: members up, suspect, down; catalogs adopted; keys revoked;
    /// node infos changed.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Fault hook (tests): drop datagrams to and from these peers and refuse pulls to and
    /// from them, as if the network between them and this node were cut. Replaces the set.
    pub async fn set_blocked(&self, addrs: HashSet<SocketAddr>) -> Result<(), MeshError> {
        self.tell(Command::SetBlocked(addrs)).await
    }

    /// Leave gracefully (peers mark this node down at once), close the endpoint and stop the
    /// driver. Returns when done; a stopped driver is already gone.
    pub async fn leave(&self) {
        let _ = self.ask(Command::Leave).await;
    }
}

/// Starts drivers.
#[derive(Debug)]
pub struct MeshDriver;

impl MeshDriver {
    /// Bind the mesh endpoint, join through `config.seeds` and run the core on a new task
    /// (call inside a tokio runtime). Catalogs and revocations must verify with `verifier`.
    /// Aborting the returned task stops the node's mesh at once (no goodbye), as a crash would.
    pub fn start(
        config: DriverConfig,
        verifier: Verifier,
    ) -> Result<(MeshHandle, JoinHandle<()>), DriverError> {
        let transport = Arc::new(tls::transport(config.idle_timeout, config.keep_alive));
        let (server, client) = config.tls.quinn_configs(transport)?;
        let bind = |source| DriverError::Bind { addr: config.listen, source };
        let mut endpoint = quinn::Endpoint::server(server, config.listen).map_err(bind)?;
        endpoint.set_default_client_config(client);
        let bound = endpoint.local_addr().map_err(bind)?;
        let addr = config.advertise.unwrap_or(bound);
        if addr.ip().is_unspecified() {
            return Err(DriverError::Config(vec![format!(
                "listening on {bound}: set `advertise` to the address peers reach this node at"
            )]));
        }
        if config.mesh.max_datagram > MAX_QUIC_DATAGRAM {
            tracing::warn!(
                max_datagram = config.mesh.max_datagram,
                "mesh: datagrams above {MAX_QUIC_DATAGRAM} bytes are dropped until path MTU discovery allows them"
            );
        }
        let (commands, commands_rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(config.event_capacity.max(16));
        let (catalog_tx, catalog) = watch::channel(None);
        let runner = runner::Runner::new(config, addr, verifier, endpoint, events.clone(), catalog_tx)
            .map_err(DriverError::Config)?;
        let task = tokio::spawn(runner.run(commands_rx));
        Ok((MeshHandle { commands, events, catalog, addr }, task))
    }
}
