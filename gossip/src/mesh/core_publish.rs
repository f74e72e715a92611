//! The core's writers and readers: publishing (catalogs, revocations, this node's info),
//! acting on merge effects, and the queries a node serves (`/api/v1/mesh/nodes`). No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use foca::Member;
use rand::Rng;

use super::super::identity::MeshIdentity;
use super::super::output::{Event, Timer};
use super::super::state::{item_bytes, AdoptedCatalog, Effect, InfoRecord, Item, PullRequest};
use super::{lock, Counters, MeshCore, NodeInfo, Rejection, SignedCatalog, SignedRevocation};

impl<R: Rng> MeshCore<R> {
    /// Publish a catalog signed by control (control calls this through any node). Refused,
    /// with the reason, unless it verifies and is newer than the one this node holds.
    pub fn publish_catalog(&mut self, signed: &SignedCatalog, now: Duration) -> Result<u64, Rejection> {
        self.out.now = now;
        let bytes = serde_json::to_vec(signed).map_err(|e| Rejection::Malformed(e.to_string()))?;
        let epoch = {
            let mut replica = lock(&self.replica);
            if let Err(e) = replica.verifier().admit_catalog(replica.epoch(), signed) {
                replica.count_refused(&e, signed.catalog.epoch);
                return Err(e);
            }
            replica.offer_catalog(bytes, true)
        };
        self.apply_effects();
        epoch.ok_or_else(|| Rejection::Malformed("catalog not adopted".into()))
    }

    /// Publish a revocation batch signed by control.
    pub fn publish_revocation(&mut self, signed: &SignedRevocation, now: Duration) -> Result<u64, Rejection> {
        self.out.now = now;
        lock(&self.replica).verifier().admit_revocation(signed)?;
        let bytes = serde_json::to_vec(signed).map_err(|e| Rejection::Malformed(e.to_string()))?;
        self.broadcast(&Item::Revocation(bytes));
        self.gossip_now();
        self.apply_effects();
        Ok(signed.serial)
    }

    /// This node's info changed. It is published at once, or coalesced with later changes
    /// until `info_min_interval` has passed since the last publication. The core sets `id`,
    /// `region` (from the identity) and `version`.
    pub fn set_local_info(&mut self, info: NodeInfo, now: Duration) {
        self.out.now = now;
        self.pending_info = Some(info);
        let due = self.info_published_at.map_or(now, |at| at + self.config.info_min_interval);
        if due <= now {
            self.flush_info(now);
        } else if !self.info_flush_scheduled {
            self.info_flush_scheduled = true;
            self.out.timer(due - now, Timer::InfoFlush);
        }
    }

    pub(super) fn flush_info(&mut self, now: Duration) {
        let Some(mut info) = self.pending_info.take() else { return };
        self.info_published_at = Some(now);
        self.info_version += 1;
        let me = self.identity().clone();
        info.id = me.node().to_string();
        info.region = me.region().to_string();
        info.version = self.info_version;
        let record = InfoRecord { generation: me.generation(), info };
        lock(&self.replica).offer_info(record, true);
        self.apply_effects();
    }

    /// Act on what merging produced: events for the driver, announcements, pulls.
    pub(super) fn apply_effects(&mut self) {
        let effects = std::mem::take(&mut lock(&self.replica).effects);
        let mut wanted_infos: BTreeMap<std::net::SocketAddr, Vec<String>> = BTreeMap::new();
        for effect in effects {
            match effect {
                Effect::Adopted { catalog, announce } => {
                    tracing::debug!(epoch = catalog.signed.catalog.epoch, "mesh: catalog adopted");
                    if announce {
                        self.announce_catalog(&catalog);
                    }
                    // Push at once rather than at the next gossip tick: saves a tick per hop.
                    self.gossip_now();
                    self.out.events.push_back(Event::CatalogAdopted(catalog));
                }
                Effect::WantCatalog { epoch, from } => {
                    let have = lock(&self.replica).epoch();
                    if epoch > have {
                        let req = PullRequest { catalog_after: Some(have), ..PullRequest::default() };
                        self.pull(from.addr(), req, Vec::new());
                    }
                }
                Effect::Revoked(keys) => {
                    self.gossip_now();
                    self.out.events.push_back(Event::KeysRevoked(keys));
                }
                Effect::InfoChanged { record, announce } => {
                    if announce {
                        self.announce_info(&record);
                    }
                    self.out.events.push_back(Event::NodeInfoChanged(record));
                }
                Effect::WantInfo { node, from } => wanted_infos.entry(from.addr()).or_default().push(node),
            }
        }
        for (from, nodes) in wanted_infos {
            let req = PullRequest { info_nodes: nodes.clone(), ..PullRequest::default() };
            self.pull(from, req, nodes);
        }
    }

    fn announce_catalog(&mut self, catalog: &AdoptedCatalog) {
        let epoch = catalog.signed.catalog.epoch;
        if catalog.bytes.len() <= self.config.max_inline_item {
            self.broadcast(&Item::Catalog(catalog.bytes.clone()));
        } else {
            self.broadcast(&Item::CatalogAnnounce { epoch });
        }
    }

    fn announce_info(&mut self, record: &InfoRecord) {
        let whole = Item::Info(record.clone());
        let bytes = item_bytes(&whole);
        if bytes.len() <= self.config.max_inline_item {
            self.add_broadcast(&bytes);
        } else {
            let (node, generation, version) =
                (record.info.id.clone(), record.generation, record.info.version);
            self.broadcast(&Item::InfoAnnounce { node, generation, version });
        }
    }

    fn broadcast(&mut self, item: &Item) {
        self.add_broadcast(&item_bytes(item));
    }

    fn add_broadcast(&mut self, bytes: &[u8]) {
        if let Err(e) = self.foca.add_broadcast(bytes) {
            tracing::warn!(error = %e, len = bytes.len(), "mesh: broadcast not queued");
        }
    }

    pub(super) fn gossip_now(&mut self) {
        if let Err(e) = self.foca.gossip(&mut self.out) {
            tracing::debug!(error = %e, "mesh: gossip failed");
        }
    }

    /// Every member this node knows, with its SWIM state (alive, suspect, down).
    pub fn members(&self) -> impl Iterator<Item = &Member<MeshIdentity>> {
        self.foca.iter_membership_state()
    }
    /// Members alive or suspect.
    pub fn live_members(&self) -> usize {
        self.foca.num_members()
    }
    pub fn catalog(&self) -> Option<Arc<AdoptedCatalog>> {
        lock(&self.replica).catalog().cloned()
    }
    pub fn epoch(&self) -> u64 {
        lock(&self.replica).epoch()
    }
    pub fn is_revoked(&self, key_id: &str) -> bool {
        lock(&self.replica).revoked().contains(key_id)
    }
    pub fn revoked_keys(&self) -> BTreeSet<String> {
        lock(&self.replica).revoked().clone()
    }
    pub fn node_info(&self, node: &str) -> Option<Arc<InfoRecord>> {
        lock(&self.replica).info(node).cloned()
    }
    pub fn node_infos(&self) -> Vec<Arc<InfoRecord>> {
        lock(&self.replica).infos().cloned().collect()
    }
    /// Everything counted so far.
    pub fn counters(&self) -> Counters {
        self.out.counters.merged(&lock(&self.replica).counters)
    }
    /// Pulls in flight (bounded by `max_pulls_in_flight`).
    pub fn pulls_in_flight(&self) -> usize {
        self.pulls.len()
    }
}
