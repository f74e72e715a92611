//! The event loop: a binary heap of (virtual time, sequence) events, the network model and the
//! bookkeeping that turns the cores' events into the [`Outcome`]. Virtual time in microseconds.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::time::Duration;

use meridian_gossip::mesh::{
    shared_interner, ControlKey, Event, LocalNode, MeshCore, MeshIdentity, Output, SignedCatalog, Timer,
    Verifier,
};
use meridian_gossip::{Arm, Catalog, Experiment, LoadedModel, NodeInfo};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::{Detection, Outcome, Scenario, Spread};
use crate::regions::{rtt_ms, REGIONS};
use crate::rng::Rng;

enum Ev {
    Start(usize),
    Datagram { to: usize, from: usize, bytes: Vec<u8> },
    Timer { node: usize, timer: Timer },
    PullRequest { server: usize, client: usize, id: u64, request: Vec<u8> },
    PullResponse { client: usize, id: u64, response: Vec<u8> },
    Publish(usize),
    Crash(usize),
    InfoChange(usize),
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest, ties in scheduling order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7000))
}

fn index_of(addr: SocketAddr) -> usize {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            let [_, a, b, c] = ip.octets();
            (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c)
        }
        std::net::IpAddr::V6(_) => usize::MAX,
    }
}

const fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

struct Crash {
    at: u64,
    observers: BTreeSet<usize>,
    detection: Detection,
}

struct World<'a> {
    s: &'a Scenario,
    rng: Rng,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    now: u64,
    cores: Vec<Option<MeshCore<SmallRng>>>,
    region: Vec<usize>,
    identities: Vec<MeshIdentity>,
    generation: Vec<u32>,
    crashes: Vec<Option<Crash>>,
    catalogs: Vec<SignedCatalog>,
    /// Per publish: when it happened, and when each node first held that epoch or a later one.
    published_at: Vec<Option<u64>>,
    reached: Vec<Vec<Option<u64>>>,
    out: Outcome,
    false_dead: BTreeSet<(usize, u32)>,
    /// Whether each (node, generation) declared down was first declared across a partition.
    first_down: std::collections::BTreeMap<(usize, u32), bool>,
    bytes: [u64; 3],
}

impl World<'_> {
    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, ev });
    }

    fn crashed(&self, i: usize) -> bool {
        self.cores.get(i).is_none_or(Option::is_none)
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        self.s.partition.as_ref().is_some_and(|p| {
            let t = Duration::from_micros(self.now);
            t >= p.from
                && t < p.until
                && p.regions.contains(&self.region[a]) != p.regions.contains(&self.region[b])
        })
    }

    /// Shortly after a partition, deaths across it are still its doing.
    fn across_recent_partition(&self, a: usize, b: usize) -> bool {
        self.s.partition.as_ref().is_some_and(|p| {
            let t = Duration::from_micros(self.now);
            let grace = self.s.config.probe_period * 4 + self.s.config.suspect_to_down * 2;
            t >= p.from
                && t < p.until + grace
                && p.regions.contains(&self.region[a]) != p.regions.contains(&self.region[b])
        })
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn rtt_us(&self, a: usize, b: usize) -> u64 {
        (rtt_ms(self.region[a], self.region[b]) * 1_000.0) as u64
    }

    fn one_way(&mut self, a: usize, b: usize) -> u64 {
        let jitter = (self.uniform() * us(self.s.jitter) as f64) as u64;
        self.rtt_us(a, b) / 2 + jitter
    }

    /// A message on a reliable stream: one way, its transfer time, a timeout per lost packet.
    fn stream_delay(&mut self, a: usize, b: usize, len: usize) -> u64 {
        let mut delay = self.one_way(a, b) + (len as f64 * 8.0 / self.s.stream_mbit_s) as u64;
        for _ in 0..len.div_ceil(1_200) {
            if self.uniform() < self.s.loss {
                delay += self.rtt_us(a, b) * 3 / 2 + 10_000;
            }
        }
        delay
    }

    fn in_window(&self) -> bool {
        let t = Duration::from_micros(self.now);
        t >= self.s.steady_from && t < self.s.steady_until
    }

    fn count(&mut self, kind: usize, len: usize) {
        if self.in_window() {
            self.bytes[kind] += len as u64;
        }
    }

    fn with_core(&mut self, i: usize, f: impl FnOnce(&mut MeshCore<SmallRng>, Duration)) {
        let now = Duration::from_micros(self.now);
        let Some(Some(core)) = self.cores.get_mut(i) else { return };
        f(core, now);
        let outputs: Vec<Output> = std::iter::from_fn(|| core.poll_output()).collect();
        let events: Vec<Event> = std::iter::from_fn(|| core.poll_event()).collect();
        for o in outputs {
            self.output(i, o);
        }
        for e in events {
            self.observe(i, e);
        }
    }

    fn output(&mut self, i: usize, o: Output) {
        match o {
            Output::Timer { after, timer } => self.at(self.now + us(after), Ev::Timer { node: i, timer }),
            Output::Datagram { to, bytes } => {
                let kind = usize::from(bytes.first() != Some(&meridian_gossip::mesh::codec::TAG_SWIM));
                self.count(kind, bytes.len());
                let j = index_of(to);
                if j >= self.cores.len() || self.partitioned(i, j) || self.uniform() < self.s.loss {
                    return;
                }
                let delay = self.one_way(i, j);
                self.at(self.now + delay, Ev::Datagram { to: j, from: i, bytes });
            }
            Output::Pull { to, id, request } => {
                self.count(2, request.len());
                let j = index_of(to);
                if j >= self.cores.len() || self.partitioned(i, j) {
                    return;
                }
                let delay = self.stream_delay(i, j, request.len());
                self.at(self.now + delay, Ev::PullRequest { server: j, client: i, id, request });
            }
        }
    }
}

