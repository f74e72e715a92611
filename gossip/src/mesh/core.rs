//! The mesh core: foca's SWIM membership plus the replicated state, driven by `now`, inputs
//! and an RNG. It returns outputs to carry out and events; it owns no socket, no clock and no
//! task, so a QUIC driver and the simulator run the same code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{BroadcastHandler, Foca, Member, State};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};

use super::codec::{
    decode, encode, DecodeError, SwimCodec, MAX_PULL_REQUEST, MAX_PULL_RESPONSE, TAG_SUMMARY, TAG_SWIM,
};
use super::config::MeshConfig;
use super::counters::Counters;
use super::identity::{lock as lock_interner, MeshIdentity, SharedInterner};
use super::output::{Event, Outbox, Output, Timer};
use super::sign::{Rejection, SignedCatalog, SignedRevocation, Verifier};
use super::state::{decode_item, ItemKey, PullRequest, PullResponse, Replica, Summary};
use crate::NodeInfo;

/// Who this node is in the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub node: String,
    /// The mesh endpoint peers reach this node at.
    pub addr: SocketAddr,
    pub region: String,
    /// Bump on every restart so the new process wins over its previous life: seconds since
    /// the Unix epoch at start-up is a good choice.
    pub generation: u32,
}

/// foca's broadcast handler: decodes items and merges them into the shared replica.
pub(crate) struct Handler(Arc<Mutex<Replica>>);

impl BroadcastHandler<MeshIdentity> for Handler {
    type Key = ItemKey;
    type Error = DecodeError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&MeshIdentity>,
    ) -> Result<Option<ItemKey>, DecodeError> {
        let item = decode_item(data)?;
        Ok(lock(&self.0).receive(item, sender))
    }
}

fn lock(replica: &Mutex<Replica>) -> std::sync::MutexGuard<'_, Replica> {
    replica.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct PendingPull {
    catalog: bool,
    members: bool,
    /// Infos pulled because a peer announced them (announced on after adoption).
    announced: Vec<String>,
}

pub struct MeshCore<R: Rng> {
    foca: Foca<MeshIdentity, SwimCodec, R, Handler>,
    replica: Arc<Mutex<Replica>>,
    codec: SwimCodec,
    config: MeshConfig,
    rng: SmallRng,
    out: Outbox,
    pulls: BTreeMap<u64, PendingPull>,
    next_pull: u64,
    pending_info: Option<NodeInfo>,
    info_published_at: Option<Duration>,
    info_flush_scheduled: bool,
    info_version: u64,
    ae_rounds: u64,
}

