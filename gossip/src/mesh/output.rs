//! What the core hands its driver: outputs to carry out (datagrams, pulls, timers) and events
//! that say what changed. Also the foca `Runtime` that collects them. No I/O.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foca::{Notification, Runtime};
use rustc_hash::FxHashMap;

use super::codec::TAG_SWIM;
use super::counters::Counters;
use super::identity::MeshIdentity;
use super::state::{AdoptedCatalog, InfoRecord};

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` as one unreliable datagram (a QUIC datagram on the mesh connection).
    Datagram { to: SocketAddr, bytes: Vec<u8> },
    /// Open a reliable stream to `to`, write `request`, read the answer (at most
    /// `MAX_PULL_RESPONSE` bytes) and hand it to `MeshCore::handle_pull_response(id, ..)`, or
    /// call `MeshCore::handle_pull_failed(id, ..)` if the stream fails. The peer answers
    /// with `MeshCore::serve_pull`.
    Pull { to: SocketAddr, id: u64, request: Vec<u8> },
    /// Call `MeshCore::handle_timer(timer, ..)` `after` from now.
    Timer { after: Duration, timer: Timer },
}

/// A timer the core asked for. Timers due at the same instant must be delivered in `Ord`
/// order (foca requires it for its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    Swim(foca::Timer<MeshIdentity>),
    AntiEntropy,
    PullTimeout(u64),
    InfoFlush,
}

impl Timer {
    fn rank(&self) -> u8 {
        match self {
            Self::Swim(_) => 0,
            Self::AntiEntropy => 1,
            Self::PullTimeout(_) => 2,
            Self::InfoFlush => 3,
        }
    }
}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Swim(a), Self::Swim(b)) => a.cmp(b),
            (Self::PullTimeout(a), Self::PullTimeout(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// What changed.
#[derive(Debug, Clone)]
pub enum Event {
    MemberUp(MeshIdentity),
    /// This node's probe of the member failed; it is suspect until it refutes or is declared down.
    MemberSuspect(MeshIdentity),
    MemberDown(MeshIdentity),
    /// A member came back under a later generation (restart or rejoin).
    Renamed {
        old: MeshIdentity,
        new: MeshIdentity,
    },
    /// This node has at least one live peer (joined).
    Connected,
    /// This node has no live peers left.
    Disconnected,
    /// The cluster declared this node down and it rejoined as `new identity`.
    Rejoined(MeshIdentity),
    /// The cluster declared this node down and it cannot rejoin (generation exhausted).
    Defunct,
    CatalogAdopted(Arc<AdoptedCatalog>),
    KeysRevoked(Vec<String>),
    NodeInfoChanged(Arc<InfoRecord>),
}

/// Collects what foca and the core produce until the driver polls it.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) counters: Counters,
    pub(crate) now: Duration,
    /// When each member (by address key) last went down: tells a flap from a recovery.
    pub(crate) down_at: FxHashMap<u64, Duration>,
    pub(crate) flap_window: Duration,
    /// A member went down or failed a probe: the core pushes the news at once instead of at
    /// the next gossip tick.
    pub(crate) urgent: bool,
}

impl Outbox {
    pub(crate) fn datagram(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.counters.datagrams_out += 1;
        self.counters.bytes_out += bytes.len() as u64;
        self.outputs.push_back(Output::Datagram { to, bytes });
    }

    pub(crate) fn timer(&mut self, after: Duration, timer: Timer) {
        self.outputs.push_back(Output::Timer { after, timer });
    }

    fn member_up(&mut self, id: &MeshIdentity) {
        let key = foca::Identity::addr(id);
        if let Some(at) = self.down_at.remove(&key) {
            if self.now.saturating_sub(at) < self.flap_window {
                self.counters.flaps += 1;
                tracing::debug!(member = ?id, "mesh: member flapped (back up soon after going down)");
            }
        }
    }
}

impl Runtime<MeshIdentity> for Outbox {
    fn notify(&mut self, notification: Notification<'_, MeshIdentity>) {
        let event = match notification {
            Notification::MemberUp(id) => {
                self.member_up(id);
                Event::MemberUp(id.clone())
            }
            Notification::MemberDown(id) => {
                self.counters.members_down += 1;
                self.urgent = true;
                self.down_at.insert(foca::Identity::addr(id), self.now);
                Event::MemberDown(id.clone())
            }
            Notification::Rename(old, new) => Event::Renamed { old: old.clone(), new: new.clone() },
            Notification::Active => Event::Connected,
            Notification::Idle => Event::Disconnected,
            Notification::Defunct => Event::Defunct,
            Notification::Rejoin(id) => {
                self.counters.rejoins += 1;
                Event::Rejoined(id.clone())
            }
            Notification::ProbeFailed(_, id) => {
                self.counters.suspicions += 1;
                // Reaching the suspect sooner gives it more of `suspect_to_down` to refute.
                self.urgent = true;
                Event::MemberSuspect(id.clone())
            }
            Notification::DataReceived(_) | Notification::DataSent(_) => return,
        };
        self.events.push_back(event);
    }

    fn send_to(&mut self, to: MeshIdentity, data: &[u8]) {
        let mut bytes = Vec::with_capacity(data.len() + 1);
        bytes.push(TAG_SWIM);
        bytes.extend_from_slice(data);
        self.datagram(to.addr(), bytes);
    }

    fn submit_after(&mut self, event: foca::Timer<MeshIdentity>, after: Duration) {
        self.timer(after, Timer::Swim(event));
    }
}