impl World<'_> {
    fn observe(&mut self, i: usize, e: Event) {
        match e {
            Event::CatalogAdopted(c) => {
                let epoch = c.signed.catalog.epoch;
                for (p, publish) in self.s.publishes.iter().enumerate() {
                    if publish.epoch <= epoch && self.reached[p][i].is_none() {
                        self.reached[p][i] = Some(self.now);
                    }
                }
            }
            Event::MemberSuspect(id) => {
                let j = index_of(id.addr());
                if j < self.cores.len() && !self.crashed(j) && !self.across_recent_partition(i, j) {
                    self.out.false_suspicions += 1;
                }
                if let Some(Some(c)) = self.crashes.get_mut(j) {
                    c.detection.first_suspect.get_or_insert(Duration::from_micros(self.now - c.at));
                }
            }
            Event::MemberDown(id) => self.member_down(i, &id),
            Event::Rejoined(id) => self.generation[i] = id.generation(),
            _ => {}
        }
    }

    fn member_down(&mut self, i: usize, id: &MeshIdentity) {
        let j = index_of(id.addr());
        if j >= self.cores.len() {
            return;
        }
        if self.crashed(j) {
            let live = self.cores.iter().filter(|c| c.is_some()).count();
            let now = self.now;
            let cores = &self.cores;
            if let Some(Some(c)) = self.crashes.get_mut(j) {
                c.detection.first_down.get_or_insert(Duration::from_micros(now - c.at));
                c.observers.insert(i);
                let seen = c.observers.iter().filter(|o| cores[**o].is_some()).count();
                if seen == live && c.detection.all_down.is_none() {
                    c.detection.all_down = Some(Duration::from_micros(now - c.at));
                }
            }
        } else if id.generation() < self.generation[j] {
            // A generation its node already left behind (it rejoined).
        } else {
            // Whoever first declared this identity down decides what it was: across a
            // partition, its news reaching the node's own side after healing is the
            // partition's doing too (down is final for an identity; the node rejoins).
            let key = (j, id.generation());
            let across = self.across_recent_partition(i, j);
            let by_partition = *self.first_down.entry(key).or_insert(across);
            if by_partition {
                self.out.partition_deaths += 1;
            } else {
                self.false_dead.insert(key);
            }
        }
    }

    fn info(&mut self, i: usize) -> NodeInfo {
        let models = (0..3)
            .map(|m| LoadedModel {
                name: format!("model-{}", (i + m) % 50),
                version: 1 + (self.rng.below(3) as u32),
                runtime: "tract-cpu".into(),
                runtime_reason: String::new(),
                live: true,
                warm: true,
            })
            .collect();
        NodeInfo {
            http_url: format!("https://{}:8443", addr_of(i).ip()),
            ready: true,
            models,
            queued: self.rng.below(100),
            ..NodeInfo::default()
        }
    }

    fn next_info_change(&mut self, i: usize) {
        if self.s.info_changes_per_hour > 0.0 {
            let mean_us = 3_600e6 / self.s.info_changes_per_hour;
            let wait = -mean_us * (1.0 - self.uniform()).ln();
            self.at(self.now + wait as u64, Ev::InfoChange(i));
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start(i) => {
                let all = self.identities.clone();
                self.with_core(i, |core, now| core.restore_members(all, now));
                self.next_info_change(i);
            }
            Ev::Datagram { to, from, bytes } => {
                self.with_core(to, |core, now| core.handle_datagram(addr_of(from), &bytes, now));
            }
            Ev::Timer { node, timer } => self.with_core(node, |core, now| core.handle_timer(timer, now)),
            Ev::PullRequest { server, client, id, request } => {
                let mut response = Vec::new();
                self.with_core(server, |core, now| {
                    response = core.serve_pull(addr_of(client), &request, now)
                });
                if self.crashed(server) || self.partitioned(server, client) {
                    return;
                }
                self.count(2, response.len());
                let delay = self.stream_delay(server, client, response.len());
                self.at(self.now + delay, Ev::PullResponse { client, id, response });
            }
            Ev::PullResponse { client, id, response } => {
                self.with_core(client, |core, now| core.handle_pull_response(id, &response, now));
            }
            Ev::Publish(p) => self.publish(p),
            Ev::Crash(j) if j < self.cores.len() => {
                self.cores[j] = None;
                self.crashes[j] = Some(Crash {
                    at: self.now,
                    observers: BTreeSet::new(),
                    detection: Detection { node: j, ..Detection::default() },
                });
            }
            Ev::Crash(_) => {}
            Ev::InfoChange(i) => {
                let info = self.info(i);
                self.with_core(i, |core, now| core.set_local_info(info, now));
                self.next_info_change(i);
            }
        }
    }

    fn publish(&mut self, p: usize) {
        let publish = &self.s.publishes[p];
        let via =
            (0..self.cores.len()).map(|k| (publish.via + k) % self.cores.len()).find(|k| !self.crashed(*k));
        let Some(via) = via else { return };
        let signed = self.catalogs[p].clone();
        self.published_at[p] = Some(self.now);
        self.with_core(via, |core, now| {
            if let Err(e) = core.publish_catalog(&signed, now) {
                tracing_like_warn(&e);
            }
        });
    }
}

