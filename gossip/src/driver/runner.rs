//! The core task: owns the `MeshCore`, its timers and the connection cache, and is the only
//! one that touches them. It wakes on a command from a handle, a message from a network task
//! or a due timer, feeds the core, then carries out what the core asked for.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn::{Connection, Endpoint, SendDatagramError};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::net::{self, Net, NetCtx, Stats};
use super::{Command, DriverConfig, MemberState, MemberView, MeshCounters};
use crate::mesh::{shared_interner, AdoptedCatalog, Event, LocalNode, MeshCore, Output, Timer, Verifier};

/// Most datagrams and pulls queued for a peer while its connection is being opened.
const MAX_QUEUED: usize = 64;

enum Peer {
    Up(Connection),
    Connecting { datagrams: Vec<Bytes>, pulls: Vec<(u64, Vec<u8>)> },
}

pub(crate) struct Runner {
    core: MeshCore<SmallRng>,
    start: Instant,
    /// Due time, then the timer's own order: simultaneous timers fire in `Ord` order.
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    peers: HashMap<SocketAddr, Peer>,
    blocked: HashSet<SocketAddr>,
    endpoint: Endpoint,
    ctx: NetCtx,
    net_rx: Option<mpsc::Receiver<Net>>,
    events: broadcast::Sender<Event>,
    catalog: watch::Sender<Option<Arc<AdoptedCatalog>>>,
    seeds: Vec<SocketAddr>,
    leave_grace: std::time::Duration,
}

fn seed_from(config: &DriverConfig, addr: SocketAddr) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&config.node, addr, config.generation).hash(&mut h);
    h.finish()
}

impl Runner {
    pub(crate) fn new(
        config: DriverConfig,
        addr: SocketAddr,
        verifier: Verifier,
        endpoint: Endpoint,
        events: broadcast::Sender<Event>,
        catalog: watch::Sender<Option<Arc<AdoptedCatalog>>>,
    ) -> Result<Self, Vec<String>> {
        let local = LocalNode {
            node: config.node.clone(),
            addr,
            region: config.region.clone(),
            generation: config.generation,
        };
        let rng = SmallRng::seed_from_u64(config.rng_seed.unwrap_or_else(|| seed_from(&config, addr)));
        let core = MeshCore::new(&local, config.mesh.clone(), verifier, rng, shared_interner())?;
        let (tx, net_rx) = mpsc::channel(4_096);
        let ctx = NetCtx {
            tx,
            stats: Arc::new(Stats::default()),
            cancel: CancellationToken::new(),
            connect_timeout: config.connect_timeout,
            pull_timeout: config.mesh.pull_timeout,
            server_name: config.server_name.clone(),
        };
        Ok(Self {
            core,
            start: Instant::now(),
            timers: BinaryHeap::new(),
            peers: HashMap::new(),
            blocked: HashSet::new(),
            endpoint,
            ctx,
            net_rx: Some(net_rx),
            events,
            catalog,
            seeds: config.seeds,
            leave_grace: config.leave_grace,
        })
    }

    fn now(&self) -> std::time::Duration {
        self.start.elapsed()
    }

