//! The state replicated beside membership, and its merge rules. No I/O.
//!
//! - the catalog: one signed catalog, replaced only by a strictly newer verified epoch;
//! - revocations: signed batches of revoked API key ids, kept as a grow-only union;
//! - node info: each node's [`NodeInfo`], newest (generation, version) wins.
//!
//! [`Replica`] also answers and absorbs pulls, and writes the [`Summary`] that anti-entropy
//! compares. Effects of merging (adoptions, wants) are queued for the core to act on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::codec::{decode, encode, DecodeError};
use super::counters::Counters;
use super::identity::MeshIdentity;
use super::sign::{Rejection, SignedCatalog, SignedRevocation, Verifier};
use crate::NodeInfo;

/// Node infos are compared in this many buckets (by hash of node id): a summary carries one
/// digest per bucket and a mismatch pulls only the infos of that bucket.
pub const INFO_BUCKETS: usize = 16;
/// Largest signed catalog / revocation / node info accepted, in bytes of their encoding.
pub const MAX_CATALOG_BYTES: usize = 32 * 1024 * 1024;
pub const MAX_REVOCATION_BYTES: usize = 64 * 1024;
pub const MAX_INFO_BYTES: usize = 64 * 1024;
/// Most infos one pull may name.
pub const MAX_INFO_NODES: usize = 256;

/// A custom broadcast: foca piggybacks these on SWIM packets until each was sent
/// `max_transmissions` times. What does not fit a datagram travels as an announcement that
/// makes receivers pull the content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    /// A whole signed catalog (JSON), when small.
    Catalog(Vec<u8>),
    CatalogAnnounce {
        epoch: u64,
    },
    /// A signed revocation batch (JSON).
    Revocation(Vec<u8>),
    Info(InfoRecord),
    InfoAnnounce {
        node: String,
        generation: u32,
        version: u64,
    },
}

/// A node's info with the generation of the identity that published it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoRecord {
    pub generation: u32,
    pub info: NodeInfo,
}

impl InfoRecord {
    fn freshness(&self) -> (u32, u64) {
        (self.generation, self.info.version)
    }
}

/// What foca uses to replace stale items in its dissemination backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKey {
    Catalog(u64),
    Revocation(u64),
    Info(String, (u32, u64)),
}

impl foca::Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Catalog(a), Self::Catalog(b)) => a >= b,
            (Self::Revocation(a), Self::Revocation(b)) => a == b,
            (Self::Info(a, v), Self::Info(b, w)) => a == b && v >= w,
            _ => false,
        }
    }
}

/// Anti-entropy: what a node has, in ~100 bytes. Two nodes with equal summaries agree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// An answer to a summary (never answered again, so exchanges end).
    pub reply: bool,
    pub catalog_epoch: u64,
    pub revocations: u32,
    pub revocation_digest: u64,
    pub info_digests: [u32; INFO_BUCKETS],
    /// Active members the sender knows: far fewer than ours means it is still joining.
    pub members: u32,
}

/// Ask a peer for state: each field asks for one part; absent parts cost nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Send your catalog if its epoch is newer than this.
    pub catalog_after: Option<u64>,
    /// Send every revocation batch.
    pub revocations: bool,
    /// Send the infos in these buckets (bit i = bucket i).
    pub info_buckets: u16,
    /// And these nodes' infos.
    pub info_nodes: Vec<String>,
    /// Send the membership (a joining node).
    pub members: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    pub catalog: Option<Vec<u8>>,
    pub revocations: Vec<Vec<u8>>,
    pub infos: Vec<InfoRecord>,
    /// Members encoded by `SwimCodec::encode_members`.
    pub members: Vec<u8>,
}

/// The catalog a node holds, with its wire form kept for serving pulls and re-announcing.
#[derive(Debug)]
pub struct AdoptedCatalog {
    pub signed: SignedCatalog,
    pub bytes: Vec<u8>,
}

