//! The node in the mesh: it runs the gossip driver (`meridian_gossip::driver`) beside its
//! front doors, adopts every catalog the mesh verified, publishes control's signed catalogs and
//! its own info into it, answers `GET /api/v1/mesh/nodes`, and forwards requests for models it
//! does not hold to the nearest peer that does ([`forward`]).
//!
//! - [`settings`]: `[mesh]` in the node's config.
//! - [`forward`]: routing a request to the nearest live peer with the model warm.
//! - [`relay`]: the same for native-protocol streams.
//! - [`tasks`]: the background loops (catalog adoption, control → mesh, node info, events).
//!
//! Without `mesh.listen` none of this runs and the node follows control as before.

pub mod forward;
pub mod relay;
pub mod settings;
pub mod tasks;

use std::time::Duration;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use meridian_gossip::driver::{DriverConfig, MemberState, MemberView, MeshDriver, MeshHandle, MeshTls};
use meridian_gossip::mesh::{ControlPublicKey, MeshConfig, Verifier};
use meridian_gossip::{MemberStatus, MeshNode, MeshView};
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::node::{NodeError, NodeState};
use settings::MeshProfile;

/// A node's running mesh: the driver's handle and task, and what routing keeps of it.
pub struct Mesh {
    pub handle: MeshHandle,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The members as last asked of the driver, and when (see [`Mesh::members`]).
    members: std::sync::Mutex<Option<(tokio::time::Instant, Arc<Vec<MemberView>>)>>,
    /// The members as they were when this node left after a drain: its view keeps showing
    /// them, so a client that asks it still finds the rest of the mesh.
    pub(crate) parting: std::sync::Mutex<Option<Vec<MemberView>>>,
    /// HTTP/3 connections to peers for forwarding.
    pub(crate) h3: Links<crate::client::H3Client>,
    /// Native-protocol connections to peers for relaying streams.
    pub(crate) native: Links<crate::client::NativeClient>,
}

/// How long one members snapshot serves routing (forwards, artifact sources).
const MEMBERS_TTL: Duration = Duration::from_millis(200);
/// After a failed connect to a peer, it is not tried again on that link for this long.
const LINK_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Connections kept to peers, by the peer's QUIC address, with failed connects remembered.
pub(crate) struct Links<C> {
    map: tokio::sync::Mutex<HashMap<SocketAddr, Link<C>>>,
}

enum Link<C> {
    Up(C),
    Failed(tokio::time::Instant),
}

impl<C> Default for Links<C> {
    fn default() -> Self {
        Self { map: tokio::sync::Mutex::new(HashMap::new()) }
    }
}

impl<C: Clone> Links<C> {
    /// The link to `addr`: the one kept, or a new one from `connect` (bounded by `timeout`);
    /// an error while a connect to it failed in the last [`LINK_RETRY_AFTER`].
    pub(crate) async fn get<Fut, E>(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        connect: Fut,
    ) -> Result<C, String>
    where
        Fut: std::future::Future<Output = Result<C, E>>,
        E: std::fmt::Display,
    {
        match self.map.lock().await.get(&addr) {
            Some(Link::Up(c)) => return Ok(c.clone()),
            Some(Link::Failed(at)) if at.elapsed() < LINK_RETRY_AFTER => {
                return Err(format!("a connect to {addr} failed {:?} ago", at.elapsed()))
            }
            _ => {}
        }
        let connected = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection to {addr} within {timeout:?}")),
        };
        let link = match &connected {
            Ok(c) => Link::Up(c.clone()),
            Err(_) => Link::Failed(tokio::time::Instant::now()),
        };
        self.map.lock().await.insert(addr, link);
        connected
    }

    /// Drop the link to `addr` (it broke); the next use connects again.
    pub(crate) async fn forget(&self, addr: SocketAddr) {
        self.map.lock().await.remove(&addr);
    }
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mesh({})", self.handle.addr())
    }
}

impl Mesh {
    /// The members this node knows, at most [`MEMBERS_TTL`] old: routing decides per request,
    /// and asking the driver task each time would queue every request behind its gossip work.
    pub async fn members(&self) -> Arc<Vec<MemberView>> {
        if let Some((at, members)) = self.members.lock().ok().and_then(|m| m.clone()) {
            if at.elapsed() < MEMBERS_TTL {
                return members;
            }
        }
        let members = Arc::new(self.handle.members().await.unwrap_or_default());
        if let Ok(mut cached) = self.members.lock() {
            *cached = Some((tokio::time::Instant::now(), members.clone()));
        }
        members
    }

    /// Stop the driver without a goodbye, as a crash would (tests of failure detection).
    pub fn abort(&self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }
}