fn tracing_like_warn(e: &meridian_gossip::mesh::Rejection) {
    eprintln!("publish refused: {e}");
}

/// A catalog of about `bytes` bytes of JSON: experiments pad it (their content is irrelevant).
fn catalog(epoch: u64, bytes: usize) -> Catalog {
    let mut c = Catalog { epoch, ..Catalog::default() };
    for k in 0..bytes / 230 {
        let arms = vec![
            Arm { name: "control".into(), version: 1, weight_bp: 9_000 },
            Arm { name: "canary".into(), version: 2, weight_bp: 1_000 },
        ];
        let name = format!("model-{k:05}");
        let e = Experiment {
            name: format!("exp-{k:05}"),
            model: name.clone(),
            arms,
            shadow: None,
            unit_key: "user_id".into(),
            salt: format!("salt-{epoch}-{k}"),
        };
        c.experiments.insert(name, e);
    }
    c
}

fn build<'a>(s: &'a Scenario) -> World<'a> {
    let control = ControlKey::from_seed(&[42; 32]);
    let interner = shared_interner();
    let mut rng = Rng::new(s.seed);
    let region: Vec<usize> = (0..s.nodes).map(|i| i % REGIONS.len()).collect();
    let mut cores = Vec::with_capacity(s.nodes);
    let mut identities = Vec::with_capacity(s.nodes);
    for (i, r) in region.iter().enumerate() {
        let local = LocalNode {
            node: format!("n{i}"),
            addr: addr_of(i),
            region: REGIONS[*r].0.into(),
            generation: 1,
        };
        let verifier = Verifier::new(vec![control.public()]);
        let core_rng = SmallRng::seed_from_u64(rng.next_u64());
        let core = MeshCore::new(&local, s.config.clone(), verifier, core_rng, interner.clone())
            .unwrap_or_else(|p| panic!("bad config: {p:?}"));
        identities.push(core.identity().clone());
        cores.push(Some(core));
    }
    let catalogs =
        s.publishes.iter().map(|p| control.sign_catalog(catalog(p.epoch, s.catalog_bytes))).collect();
    World {
        s,
        rng,
        queue: BinaryHeap::new(),
        seq: 0,
        now: 0,
        cores,
        region,
        identities,
        generation: vec![1; s.nodes],
        crashes: (0..s.nodes).map(|_| None).collect(),
        catalogs,
        published_at: vec![None; s.publishes.len()],
        reached: vec![vec![None; s.nodes]; s.publishes.len()],
        out: Outcome { nodes: s.nodes, seed: s.seed, loss: s.loss, ..Outcome::default() },
        false_dead: BTreeSet::new(),
        first_down: Default::default(),
        bytes: [0; 3],
    }
}

