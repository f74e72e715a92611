//! Wire formats of the mesh, every decoder bounded and panic-free. No I/O.
//!
//! - A datagram is one tag byte and a body: [`TAG_SWIM`] (a foca packet, encoded by
//!   [`SwimCodec`]) or [`TAG_SUMMARY`] (an anti-entropy [`Summary`], postcard).
//! - Custom broadcasts, pull requests and pull responses are postcard-encoded enums/structs;
//!   postcard never allocates more than the input holds, and every input is length-checked
//!   against a limit before decoding.

use bytes::{Buf, BufMut};
use foca::{Header, Member, Message, State};
use serde::{de::DeserializeOwned, Serialize};

use super::identity::{lock, MeshIdentity, SharedInterner};

/// First byte of every mesh datagram.
pub const TAG_SWIM: u8 = 1;
pub const TAG_SUMMARY: u8 = 2;

/// Most bytes a pull request may have (it names node ids and flags, nothing big).
pub const MAX_PULL_REQUEST: usize = 64 * 1024;
/// Most bytes a pull response may have: a catalog of 10,000 models is ~10 MB of JSON.
pub const MAX_PULL_RESPONSE: usize = 64 * 1024 * 1024;
/// Most members one pull response may carry.
pub const MAX_MEMBERS: usize = 100_000;

/// Why bytes from the network were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes exceed the limit of {1}")]
    TooBig(usize, usize),
    #[error("empty")]
    Empty,
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// Encode with postcard; our own types never fail to encode.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decode a whole buffer of at most `max` bytes; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize, what: &'static str) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooBig(bytes.len(), max));
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(DecodeError::Malformed(what)),
    }
}

/// foca's codec for [`MeshIdentity`]: headers and members in a compact hand-written form,
/// identities decoded through the shared interner.
#[derive(Clone)]
pub struct SwimCodec {
    interner: SharedInterner,
}

impl SwimCodec {
    pub fn new(interner: SharedInterner) -> Self {
        Self { interner }
    }

    fn identity(&self, buf: &mut impl Buf) -> Result<MeshIdentity, DecodeError> {
        let (id, used) =
            lock(&self.interner).decode(buf.chunk()).map_err(|_| DecodeError::Malformed("identity"))?;
        buf.advance(used);
        Ok(id)
    }

    /// An identity that can be a member: only an announce's destination may be a
    /// placeholder (no node id), never a sender or a member.
    fn member_identity(&self, buf: &mut impl Buf) -> Result<MeshIdentity, DecodeError> {
        let id = self.identity(buf)?;
        if id.node().is_empty() {
            return Err(DecodeError::Malformed("member without a node id"));
        }
        Ok(id)
    }

    /// Encode members (a pull response's membership) back to back.
    pub fn encode_members<'a>(&mut self, members: impl Iterator<Item = &'a Member<MeshIdentity>>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in members {
            put_member(m, &mut out);
        }
        out
    }

    /// Decode members written by [`Self::encode_members`], at most [`MAX_MEMBERS`].
    pub fn decode_members(&mut self, mut bytes: &[u8]) -> Result<Vec<Member<MeshIdentity>>, DecodeError> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            if out.len() == MAX_MEMBERS {
                return Err(DecodeError::TooBig(out.len() + 1, MAX_MEMBERS));
            }
            out.push(foca::Codec::decode_member(self, &mut bytes)?);
        }
        Ok(out)
    }
}

fn put_member(m: &Member<MeshIdentity>, mut buf: impl BufMut) {
    buf.put_slice(m.id().encoded());
    buf.put_u16(m.incarnation());
    buf.put_u8(match m.state() {
        State::Alive => 0,
        State::Suspect => 1,
        State::Down => 2,
    });
}

fn need(buf: &impl Buf, n: usize) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        Err(DecodeError::Malformed("truncated"))
    } else {
        Ok(())
    }
}

fn get_u8(buf: &mut impl Buf) -> Result<u8, DecodeError> {
    need(buf, 1)?;
    Ok(buf.get_u8())
}

impl foca::Codec<MeshIdentity> for SwimCodec {
    type Error = DecodeError;