/// The seeds' addresses: each `host:port` resolved (a name that does not resolve is logged
/// and skipped: the node joins through the others, or waits to be found).
async fn resolve_seeds(seeds: &[String]) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for seed in seeds {
        let lookup = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host(seed.as_str()));
        match lookup.await {
            Ok(Ok(addrs)) => out.extend(addrs),
            Ok(Err(e)) => tracing::warn!(seed, error = %e, "mesh seed does not resolve"),
            Err(_) => tracing::warn!(seed, "mesh seed: DNS timed out"),
        }
    }
    out
}

/// The driver's settings from the node's config.
async fn driver_config(config: &NodeConfig) -> Result<Option<DriverConfig>, NodeError> {
    let settings = &config.mesh;
    let Some(listen) = settings.listen else { return Ok(None) };
    let (cert, key, ca) = settings.files(config);
    let (Some(cert), Some(key), Some(ca)) = (cert, key, ca) else {
        return Err(NodeError::Config(settings.problems(config)));
    };
    let tls = MeshTls::from_files(&cert, &key, &ca)
        .map_err(|e| NodeError::Config(vec![format!("mesh certificate: {e}")]))?;
    // Generations order a node's lives: seconds since the epoch outlive any restart loop.
    let generation = (crate::features::row::unix_ms() / 1_000) as u32;
    let mut driver = DriverConfig::new(&config.id, &config.region, generation, listen, tls);
    driver.advertise = settings.advertise;
    driver.seeds = resolve_seeds(&settings.seeds).await;
    driver.server_name = settings.server_name.clone();
    let mut mesh = match settings.profile {
        MeshProfile::Wan => MeshConfig::wan(settings.expected_nodes),
        MeshProfile::Lan => MeshConfig::lan(settings.expected_nodes),
    };
    mesh.max_datagram = mesh.max_datagram.min(meridian_gossip::driver::MAX_QUIC_DATAGRAM);
    driver.mesh = mesh;
    Ok(Some(driver))
}

