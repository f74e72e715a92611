//! The native protocol's framing (docs/protocol.md): `length: u32 big-endian` (the bytes that
//! follow: kind and payload), `kind: u8`, `payload`. Pure: no I/O, bounded, never panics.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol version sent in `HELLO` and `WELCOME`.
pub const VERSION: u32 = 1;
/// Bytes before the payload: length (4) and kind (1).
pub const HEADER_LEN: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client → node, first frame of the first stream: JSON `{"version", "token"}`.
    Hello = 1,
    /// Node → client: JSON `{"version", "node", "region", "max_frame_bytes"}`.
    Welcome = 2,
    /// Client → node, first frame of a request stream: JSON `{"model", "version", "unit"}`.
    Open = 3,
    /// Client → node: JSON array of rows, each an object of named features.
    RowsJson = 4,
    /// Client → node: `rows: u32 LE`, `cols: u32 LE`, then rows × cols `f32 LE`, row-major,
    /// in the model's feature order.
    RowsF32 = 5,
    /// Node → client, one per rows frame, in order: JSON `{"predictions", ...}`.
    Result = 6,
    /// Node → client: JSON `{"code", "status", "error"}`.
    Error = 7,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Open,
            4 => Kind::RowsJson,
            5 => Kind::RowsF32,
            6 => Kind::Result,
            7 => Kind::Error,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: Kind,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("frame length 0: a frame has at least its kind byte")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("rows frame: {0}")]
    BadRows(String),
}

/// Encode one frame.
pub fn encode(kind: Kind, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.put_u32(payload.len() as u32 + 1);
    out.put_u8(kind as u8);
    out.put_slice(payload);
    out.freeze()
}

/// Take one frame off the front of `buf` when it holds a whole one. `Ok(None)`: more bytes are
/// needed. A length over `max` (payload bytes) fails before any of the payload is awaited.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len - 1 > max {
        return Err(FrameError::TooLarge { len: len as u64 - 1, max });
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    let kind_byte = buf[4];
    let kind = Kind::from_u8(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len - 1).freeze();
    Ok(Some(Frame { kind, payload }))
}

/// A `RowsF32` payload.
pub fn encode_f32_rows(rows: u32, cols: u32, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + values.len() * 4);
    out.extend_from_slice(&rows.to_le_bytes());
    out.extend_from_slice(&cols.to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Rows, columns and values of a `RowsF32` payload; the sizes must agree exactly.
pub fn decode_f32_rows(payload: &[u8]) -> Result<(usize, usize, Vec<f32>), FrameError> {
    let bad = |m: String| FrameError::BadRows(m);
    if payload.len() < 8 {
        return Err(bad(format!("{} bytes; the header alone is 8", payload.len())));
    }
    let rows = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
    let cols = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]) as usize;
    let body = &payload[8..];
    let want = rows.checked_mul(cols).and_then(|n| n.checked_mul(4));
    if want != Some(body.len()) {
        return Err(bad(format!(
            "{rows} rows × {cols} columns need {want:?} bytes of f32, got {}",
            body.len()
        )));
    }
    let values = body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((rows, cols, values))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_frame_round_trips_and_waits_for_its_last_byte() {
        let bytes = encode(Kind::Open, br#"{"model":"m"}"#);
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert_eq!(decode(&mut buf, 1024), Ok(None));
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        let frame = decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((frame.kind, &frame.payload[..]), (Kind::Open, &br#"{"model":"m"}"#[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_huge_claimed_length_fails_before_the_payload_arrives() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 4][..]);
        assert_eq!(decode(&mut buf, 4096), Err(FrameError::TooLarge { len: 0xffff_fffe, max: 4096 }));
        let mut empty = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(decode(&mut empty, 4096), Err(FrameError::Empty));
        let mut unknown = BytesMut::from(&[0, 0, 0, 1, 99][..]);
        assert_eq!(decode(&mut unknown, 4096), Err(FrameError::UnknownKind(99)));
    }

    #[test]
    fn f32_rows_check_their_sizes() {
        let payload = encode_f32_rows(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(decode_f32_rows(&payload).unwrap(), (2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert!(decode_f32_rows(&payload[..payload.len() - 1]).is_err());
        let huge = encode_f32_rows(u32::MAX, u32::MAX, &[]);
        assert!(matches!(decode_f32_rows(&huge), Err(FrameError::BadRows(_))));
    }

    proptest! {
        /// Any bytes, cut anywhere: the decoder returns frames, asks for more or fails; it never
        /// panics, and a frame never exceeds the limit.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
            let mut buf = BytesMut::from(&data[..cut.min(data.len())]);
            while let Ok(Some(frame)) = decode(&mut buf, 64) {
                prop_assert!(frame.payload.len() <= 64);
            }
            let _ = decode_f32_rows(&data);
        }

        /// A sequence of frames, delivered in arbitrary pieces, decodes to the same sequence.
        #[test]
        fn frames_survive_any_split(
            frames in proptest::collection::vec((1u8..=7, proptest::collection::vec(any::<u8>(), 0..100)), 1..8),
            pieces in proptest::collection::vec(1usize..40, 1..64),
        ) {
            let wire: Vec<u8> = frames.iter()
                .flat_map(|(k, p)| encode(Kind::from_u8(*k).unwrap(), p).to_vec()).collect();
            let mut buf = BytesMut::new();
            let (mut at, mut got) = (0, Vec::new());
            for step in pieces.iter().cycle() {
                if at >= wire.len() { break; }
                let end = (at + step).min(wire.len());
                buf.extend_from_slice(&wire[at..end]);
                at = end;
                while let Some(f) = decode(&mut buf, 100).unwrap() {
                    got.push((f.kind as u8, f.payload.to_vec()));
                }
            }
            prop_assert_eq!(got, frames);
        }
    }
}