    fn encode_header(
        &mut self,
        header: &Header<MeshIdentity>,
        mut buf: impl BufMut,
    ) -> Result<(), DecodeError> {
        let mut out = Vec::with_capacity(2 * 64);
        out.extend_from_slice(header.src.encoded());
        out.put_u16(header.src_incarnation);
        out.extend_from_slice(header.dst.encoded());
        let (tag, probe, other) = match &header.message {
            Message::Ping(n) => (0, Some(*n), None),
            Message::Ack(n) => (1, Some(*n), None),
            Message::PingReq { target, probe_number } => (2, Some(*probe_number), Some(target)),
            Message::IndirectPing { origin, probe_number } => (3, Some(*probe_number), Some(origin)),
            Message::IndirectAck { target, probe_number } => (4, Some(*probe_number), Some(target)),
            Message::ForwardedAck { origin, probe_number } => (5, Some(*probe_number), Some(origin)),
            Message::Announce => (6, None, None),
            Message::Feed => (7, None, None),
            Message::Gossip => (8, None, None),
            Message::Broadcast => (9, None, None),
            Message::TurnUndead => (10, None, None),
        };
        out.push(tag);
        out.extend(probe);
        if let Some(id) = other {
            out.extend_from_slice(id.encoded());
        }
        if buf.remaining_mut() < out.len() {
            return Err(DecodeError::TooBig(out.len(), buf.remaining_mut()));
        }
        buf.put_slice(&out);
        Ok(())
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<MeshIdentity>, DecodeError> {
        let src = self.member_identity(&mut buf)?;
        need(&buf, 2)?;
        let src_incarnation = buf.get_u16();
        let dst = self.identity(&mut buf)?;
        let tag = get_u8(&mut buf)?;
        let message = match tag {
            0 => Message::Ping(get_u8(&mut buf)?),
            1 => Message::Ack(get_u8(&mut buf)?),
            2..=5 => {
                let probe_number = get_u8(&mut buf)?;
                let id = self.identity(&mut buf)?;
                match tag {
                    2 => Message::PingReq { target: id, probe_number },
                    3 => Message::IndirectPing { origin: id, probe_number },
                    4 => Message::IndirectAck { target: id, probe_number },
                    _ => Message::ForwardedAck { origin: id, probe_number },
                }
            }
            6 => Message::Announce,
            7 => Message::Feed,
            8 => Message::Gossip,
            9 => Message::Broadcast,
            10 => Message::TurnUndead,
            other => return Err(DecodeError::UnknownTag(other)),
        };
        Ok(Header { src, src_incarnation, dst, message })
    }

    fn encode_member(&mut self, member: &Member<MeshIdentity>, buf: impl BufMut) -> Result<(), DecodeError> {
        let len = member.id().encoded().len() + 3;
        if buf.remaining_mut() < len {
            return Err(DecodeError::TooBig(len, buf.remaining_mut()));
        }
        put_member(member, buf);
        Ok(())
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<MeshIdentity>, DecodeError> {
        let id = self.member_identity(&mut buf)?;
        need(&buf, 3)?;
        let incarnation = buf.get_u16();
        let state = match buf.get_u8() {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            other => return Err(DecodeError::UnknownTag(other)),
        };
        Ok(Member::new(id, incarnation, state))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::identity::shared_interner;
    use super::*;
    use foca::Codec;

    fn id(n: u16) -> MeshIdentity {
        MeshIdentity::new(&format!("node-{n}"), ([10, 0, 0, 2], 7000 + n).into(), "eu-west", 9).unwrap()
    }

    fn messages() -> Vec<Message<MeshIdentity>> {
        vec![
            Message::Ping(1),
            Message::Ack(2),
            Message::PingReq { target: id(3), probe_number: 3 },
            Message::IndirectPing { origin: id(4), probe_number: 4 },
            Message::IndirectAck { target: id(5), probe_number: 5 },
            Message::ForwardedAck { origin: id(6), probe_number: 6 },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::Broadcast,
            Message::TurnUndead,
        ]
    }

    #[test]
    fn headers_and_members_round_trip_and_every_truncation_is_an_error() {
        let mut codec = SwimCodec::new(shared_interner());
        for message in messages() {
            let header = Header { src: id(1), src_incarnation: 7, dst: id(2), message };
            let mut buf = Vec::new();
            codec.encode_header(&header, &mut buf).unwrap();
            assert_eq!(codec.decode_header(&buf[..]).unwrap(), header);
            for cut in 0..buf.len() {
                assert!(codec.decode_header(&buf[..cut]).is_err(), "{header:?} cut at {cut}");
            }
        }
        let members = [Member::new(id(1), 3, State::Suspect), Member::alive(id(2)), Member::down(id(3))];
        let bytes = codec.encode_members(members.iter());
        assert_eq!(codec.decode_members(&bytes).unwrap(), members);
        assert!(codec.decode_members(&bytes[..bytes.len() - 1]).is_err());
        let placeholder = Member::alive(MeshIdentity::placeholder(([10, 0, 0, 3], 1).into()));
        let bytes = codec.encode_members([placeholder].iter());
        assert!(codec.decode_members(&bytes).is_err());
    }

    #[test]
    fn a_member_that_does_not_fit_leaves_the_buffer_clean() {
        let mut codec = SwimCodec::new(shared_interner());
        let mut small = bytes::BytesMut::new().limit(10);
        assert!(codec.encode_member(&Member::alive(id(1)), &mut small).is_err());
        assert!(small.get_ref().is_empty());
    }

    #[test]
    fn random_bytes_never_panic_the_decoders() {
        let mut codec = SwimCodec::new(shared_interner());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..2_000usize {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = codec.decode_header(&bytes[..]);
            let _ = codec.decode_members(&bytes);
            let _ = decode::<Vec<String>>(&bytes, 1_000, "junk");
        }
        assert_eq!(decode::<u8>(&[0; 2_000], 1_000, "x"), Err(DecodeError::TooBig(2_000, 1_000)));
        assert_eq!(decode::<u8>(&[1, 2], 10, "x"), Err(DecodeError::Malformed("x")));
    }
}