/// Start the mesh driver when the config asks for one (inside the runtime).
pub async fn start(config: &NodeConfig) -> Result<Option<Mesh>, NodeError> {
    let Some(driver) = driver_config(config).await? else { return Ok(None) };
    let keys = config
        .mesh
        .control_keys
        .iter()
        .map(|k| ControlPublicKey::from_hex(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NodeError::Config(vec![format!("mesh.control_keys: {e}")]))?;
    let (handle, task) = MeshDriver::start(driver, Verifier::new(keys)).map_err(|e| match e {
        meridian_gossip::driver::DriverError::Bind { addr, source } => NodeError::Bind { addr, source },
        other => NodeError::Config(vec![other.to_string()]),
    })?;
    tracing::info!(addr = %handle.addr(), seeds = ?config.mesh.seeds, "mesh endpoint up");
    Ok(Some(Mesh {
        handle,
        task: std::sync::Mutex::new(Some(task)),
        members: Default::default(),
        parting: Default::default(),
        h3: Links::default(),
        native: Links::default(),
    }))
}

fn status(state: MemberState) -> MemberStatus {
    match state {
        MemberState::Alive => MemberStatus::Alive,
        MemberState::Suspect => MemberStatus::Suspect,
        MemberState::Down => MemberStatus::Down,
    }
}

/// `GET /api/v1/mesh/nodes`: this node and every member it knows (the latest generation of
/// each node id), sorted by region then id.
pub async fn view(state: &NodeState) -> MeshView {
    let me = crate::sync::node_info(state);
    let mut nodes = vec![MeshNode {
        id: me.id.clone(),
        region: me.region.clone(),
        state: MemberStatus::Alive,
        is_self: true,
        mesh_addr: state.mesh.as_ref().map(|m| m.handle.addr().to_string()),
        rtt_ms: None,
        info: Some(me.clone()),
    }];
    if let Some(mesh) = &state.mesh {
        let parted = mesh.parting.lock().ok().and_then(|p| p.clone());
        let mut members = match parted {
            Some(members) => members,
            None => (*mesh.members().await).clone(),
        };
        members.sort_by(|a, b| (&a.node, b.generation).cmp(&(&b.node, a.generation)));
        members.dedup_by(|later, first| later.node == first.node);
        nodes.extend(members.into_iter().filter(|m| m.node != me.id).map(|m| MeshNode {
            id: m.node,
            region: m.region,
            state: status(m.state),
            is_self: false,
            mesh_addr: Some(m.addr.to_string()),
            rtt_ms: m.rtt.map(|d| d.as_secs_f64() * 1e3),
            info: m.info.map(|r| r.info.clone()),
        }));
    }
    nodes.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
    MeshView { node: me.id, mesh: state.mesh.is_some(), catalog_epoch: me.catalog_epoch, nodes }
}

/// Bring the mesh's metrics up to date (at each scrape): members by state, and the core's and
/// driver's counters as `meridian_mesh_events_total{event}`.
pub async fn export_metrics(state: &NodeState) {
    let Some(mesh) = &state.mesh else { return };
    let members = mesh.handle.members().await.unwrap_or_default();
    for (label, want) in
        [("alive", MemberState::Alive), ("suspect", MemberState::Suspect), ("down", MemberState::Down)]
    {
        let n = members.iter().filter(|m| m.state == want).count();
        let labels = crate::telemetry::metrics::StateLabels { state: label };
        state.metrics.mesh_members.get_or_create(&labels).set(n as i64);
    }
    let Ok(counters) = mesh.handle.counters().await else { return };
    let fields = |v: serde_json::Result<serde_json::Value>| match v {
        Ok(serde_json::Value::Object(map)) => map.into_iter().collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    let all = fields(serde_json::to_value(counters.core))
        .into_iter()
        .chain(fields(serde_json::to_value(counters.driver)));
    state.metrics.mesh_counters(all.filter_map(|(k, v)| Some((k, v.as_u64()?))));
}

/// Whether a request for `model` should look for a peer: this node does not hold it, and its
/// catalog lists it (or it has no catalog yet). A name the catalog does not know gets the
/// handler's 404 here.
pub fn wants_peer(state: &NodeState, model: &str) -> bool {
    let table = state.table.load();
    !table.models.contains_key(model) && (!table.has_catalog || table.catalog.models.contains_key(model))
}

/// How long a forward or relay waits for a new connection to a peer.
pub(crate) fn connect_timeout(state: &NodeState) -> Duration {
    Duration::from_millis(state.config.request_timeout_ms.min(5_000))
}

/// A peer a request may go to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub id: String,
    pub url: String,
    /// Its HTTP/3 endpoint, when it has one (forwarding prefers it).
    pub quic: Option<std::net::SocketAddr>,
    pub rtt: Option<Duration>,
    /// Its info says it holds the model warm (else placement only expects it to).
    pub warm: bool,
}

/// Where a request for `model` may go: live peers taking traffic that hold its live version
/// warm or sit in a region it is placed in. Infos lag the catalog by up to
/// `info_min_interval`, so a peer that is both (by its info and by this node's catalog) comes
/// first, then one whose info alone says so (placement may just have moved the model away),
/// then one placement alone expects (it may not have loaded it yet); nearest first within each
/// (by QUIC's RTT estimate; this node's region first when RTTs are unknown).
pub async fn targets(state: &NodeState, model: &str) -> Vec<Target> {
    let Some(mesh) = &state.mesh else { return Vec::new() };
    let members = mesh.members().await;
    let placement = state.table.load().catalog.placement(model);
    let region = &state.config.region;
    let mut found: Vec<(u8, bool, Target)> = members
        .iter()
        .filter(|m| m.state == MemberState::Alive && m.node != state.config.id)
        .filter_map(|m| {
            let info = &m.info.as_ref()?.info;
            let warm = info.models.iter().any(|l| l.name == model && l.live && l.warm);
            let placed = placement.preloads(&m.region);
            let rank = match (warm, placed) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => return None,
            };
            (!info.draining && !info.http_url.is_empty()).then(|| {
                let quic = info.quic_addr.as_deref().and_then(|a| a.parse::<SocketAddr>().ok());
                let quic = quic.filter(|a| !a.ip().is_unspecified());
                let target =
                    Target { id: m.node.clone(), url: info.http_url.clone(), quic, rtt: m.rtt, warm };
                (rank, m.region == *region, target)
            })
        })
        .collect();
    found.sort_by(|(rank_a, local_a, a), (rank_b, local_b, b)| {
        let rtt = |t: &Target| t.rtt.unwrap_or(Duration::MAX);
        (rank_a, rtt(a), !local_a, &a.id).cmp(&(rank_b, rtt(b), !local_b, &b.id))
    });
    found.into_iter().map(|(_, _, t)| t).collect()
}

/// Where to fetch the artifact of `name` v`version`, nearest first: peers whose info says they
/// hold it, then other live peers (one that adopted the catalog may have it on disk before its
/// info says so; a miss is a quick 404). Used when control is far or down.
pub async fn artifact_sources(state: &NodeState, name: &str, version: u32) -> Vec<String> {
    let Some(mesh) = &state.mesh else { return Vec::new() };
    let members = mesh.members().await;
    let mut members: Vec<&MemberView> =
        members.iter().filter(|m| m.state == MemberState::Alive && m.node != state.config.id).collect();
    members.sort_by_key(|m| m.rtt.unwrap_or(Duration::MAX));
    let (mut holders, mut others) = (Vec::new(), Vec::new());
    for m in members {
        let Some(record) = &m.info else { continue };
        let info = &record.info;
        if info.http_url.is_empty() {
            continue;
        }
        let holds = info.models.iter().any(|l| l.name == name && l.version == version);
        if holds { &mut holders } else { &mut others }.push(info.http_url.clone());
    }
    holders.extend(others);
    holders
}