/// What merging asked the core to do.
#[derive(Debug)]
pub(crate) enum Effect {
    /// A newer catalog was adopted; `announce` when it came by pull (a broadcast is already
    /// forwarded by foca).
    Adopted {
        catalog: Arc<AdoptedCatalog>,
        announce: bool,
    },
    /// A peer announced a catalog newer than ours: pull it from that peer.
    WantCatalog {
        epoch: u64,
        from: MeshIdentity,
    },
    Revoked(Vec<String>),
    InfoChanged {
        record: Arc<InfoRecord>,
        announce: bool,
    },
    WantInfo {
        node: String,
        from: MeshIdentity,
    },
}

pub struct Replica {
    verifier: Verifier,
    catalog: Option<Arc<AdoptedCatalog>>,
    revocations: BTreeMap<u64, Vec<u8>>,
    revoked: BTreeSet<String>,
    revocation_digest: u64,
    infos: FxHashMap<String, Arc<InfoRecord>>,
    info_digests: [u32; INFO_BUCKETS],
    pub(crate) effects: Vec<Effect>,
    pub(crate) counters: Counters,
}

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize()[..8]);
    u64::from_be_bytes(first)
}

fn bucket(node: &str) -> usize {
    (hash64(&[node.as_bytes()]) % INFO_BUCKETS as u64) as usize
}

fn info_hash(r: &InfoRecord) -> u32 {
    let (g, v) = r.freshness();
    hash64(&[r.info.id.as_bytes(), &g.to_be_bytes(), &v.to_be_bytes()]) as u32
}