impl<R: Rng> MeshCore<R> {
    /// A core for `local`, trusting catalogs signed by `verifier`'s keys. `interner` may be
    /// shared between cores (the simulator does); a node gives each core its own.
    pub fn new(
        local: &LocalNode,
        config: MeshConfig,
        verifier: Verifier,
        mut rng: R,
        interner: SharedInterner,
    ) -> Result<Self, Vec<String>> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems);
        }
        let identity = MeshIdentity::new(&local.node, local.addr, &local.region, local.generation)
            .map_err(|e| vec![e.to_string()])?;
        if local.node.is_empty() {
            return Err(vec!["node id must not be empty".into()]);
        }
        let identity = lock_interner(&interner).intern(identity);
        let replica = Arc::new(Mutex::new(Replica::new(verifier)));
        let codec = SwimCodec::new(interner);
        let own_rng = SmallRng::seed_from_u64(rng.next_u64());
        let foca = Foca::with_custom_broadcast(
            identity,
            config.foca(),
            rng,
            codec.clone(),
            Handler(replica.clone()),
        );
        let mut core = Self {
            foca,
            replica,
            codec,
            out: Outbox { flap_window: config.flap_window, ..Outbox::default() },
            config,
            rng: own_rng,
            pulls: BTreeMap::new(),
            next_pull: 0,
            pending_info: None,
            info_published_at: None,
            info_flush_scheduled: false,
            info_version: 0,
            ae_rounds: 0,
        };
        // Jittered so that nodes started together do not exchange summaries in lockstep.
        let first = core.config.anti_entropy_interval.mul_f64(core.rng.random_range(0.5..1.5));
        core.out.timer(first, Timer::AntiEntropy);
        Ok(core)
    }

    pub fn identity(&self) -> &MeshIdentity {
        self.foca.identity()
    }
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// Next thing to do, if any. Call after every `handle_*`/`join`/`publish_*` until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.outputs.pop_front()
    }
    /// Next change to react to, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// Join the mesh through seed nodes known only by address.
    pub fn join(&mut self, seeds: &[SocketAddr], now: Duration) {
        self.out.now = now;
        let me = self.identity().addr();
        for seed in seeds.iter().filter(|s| **s != me) {
            if let Err(e) = self.foca.announce(MeshIdentity::placeholder(*seed), &mut self.out) {
                tracing::debug!(%seed, error = %e, "mesh: announce failed");
            }
        }
    }

    /// Take these members as alive without telling anyone (a membership saved before a
    /// restart, or the simulator's warm start).
    pub fn restore_members(&mut self, members: impl IntoIterator<Item = MeshIdentity>, now: Duration) {
        self.out.now = now;
        let me = self.identity().clone();
        let members = members.into_iter().filter(|m| *m != me).map(Member::alive);
        if let Err(e) = self.foca.apply_many(members, false, &mut self.out) {
            tracing::debug!(error = %e, "mesh: restoring members failed");
        }
    }

    /// Leave gracefully: tell a few members we are going (they spread it), then go quiet.
    pub fn leave(&mut self, now: Duration) {
        self.out.now = now;
        if let Err(e) = self.foca.leave_cluster(&mut self.out) {
            tracing::debug!(error = %e, "mesh: leave failed");
        }
    }

    /// A datagram from the mesh endpoint.
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Duration) {
        self.out.now = now;
        self.out.counters.datagrams_in += 1;
        self.out.counters.bytes_in += bytes.len() as u64;
        if bytes.len() > self.config.max_datagram {
            self.out.counters.dropped_oversized += 1;
            tracing::debug!(%from, len = bytes.len(), "mesh: oversized datagram dropped");
            return;
        }
        match bytes.split_first() {
            Some((&TAG_SWIM, body)) => {
                if let Err(e) = self.foca.handle_data(body, &mut self.out) {
                    self.out.counters.swim_refused += 1;
                    tracing::debug!(%from, error = %e, "mesh: SWIM packet refused");
                }
                self.after_swim();
            }
            Some((&TAG_SUMMARY, body)) => {
                match decode::<Summary>(body, self.config.max_datagram, "summary") {
                    Ok(summary) => self.on_summary(from, &summary),
                    Err(e) => self.undecodable(from, &e),
                }
            }
            Some((&tag, _)) => self.undecodable(from, &DecodeError::UnknownTag(tag)),
            None => self.undecodable(from, &DecodeError::Empty),
        }
    }

    /// After foca ran: a member that just went down is news worth pushing now (each hop
    /// saves half a gossip interval on average, so "down everywhere" comes sooner); then the
    /// replica's effects.
    fn after_swim(&mut self) {
        if std::mem::take(&mut self.out.urgent) {
            self.gossip_now();
        }
        self.apply_effects();
    }

    fn undecodable(&mut self, from: SocketAddr, e: &DecodeError) {
        self.out.counters.dropped_undecodable += 1;
        tracing::debug!(%from, error = %e, "mesh: undecodable datagram dropped");
    }

    /// A timer the core asked for is due.
    pub fn handle_timer(&mut self, timer: Timer, now: Duration) {
        self.out.now = now;
        match timer {
            Timer::Swim(t) => {
                if let Err(e) = self.foca.handle_timer(t, &mut self.out) {
                    tracing::debug!(error = %e, "mesh: SWIM timer failed");
                }
                self.after_swim();
            }
            Timer::AntiEntropy => {
                self.anti_entropy_round();
                self.out.timer(self.config.anti_entropy_interval, Timer::AntiEntropy);
            }
            Timer::PullTimeout(id) => {
                if self.pulls.remove(&id).is_some() {
                    self.out.counters.pulls_failed += 1;
                }
            }
            Timer::InfoFlush => {
                self.info_flush_scheduled = false;
                self.flush_info(now);
            }
        }
    }

    /// Send our summary to a random member (now and then to one we hold as down, which
    /// crosses a healed partition before membership does).
    fn anti_entropy_round(&mut self) {
        self.ae_rounds += 1;
        let peer = if self.ae_rounds % 5 == 0 {
            let down: Vec<&Member<MeshIdentity>> =
                self.foca.iter_membership_state().filter(|m| m.state() == State::Down).collect();
            (!down.is_empty()).then(|| down[self.rng.random_range(0..down.len())].id().addr())
        } else {
            None
        };
        let peer = peer.or_else(|| {
            let n = self.foca.num_members();
            (n > 0)
                .then(|| self.rng.random_range(0..n))
                .and_then(|i| self.foca.iter_members().nth(i))
                .map(|m| m.id().addr())
        });
        if let Some(to) = peer {
            self.send_summary(to, false);
        }
    }

    fn send_summary(&mut self, to: SocketAddr, reply: bool) {
        let summary = lock(&self.replica).summary(self.foca.num_members(), reply);
        let mut bytes = vec![TAG_SUMMARY];
        bytes.extend(encode(&summary));
        self.out.datagram(to, bytes);
    }

    fn on_summary(&mut self, from: SocketAddr, theirs: &Summary) {
        let (wants, ahead) = {
            let replica = lock(&self.replica);
            (replica.wants(theirs, self.foca.num_members()), replica.ahead_of(theirs))
        };
        if let Some(req) = wants {
            self.pull(from, req, Vec::new());
        }
        if ahead && !theirs.reply {
            self.send_summary(from, true);
        }
    }

    /// Ask `to` for state, unless the same is already being pulled or too many pulls are out.
    fn pull(&mut self, to: SocketAddr, mut req: PullRequest, announced: Vec<String>) {
        if self.pulls.values().any(|p| p.catalog) {
            req.catalog_after = None;
        }
        if self.pulls.values().any(|p| p.members) {
            req.members = false;
        }
        let empty = req.catalog_after.is_none()
            && !req.revocations
            && req.info_buckets == 0
            && req.info_nodes.is_empty()
            && !req.members;
        if empty || self.pulls.len() >= self.config.max_pulls_in_flight {
            return;
        }
        self.next_pull += 1;
        let id = self.next_pull;
        let pending = PendingPull { catalog: req.catalog_after.is_some(), members: req.members, announced };
        self.pulls.insert(id, pending);
        self.out.counters.pulls_sent += 1;
        self.out.outputs.push_back(Output::Pull { to, id, request: encode(&req) });
        self.out.timer(self.config.pull_timeout, Timer::PullTimeout(id));
    }

    /// Answer a peer's pull (the bytes it wrote on the stream); the result goes back on it.
    pub fn serve_pull(&mut self, from: SocketAddr, request: &[u8], now: Duration) -> Vec<u8> {
        self.out.now = now;
        let req = match decode::<PullRequest>(request, MAX_PULL_REQUEST, "pull request") {
            Ok(req) => req,
            Err(e) => {
                self.out.counters.pulls_refused += 1;
                tracing::debug!(%from, error = %e, "mesh: pull request refused");
                return encode(&PullResponse::default());
            }
        };
        let mut resp = lock(&self.replica).serve(&req);
        if req.members {
            let me = Member::alive(self.identity().clone());
            let members = std::iter::once(&me).chain(self.foca.iter_membership_state());
            resp.members = self.codec.encode_members(members);
        }
        let bytes = encode(&resp);
        self.out.counters.pulls_served += 1;
        self.out.counters.pull_bytes_out += bytes.len() as u64;
        bytes
    }

    /// The answer to `Output::Pull { id, .. }`.
    pub fn handle_pull_response(&mut self, id: u64, response: &[u8], now: Duration) {
        self.out.now = now;
        self.out.counters.pull_bytes_in += response.len() as u64;
        // A late answer (after its timeout) is still good state: signatures and versions decide.
        let announced = self.pulls.remove(&id).map(|p| p.announced).unwrap_or_default();
        let resp = match decode::<PullResponse>(response, MAX_PULL_RESPONSE, "pull response") {
            Ok(resp) => resp,
            Err(e) => {
                self.out.counters.pulls_refused += 1;
                tracing::warn!(id, error = %e, "mesh: pull response refused");
                return;
            }
        };
        if !resp.members.is_empty() {
            match self.codec.decode_members(&resp.members) {
                Ok(members) => {
                    if let Err(e) = self.foca.apply_many(members.into_iter(), false, &mut self.out) {
                        tracing::debug!(error = %e, "mesh: pulled members not applied");
                    }
                }
                Err(e) => {
                    self.out.counters.pulls_refused += 1;
                    tracing::warn!(id, error = %e, "mesh: pulled membership refused");
                }
            }
        }
        let PullResponse { catalog, revocations, infos, members: _ } = resp;
        lock(&self.replica)
            .absorb(PullResponse { catalog, revocations, infos, members: Vec::new() }, &announced);
        self.apply_effects();
    }

    /// The stream for `Output::Pull { id, .. }` failed (refused, reset, timed out).
    pub fn handle_pull_failed(&mut self, id: u64, now: Duration) {
        self.out.now = now;
        if self.pulls.remove(&id).is_some() {
            self.out.counters.pulls_failed += 1;
        }
    }
}

#[path = "core_publish.rs"]
mod publish;
