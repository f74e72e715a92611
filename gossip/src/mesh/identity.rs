//! Who a mesh member is: node id, mesh socket address, region and a generation that the node
//! bumps when it restarts or has to rejoin (foca's `Identity::renew`). No I/O.
//!
//! Identities are interned: the same encoded identity decodes to one shared allocation. A node
//! sees each peer's identity in every SWIM packet and keeps the whole membership in memory, so
//! this keeps both the allocation rate and the resident size small; the simulator shares one
//! [`Interner`] among all its nodes to fit 10,000 of them (10^8 member entries) in memory.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

/// Longest node id and region name an identity may carry (bytes of UTF-8).
pub const MAX_NODE_ID: usize = 64;
pub const MAX_REGION: usize = 32;
/// Longest encoded identity: length byte, generation, address (tag, 16 bytes, port), two
/// length-prefixed strings.
pub const MAX_IDENTITY_BYTES: usize = 1 + 4 + 1 + 16 + 2 + 1 + MAX_REGION + 1 + MAX_NODE_ID;

/// A member of the mesh. Cheap to clone (one shared allocation) and 16 bytes wide, because
/// foca keeps one per member and scans them linearly.
#[derive(Clone)]
pub struct MeshIdentity {
    /// 64 bits of sha256(mesh address): what foca compares to tell that two identities are
    /// the same node in different generations (`Identity::addr`). Two distinct addresses
    /// share a key with probability ~n²/2^65 (3·10^-12 for 10,000 nodes).
    key: u64,
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    addr: SocketAddr,
    region: String,
    generation: u32,
    /// The wire form, length byte included: what the interner is keyed by.
    encoded: Box<[u8]>,
}

/// Why an identity could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("node id must be 1..={MAX_NODE_ID} bytes, region at most {MAX_REGION}")]
    BadLength,
    #[error("identity truncated or malformed")]
    Malformed,
}

impl MeshIdentity {
    /// Build an identity outside any interner (tests, seeds); prefer [`Interner::identity`].
    pub fn new(node: &str, addr: SocketAddr, region: &str, generation: u32) -> Result<Self, IdentityError> {
        if node.is_empty() && generation != 0 || node.len() > MAX_NODE_ID || region.len() > MAX_REGION {
            return Err(IdentityError::BadLength);
        }
        let mut encoded = vec![0u8];
        encoded.extend_from_slice(&generation.to_be_bytes());
        match addr.ip() {
            IpAddr::V4(ip) => {
                encoded.push(4);
                encoded.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                encoded.push(6);
                encoded.extend_from_slice(&ip.octets());
            }
        }
        encoded.extend_from_slice(&addr.port().to_be_bytes());
        for s in [region, node] {
            encoded.push(s.len() as u8);
            encoded.extend_from_slice(s.as_bytes());
        }
        encoded[0] = (encoded.len() - 1) as u8;
        Ok(Self::from_parts(node.to_string(), addr, region.to_string(), generation, encoded.into()))
    }

    /// A stand-in for a peer known only by address (a seed): foca accepts an announce sent
    /// to any identity with our address, and the answer tells us who the peer really is.
    pub fn placeholder(addr: SocketAddr) -> Self {
        Self::new("", addr, "", 0).unwrap_or_else(|_| unreachable_identity(addr))
    }

    fn from_parts(
        node: String,
        addr: SocketAddr,
        region: String,
        generation: u32,
        encoded: Box<[u8]>,
    ) -> Self {
        Self { key: addr_key(addr), inner: Arc::new(Inner { node, addr, region, generation, encoded }) }
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }
    pub fn region(&self) -> &str {
        &self.inner.region
    }
    pub fn generation(&self) -> u32 {
        self.inner.generation
    }
    /// The wire form, length byte first.
    pub fn encoded(&self) -> &[u8] {
        &self.inner.encoded
    }

    /// This identity one generation later (foca renews an identity the cluster declared down).
    pub fn next_generation(&self) -> Option<Self> {
        let next = self.generation().checked_add(1)?;
        Self::new(self.node(), self.addr(), self.region(), next).ok()
    }
}

/// `placeholder` cannot fail (empty strings, generation 0); this keeps it panic-free anyway.
fn unreachable_identity(addr: SocketAddr) -> MeshIdentity {
    MeshIdentity::from_parts(String::new(), addr, String::new(), 0, Box::new([0]))
}

fn addr_key(addr: SocketAddr) -> u64 {
    let mut h = Sha256::new();
    match addr.ip() {
        IpAddr::V4(ip) => h.update(ip.octets()),
        IpAddr::V6(ip) => h.update(ip.octets()),
    }
    h.update(addr.port().to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl PartialEq for MeshIdentity {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.key == other.key && self.inner.encoded == other.inner.encoded)
    }
}
impl Eq for MeshIdentity {}

impl Hash for MeshIdentity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.encoded.hash(state);
    }
}

impl fmt::Debug for MeshIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}/{}#{}", self.node(), self.addr(), self.region(), self.generation())
    }
}

impl foca::Identity for MeshIdentity {
    type Addr = u64;

    fn renew(&self) -> Option<Self> {
        self.next_generation()
    }

    fn addr(&self) -> u64 {
        self.key
    }

    /// The later generation wins: it is the node after a restart or a rejoin.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation() > adversary.generation()
    }
}