impl Replica {
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            catalog: None,
            revocations: BTreeMap::new(),
            revoked: BTreeSet::new(),
            revocation_digest: 0,
            infos: FxHashMap::default(),
            info_digests: [0; INFO_BUCKETS],
            effects: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Count (and log) a catalog refused by the adoption rules, from a peer or published here.
    pub(crate) fn count_refused(&mut self, e: &Rejection, got: u64) {
        let have = self.epoch();
        match e {
            Rejection::Stale { got, .. } if *got == have => self.counters.catalog_duplicates += 1,
            Rejection::Stale { got, .. } => {
                self.counters.catalogs_stale += 1;
                tracing::debug!(have, got, "mesh: older catalog refused (no rollback)");
            }
            Rejection::Malformed(reason) => {
                self.counters.catalogs_malformed += 1;
                tracing::warn!(%reason, epoch = got, "mesh: malformed catalog refused");
            }
            Rejection::UnknownKey(_) | Rejection::BadSignature => {
                self.counters.catalogs_forged += 1;
                tracing::warn!(reason = %e, epoch = got, "mesh: catalog refused");
            }
        }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
    pub fn catalog(&self) -> Option<&Arc<AdoptedCatalog>> {
        self.catalog.as_ref()
    }
    pub fn epoch(&self) -> u64 {
        self.catalog.as_ref().map_or(0, |c| c.signed.catalog.epoch)
    }
    pub fn revoked(&self) -> &BTreeSet<String> {
        &self.revoked
    }
    pub fn infos(&self) -> impl Iterator<Item = &Arc<InfoRecord>> {
        self.infos.values()
    }
    pub fn info(&self, node: &str) -> Option<&Arc<InfoRecord>> {
        self.infos.get(node)
    }

    pub fn summary(&self, members: usize, reply: bool) -> Summary {
        Summary {
            reply,
            catalog_epoch: self.epoch(),
            revocations: self.revocations.len() as u32,
            revocation_digest: self.revocation_digest,
            info_digests: self.info_digests,
            members: members as u32,
        }
    }

    /// Handle one custom broadcast; `Some(key)` tells foca to keep disseminating it.
    /// `sender` is `None` for items this node adds itself.
    pub(crate) fn receive(&mut self, item: Item, sender: Option<&MeshIdentity>) -> Option<ItemKey> {
        match item {
            Item::Catalog(bytes) => {
                if sender.is_none() {
                    // Our own announcement of the catalog we hold.
                    let held = self.catalog.as_ref().filter(|c| c.bytes == bytes)?;
                    return Some(ItemKey::Catalog(held.signed.catalog.epoch));
                }
                let epoch = self.offer_catalog(bytes, false)?;
                Some(ItemKey::Catalog(epoch))
            }
            Item::CatalogAnnounce { epoch } => match sender {
                None => (epoch == self.epoch()).then_some(ItemKey::Catalog(epoch)),
                Some(from) => {
                    if epoch > self.epoch() {
                        self.effects.push(Effect::WantCatalog { epoch, from: from.clone() });
                    }
                    None
                }
            },
            Item::Revocation(bytes) => self.offer_revocation(bytes).map(ItemKey::Revocation),
            Item::Info(record) => {
                let key = ItemKey::Info(record.info.id.clone(), record.freshness());
                if sender.is_none() {
                    let held = self.infos.get(&record.info.id).map(|r| r.freshness());
                    return (held == Some(record.freshness())).then_some(key);
                }
                self.offer_info(record, false).then_some(key)
            }
            Item::InfoAnnounce { node, generation, version } => {
                let have = self.infos.get(&node).map(|r| r.freshness());
                match sender {
                    None => (have == Some((generation, version)))
                        .then_some(ItemKey::Info(node, (generation, version))),
                    Some(from) => {
                        if have.is_none_or(|h| h < (generation, version)) {
                            self.effects.push(Effect::WantInfo { node, from: from.clone() });
                        }
                        None
                    }
                }
            }
        }
    }

    /// Verify and adopt a signed catalog (JSON); returns its epoch when adopted.
    pub(crate) fn offer_catalog(&mut self, bytes: Vec<u8>, announce: bool) -> Option<u64> {
        if bytes.len() > MAX_CATALOG_BYTES {
            self.counters.catalogs_malformed += 1;
            tracing::warn!(bytes = bytes.len(), "mesh: oversized catalog dropped");
            return None;
        }
        let signed: SignedCatalog = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                self.counters.catalogs_malformed += 1;
                tracing::warn!(error = %e, "mesh: undecodable catalog dropped");
                return None;
            }
        };
        if let Err(e) = self.verifier.admit_catalog(self.epoch(), &signed) {
            self.count_refused(&e, signed.catalog.epoch);
            return None;
        }
        let epoch = signed.catalog.epoch;
        let adopted = Arc::new(AdoptedCatalog { signed, bytes });
        self.catalog = Some(adopted.clone());
        self.counters.catalogs_adopted += 1;
        self.effects.push(Effect::Adopted { catalog: adopted, announce });
        Some(epoch)
    }

    /// Verify and merge a signed revocation batch (JSON); returns its serial when new.
    pub(crate) fn offer_revocation(&mut self, bytes: Vec<u8>) -> Option<u64> {
        let signed: SignedRevocation = match decode_json(&bytes, MAX_REVOCATION_BYTES) {
            Ok(s) => s,
            Err(e) => {
                self.counters.revocations_refused += 1;
                tracing::warn!(error = %e, "mesh: undecodable revocation dropped");
                return None;
            }
        };
        if self.revocations.contains_key(&signed.serial) {
            return None;
        }
        if let Err(e) = self.verifier.admit_revocation(&signed) {
            self.counters.revocations_refused += 1;
            tracing::warn!(reason = %e, serial = signed.serial, "mesh: revocation refused");
            return None;
        }
        let serial = signed.serial;
        self.revocation_digest ^= hash64(&[&serial.to_be_bytes(), signed.signature.as_bytes()]);
        let new: Vec<String> =
            signed.key_ids.iter().filter(|k| !self.revoked.contains(*k)).cloned().collect();
        self.revoked.extend(new.iter().cloned());
        self.revocations.insert(serial, bytes);
        if !new.is_empty() {
            self.effects.push(Effect::Revoked(new));
        }
        Some(serial)
    }

    /// Keep `record` if it is newer than what we hold for its node.
    pub(crate) fn offer_info(&mut self, record: InfoRecord, announce: bool) -> bool {
        let node = &record.info.id;
        if node.is_empty() || node.len() > super::identity::MAX_NODE_ID {
            self.counters.infos_refused += 1;
            return false;
        }
        let b = bucket(node);
        if let Some(old) = self.infos.get(node) {
            if old.freshness() >= record.freshness() {
                return false;
            }
            self.info_digests[b] ^= info_hash(old);
        }
        self.info_digests[b] ^= info_hash(&record);
        let record = Arc::new(record);
        self.infos.insert(record.info.id.clone(), record.clone());
        self.effects.push(Effect::InfoChanged { record, announce });
        true
    }

    /// Which parts of `theirs` we lack (a pull request), or `None` if nothing.
    pub fn wants(&self, theirs: &Summary, our_members: usize) -> Option<PullRequest> {
        let mut req = PullRequest::default();
        if theirs.catalog_epoch > self.epoch() {
            req.catalog_after = Some(self.epoch());
        }
        req.revocations = theirs.revocation_digest != self.revocation_digest && theirs.revocations > 0;
        for (i, (a, b)) in theirs.info_digests.iter().zip(&self.info_digests).enumerate() {
            if a != b {
                req.info_buckets |= 1 << i;
            }
        }
        // Far fewer members than the peer knows: we are joining (or were cut off); copy its view.
        req.members = (our_members as u64) * 10 < u64::from(theirs.members) * 9;
        let any = req.catalog_after.is_some() || req.revocations || req.info_buckets != 0 || req.members;
        any.then_some(req)
    }

    /// Whether `theirs` lacks something we have (so we answer with our summary).
    pub fn ahead_of(&self, theirs: &Summary) -> bool {
        self.epoch() > theirs.catalog_epoch
            || (self.revocation_digest != theirs.revocation_digest && !self.revocations.is_empty())
            || self.info_digests != theirs.info_digests
    }

    /// Answer a pull (all but the membership, which the core adds).
    pub fn serve(&self, req: &PullRequest) -> PullResponse {
        let mut resp = PullResponse::default();
        if let (Some(after), Some(c)) = (req.catalog_after, &self.catalog) {
            if c.signed.catalog.epoch > after {
                resp.catalog = Some(c.bytes.clone());
            }
        }
        if req.revocations {
            resp.revocations = self.revocations.values().cloned().collect();
        }
        let named: BTreeSet<&str> = req.info_nodes.iter().take(MAX_INFO_NODES).map(String::as_str).collect();
        resp.infos = self
            .infos
            .values()
            .filter(|r| {
                req.info_buckets & (1 << bucket(&r.info.id)) != 0 || named.contains(r.info.id.as_str())
            })
            .map(|r| (**r).clone())
            .collect();
        resp
    }

    /// Merge a pull response (all but the membership). A pulled catalog, and the infos we
    /// pulled because they were announced (`announced`), are announced on in turn; infos
    /// pulled by anti-entropy are not (every node repairing its buckets would flood).
    pub(crate) fn absorb(&mut self, resp: PullResponse, announced: &[String]) {
        if let Some(bytes) = resp.catalog {
            self.offer_catalog(bytes, true);
        }
        for batch in resp.revocations {
            self.offer_revocation(batch);
        }
        for record in resp.infos {
            let announce = announced.contains(&record.info.id);
            self.offer_info(record, announce);
        }
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooBig(bytes.len(), max));
    }
    serde_json::from_slice(bytes).map_err(|_| DecodeError::Malformed("json"))
}

/// Encode an item for `Foca::add_broadcast`.
pub(crate) fn item_bytes(item: &Item) -> Vec<u8> {
    encode(item)
}

/// Decode an item received in a SWIM packet (at most one datagram long).
pub(crate) fn decode_item(bytes: &[u8]) -> Result<Item, DecodeError> {
    decode(bytes, super::config::MAX_DATAGRAM_LIMIT, "broadcast item")
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