/// Run a scenario to its end; the outcome is a pure function of the scenario (seed included).
pub fn run(s: &Scenario) -> Outcome {
    let mut w = build(s);
    let start_spread = us(s.config.probe_period);
    for i in 0..s.nodes {
        let t = w.rng.below(start_spread.max(1));
        w.at(t, Ev::Start(i));
    }
    for (p, publish) in s.publishes.iter().enumerate() {
        w.at(us(publish.at), Ev::Publish(p));
    }
    for (at, j) in &s.crashes {
        w.at(us(*at), Ev::Crash(*j));
    }
    let end = us(s.run_for);
    while let Some(Scheduled { at, ev, .. }) = w.queue.pop() {
        if at > end {
            break;
        }
        w.now = at;
        w.out.events += 1;
        w.handle(ev);
    }
    finish(w)
}

fn finish(mut w: World<'_>) -> Outcome {
    let s = w.s;
    let live: Vec<usize> = (0..s.nodes).filter(|i| !w.crashed(*i)).collect();
    for (p, publish) in s.publishes.iter().enumerate() {
        let Some(at) = w.published_at[p] else { continue };
        let mut times: Vec<u64> =
            live.iter().filter_map(|i| w.reached[p][*i]).map(|t| t.saturating_sub(at)).collect();
        times.sort_unstable();
        let n = live.len().max(1);
        let quantile = |q: f64| {
            let k = ((q * n as f64).ceil() as usize).max(1);
            times.get(k - 1).map(|t| Duration::from_micros(*t))
        };
        let curve = times
            .iter()
            .enumerate()
            .map(|(k, t)| (Duration::from_micros(*t), (k + 1) as f64 / n as f64))
            .collect();
        let spread = Spread {
            epoch: publish.epoch,
            p50: quantile(0.5),
            p99: quantile(0.99),
            p100: quantile(1.0),
            curve,
        };
        w.out.spreads.push(spread);
    }
    let cores = &w.cores;
    w.out.detections = w
        .crashes
        .iter_mut()
        .filter_map(|c| c.take())
        .map(|c| {
            let seen = c.observers.iter().filter(|o| cores[**o].is_some()).count();
            Detection { missing: live.len() - seen, ..c.detection }
        })
        .collect();
    w.out.false_deaths = w.false_dead.len() as u64;
    let secs = (s.steady_until.saturating_sub(s.steady_from)).as_secs_f64().max(1e-9);
    let per = |b: u64| b as f64 / s.nodes as f64 / secs;
    (w.out.swim_bytes_per_node_s, w.out.summary_bytes_per_node_s, w.out.pull_bytes_per_node_s) =
        (per(w.bytes[0]), per(w.bytes[1]), per(w.bytes[2]));
    for core in w.cores.iter().flatten() {
        w.out.final_epochs.push(core.epoch());
        let c = core.counters();
        w.out.refusals += c.catalogs_forged
            + c.catalogs_stale
            + c.catalogs_malformed
            + c.dropped_undecodable
            + c.dropped_oversized
            + c.pulls_refused;
    }
    w.out
}