/// Decodes identities, sharing one allocation per distinct identity. Entries nobody else
/// holds are dropped when the table has doubled since the last sweep, so it stays about the
/// size of the membership.
#[derive(Default)]
pub struct Interner {
    table: FxHashMap<Box<[u8]>, MeshIdentity>,
    swept_at: usize,
}

/// An interner shared by the codec of one core (a node) or of many (the simulator).
pub type SharedInterner = Arc<Mutex<Interner>>;

pub fn shared_interner() -> SharedInterner {
    Arc::new(Mutex::new(Interner::default()))
}

impl Interner {
    /// Decode the identity at the start of `buf`; returns it and the bytes it took.
    pub fn decode(&mut self, buf: &[u8]) -> Result<(MeshIdentity, usize), IdentityError> {
        let len = usize::from(*buf.first().ok_or(IdentityError::Malformed)?) + 1;
        let encoded = buf.get(..len).ok_or(IdentityError::Malformed)?;
        if let Some(known) = self.table.get(encoded) {
            return Ok((known.clone(), len));
        }
        let id = parse(encoded)?;
        self.insert(id.clone());
        Ok((id, len))
    }

    /// Intern an identity built elsewhere (our own, a seed's).
    pub fn intern(&mut self, id: MeshIdentity) -> MeshIdentity {
        if let Some(known) = self.table.get(id.encoded()) {
            return known.clone();
        }
        self.insert(id.clone());
        id
    }

    fn insert(&mut self, id: MeshIdentity) {
        if self.table.len() > 2 * self.swept_at + 1_024 {
            self.table.retain(|_, v| Arc::strong_count(&v.inner) > 1);
            self.swept_at = self.table.len();
        }
        self.table.insert(id.inner.encoded.clone(), id);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// Lock a shared interner; a poisoned lock still holds a consistent table (inserts are whole).
pub(crate) fn lock(interner: &SharedInterner) -> std::sync::MutexGuard<'_, Interner> {
    interner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn parse(encoded: &[u8]) -> Result<MeshIdentity, IdentityError> {
    let mut r = Reader(&encoded[1..]);
    let generation = u32::from_be_bytes(r.array()?);
    let ip = match r.byte()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        _ => return Err(IdentityError::Malformed),
    };
    let port = u16::from_be_bytes(r.array()?);
    let region = r.string(MAX_REGION)?;
    let node = r.string(MAX_NODE_ID)?;
    if !r.0.is_empty() {
        return Err(IdentityError::Malformed);
    }
    Ok(MeshIdentity::from_parts(node, SocketAddr::new(ip, port), region, generation, encoded.into()))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, IdentityError> {
        Ok(self.array::<1>()?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], IdentityError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(IdentityError::Malformed)?;
        self.0 = rest;
        Ok(*head)
    }
    fn string(&mut self, max: usize) -> Result<String, IdentityError> {
        let len = usize::from(self.byte()?);
        if len > max || len > self.0.len() {
            return Err(IdentityError::Malformed);
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| IdentityError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn identities_round_trip_and_intern_to_one_allocation() {
        let a = MeshIdentity::new("fra-1", addr(7000), "eu-central", 3).unwrap();
        let v6 = MeshIdentity::new("n", "[2001:db8::1]:9".parse().unwrap(), "r", 1).unwrap();
        let mut interner = Interner::default();
        for id in [&a, &v6] {
            let (decoded, used) = interner.decode(id.encoded()).unwrap();
            assert_eq!(&decoded, id);
            assert_eq!(used, id.encoded().len());
            assert_eq!((decoded.node(), decoded.addr()), (id.node(), id.addr()));
        }
        let (again, _) = interner.decode(a.encoded()).unwrap();
        let (third, _) = interner.decode(a.encoded()).unwrap();
        assert!(Arc::ptr_eq(&again.inner, &third.inner));
        assert_eq!(std::mem::size_of::<MeshIdentity>(), 16);
    }

    #[test]
    fn a_later_generation_wins_the_address() {
        let a = MeshIdentity::new("fra-1", addr(7000), "eu-central", 3).unwrap();
        let b = a.renew().unwrap();
        assert_eq!(b.generation(), 4);
        assert_eq!(Identity::addr(&a), Identity::addr(&b));
        assert_ne!(a, b);
        assert!(b.win_addr_conflict(&a) && !a.win_addr_conflict(&b));
        assert_eq!(Identity::addr(&MeshIdentity::placeholder(addr(7000))), Identity::addr(&a));
        assert_ne!(Identity::addr(&a), Identity::addr(&MeshIdentity::new("x", addr(7001), "r", 0).unwrap()));
    }

    #[test]
    fn bad_identities_are_refused_not_panicked_on() {
        assert!(MeshIdentity::new(&"x".repeat(65), addr(1), "r", 0).is_err());
        let good = MeshIdentity::new("fra-1", addr(7000), "eu-central", 3).unwrap();
        let mut interner = Interner::default();
        for cut in 0..good.encoded().len() {
            assert!(interner.decode(&good.encoded()[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.encoded().to_vec();
        bad[5] = 5; // unknown address family
        assert!(interner.decode(&bad).is_err());
        let mut bad_utf8 = good.encoded().to_vec();
        let last = bad_utf8.len() - 1;
        bad_utf8[last] = 0xff;
        assert!(interner.decode(&bad_utf8).is_err());
        for len in 0..=255u8 {
            let mut junk = vec![len];
            junk.extend(std::iter::repeat_n(0xa5, usize::from(len)));
            let _ = interner.decode(&junk);
        }
    }
}