    /// The task: until leave, until every handle is dropped, or until aborted. However it
    /// ends, the network tasks stop and the endpoint closes (the drop guard).
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let _stop_network = self.ctx.cancel.clone().drop_guard();
        let Some(mut net_rx) = self.net_rx.take() else { return };
        tokio::spawn(net::accept_loop(self.endpoint.clone(), self.ctx.clone()));
        let now = self.now();
        let seeds = std::mem::take(&mut self.seeds);
        self.core.join(&seeds, now);
        self.flush();
        loop {
            let next = self.timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Leave(done)) => {
                        self.leave(&mut net_rx).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(msg) = net_rx.recv() => self.net(msg),
                () = sleep_opt(next) => self.fire_timers(),
            }
            self.flush();
        }
        self.endpoint.close(quinn::VarInt::from_u32(0), b"stopped");
    }

    fn command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::PublishCatalog(signed, reply) => {
                let _ = reply.send(self.core.publish_catalog(&signed, now));
            }
            Command::PublishRevocation(signed, reply) => {
                let _ = reply.send(self.core.publish_revocation(&signed, now));
            }
            Command::SetLocalInfo(info) => self.core.set_local_info(*info, now),
            Command::Members(reply) => {
                let _ = reply.send(self.members());
            }
            Command::NodeInfos(reply) => {
                let _ = reply.send(self.core.node_infos());
            }
            Command::RevokedKeys(reply) => {
                let _ = reply.send(self.core.revoked_keys().into_iter().collect());
            }
            Command::Counters(reply) => {
                let counters = MeshCounters { core: self.core.counters(), driver: self.ctx.stats.snapshot() };
                let _ = reply.send(counters);
            }
            Command::SetBlocked(blocked) => self.blocked = blocked,
            Command::Leave(_) => {}
        }
    }

    fn members(&self) -> Vec<MemberView> {
        self.core
            .members()
            .map(|m| {
                let id = m.id();
                let rtt = match self.peers.get(&id.addr()) {
                    Some(Peer::Up(conn)) if conn.close_reason().is_none() => Some(conn.rtt()),
                    _ => None,
                };
                let state = match m.state() {
                    foca::State::Alive => MemberState::Alive,
                    foca::State::Suspect => MemberState::Suspect,
                    foca::State::Down => MemberState::Down,
                };
                MemberView {
                    node: id.node().to_string(),
                    addr: id.addr(),
                    region: id.region().to_string(),
                    generation: id.generation(),
                    state,
                    rtt,
                    info: self.core.node_info(id.node()),
                }
            })
            .collect()
    }

    fn net(&mut self, msg: Net) {
        let now = self.now();
        match msg {
            Net::Datagram { from, bytes } => {
                if self.blocked.contains(&from) {
                    Stats::bump(&self.ctx.stats.datagrams_blocked);
                } else {
                    self.core.handle_datagram(from, &bytes, now);
                }
            }
            Net::Serve { from, request, reply } => {
                // A blocked peer's pull is refused: dropping `reply` resets its stream.
                if !self.blocked.contains(&from) {
                    let _ = reply.send(self.core.serve_pull(from, &request, now));
                }
            }
            Net::PullDone { from, id, response } => match response {
                Some(bytes) if !self.blocked.contains(&from) => {
                    self.core.handle_pull_response(id, &bytes, now)
                }
                _ => self.core.handle_pull_failed(id, now),
            },
            Net::Connected { addr, conn } => self.connected(addr, conn),
            Net::ConnectFailed { addr } => {
                if let Some(Peer::Connecting { datagrams, pulls }) = self.peers.remove(&addr) {
                    for _ in datagrams {
                        Stats::bump(&self.ctx.stats.datagrams_unsent);
                    }
                    for (id, _) in pulls {
                        Stats::bump(&self.ctx.stats.pulls_failed);
                        self.core.handle_pull_failed(id, now);
                    }
                }
            }
        }
    }

    /// A connection is up: read from it, and send to this peer on it from now on. The newest
    /// wins: a peer that restarted at the same address dials us on a new connection while
    /// our old one to its previous process only dies at the idle timeout. (Two nodes dialing
    /// each other at once keep both connections; each side uses the one it saw last.)
    fn connected(&mut self, addr: SocketAddr, conn: Connection) {
        net::spawn_readers(conn.clone(), self.ctx.clone());
        if let Some(Peer::Connecting { datagrams, pulls }) = self.peers.insert(addr, Peer::Up(conn.clone())) {
            for bytes in datagrams {
                self.send_on(&conn, bytes);
            }
            for (id, request) in pulls {
                tokio::spawn(net::pull(conn.clone(), id, request, self.ctx.clone()));
            }
        }
    }

    /// A member went down: forget its connection (if it comes back, it or we dial anew
    /// rather than sending into a connection its previous process held).
    fn forget(&mut self, addr: SocketAddr) {
        if let Some(Peer::Up(conn)) = self.peers.get(&addr) {
            conn.close(quinn::VarInt::from_u32(0), b"down");
            self.peers.remove(&addr);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, timer))) = self.timers.pop() {
                let elapsed = self.now();
                self.core.handle_timer(timer, elapsed);
            }
        }
    }

    /// Carry out what the core asked for, and pass on what changed.
    fn flush(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Datagram { to, bytes } => self.send_datagram(to, Bytes::from(bytes)),
                Output::Pull { to, id, request } => self.start_pull(to, id, request),
                Output::Timer { after, timer } => self.timers.push(Reverse((Instant::now() + after, timer))),
            }
        }
        while let Some(event) = self.core.poll_event() {
            match &event {
                Event::CatalogAdopted(catalog) => {
                    self.catalog.send_replace(Some(catalog.clone()));
                }
                Event::MemberDown(id) => self.forget(id.addr()),
                _ => {}
            }
            let _ = self.events.send(event);
        }
    }

    fn send_datagram(&mut self, to: SocketAddr, bytes: Bytes) {
        if self.blocked.contains(&to) {
            Stats::bump(&self.ctx.stats.datagrams_blocked);
            return;
        }
        match self.peers.get_mut(&to) {
            Some(Peer::Up(conn)) if conn.close_reason().is_none() => {
                let conn = conn.clone();
                self.send_on(&conn, bytes);
            }
            Some(Peer::Connecting { datagrams, .. }) => {
                if datagrams.len() < MAX_QUEUED {
                    datagrams.push(bytes);
                } else {
                    Stats::bump(&self.ctx.stats.datagrams_unsent);
                }
            }
            _ => self.open(to, vec![bytes], Vec::new()),
        }
    }

    fn send_on(&self, conn: &Connection, bytes: Bytes) {
        match conn.send_datagram(bytes) {
            Ok(()) => {}
            Err(SendDatagramError::TooLarge) => {
                Stats::bump(&self.ctx.stats.datagrams_too_large);
                tracing::debug!(peer = %conn.remote_address(), "mesh: datagram too large for the path, dropped");
            }
            Err(e) => {
                Stats::bump(&self.ctx.stats.datagrams_unsent);
                tracing::debug!(peer = %conn.remote_address(), error = %e, "mesh: datagram not sent");
            }
        }
    }

    fn start_pull(&mut self, to: SocketAddr, id: u64, request: Vec<u8>) {
        if self.blocked.contains(&to) {
            Stats::bump(&self.ctx.stats.pulls_failed);
            let now = self.now();
            self.core.handle_pull_failed(id, now);
            return;
        }
        match self.peers.get_mut(&to) {
            Some(Peer::Up(conn)) if conn.close_reason().is_none() => {
                tokio::spawn(net::pull(conn.clone(), id, request, self.ctx.clone()));
            }
            Some(Peer::Connecting { pulls, .. }) if pulls.len() < MAX_QUEUED => pulls.push((id, request)),
            Some(Peer::Connecting { .. }) => {
                Stats::bump(&self.ctx.stats.pulls_failed);
                let now = self.now();
                self.core.handle_pull_failed(id, now);
            }
            _ => self.open(to, Vec::new(), vec![(id, request)]),
        }
    }

    /// Start connecting to `to`, queueing what waits for the connection.
    fn open(&mut self, to: SocketAddr, datagrams: Vec<Bytes>, pulls: Vec<(u64, Vec<u8>)>) {
        self.peers.insert(to, Peer::Connecting { datagrams, pulls });
        tokio::spawn(net::connect(self.endpoint.clone(), to, self.ctx.clone()));
    }

    /// Say goodbye, give it `leave_grace` to reach the peers, then close the endpoint.
    async fn leave(&mut self, net_rx: &mut mpsc::Receiver<Net>) {
        let now = self.now();
        self.core.leave(now);
        self.flush();
        let deadline = Instant::now() + self.leave_grace;
        // Only connections matter now: queued goodbyes go out when theirs opens.
        while self.peers.values().any(|p| matches!(p, Peer::Connecting { .. })) {
            tokio::select! {
                Some(msg) = net_rx.recv() => {
                    if let msg @ (Net::Connected { .. } | Net::ConnectFailed { .. }) = msg {
                        self.net(msg);
                    }
                }
                () = sleep_until(deadline) => break,
            }
        }
        // Datagrams leave with the connection's next packets; give them a moment.
        let settle = Instant::now() + self.leave_grace.min(std::time::Duration::from_millis(50));
        sleep_until(settle).await;
        self.endpoint.close(quinn::VarInt::from_u32(0), b"leaving");
        let _ = tokio::time::timeout(self.leave_grace, self.endpoint.wait_idle()).await;
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
