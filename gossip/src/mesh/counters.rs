//! What the mesh core counts: traffic, and everything it dropped or refused. The node exports
//! these as Prometheus counters; the simulator reads them for its report. No I/O.

/// Monotonic counters (never reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Datagrams longer than the configured maximum, dropped unread.
    pub dropped_oversized: u64,
    /// Datagrams with an unknown tag or a body that does not decode.
    pub dropped_undecodable: u64,
    /// SWIM packets foca refused (malformed, for another identity, from ourselves, ...).
    pub swim_refused: u64,
    /// Catalogs refused for a bad or unknown signature.
    pub catalogs_forged: u64,
    /// Catalogs older than ours (a rollback attempt or a very late packet), refused.
    pub catalogs_stale: u64,
    /// Copies of the catalog we already hold (normal: gossip sends each item several times).
    pub catalog_duplicates: u64,
    pub catalogs_malformed: u64,
    pub catalogs_adopted: u64,
    pub revocations_refused: u64,
    pub infos_refused: u64,
    pub pulls_sent: u64,
    pub pulls_failed: u64,
    pub pulls_served: u64,
    /// Pull requests or responses that were oversized or did not decode.
    pub pulls_refused: u64,
    pub pull_bytes_in: u64,
    pub pull_bytes_out: u64,
    /// Members this node's probes found unresponsive (suspected).
    pub suspicions: u64,
    pub members_down: u64,
    /// Members that came back within `flap_window` of going down.
    pub flaps: u64,
    /// Times this node was declared down and rejoined under a new generation.
    pub rejoins: u64,
}

impl Counters {
    /// Field-wise sum: the core keeps traffic counts apart from the replica's merge counts.
    pub fn merged(&self, other: &Self) -> Self {
        Self {
            datagrams_in: self.datagrams_in + other.datagrams_in,
            datagrams_out: self.datagrams_out + other.datagrams_out,
            bytes_in: self.bytes_in + other.bytes_in,
            bytes_out: self.bytes_out + other.bytes_out,
            dropped_oversized: self.dropped_oversized + other.dropped_oversized,
            dropped_undecodable: self.dropped_undecodable + other.dropped_undecodable,
            swim_refused: self.swim_refused + other.swim_refused,
            catalogs_forged: self.catalogs_forged + other.catalogs_forged,
            catalogs_stale: self.catalogs_stale + other.catalogs_stale,
            catalog_duplicates: self.catalog_duplicates + other.catalog_duplicates,
            catalogs_malformed: self.catalogs_malformed + other.catalogs_malformed,
            catalogs_adopted: self.catalogs_adopted + other.catalogs_adopted,
            revocations_refused: self.revocations_refused + other.revocations_refused,
            infos_refused: self.infos_refused + other.infos_refused,
            pulls_sent: self.pulls_sent + other.pulls_sent,
            pulls_failed: self.pulls_failed + other.pulls_failed,
            pulls_served: self.pulls_served + other.pulls_served,
            pulls_refused: self.pulls_refused + other.pulls_refused,
            pull_bytes_in: self.pull_bytes_in + other.pull_bytes_in,
            pull_bytes_out: self.pull_bytes_out + other.pull_bytes_out,
            suspicions: self.suspicions + other.suspicions,
            members_down: self.members_down + other.members_down,
            flaps: self.flaps + other.flaps,
            rejoins: self.rejoins + other.rejoins,
        }
    }
}
