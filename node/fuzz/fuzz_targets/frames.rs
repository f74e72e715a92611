//! The native protocol's decoder on arbitrary bytes: frames come out whole and within the
//! limit, or it asks for more, or it fails; it never panics. `cargo +nightly fuzz run frames`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meridian_node::native::frame::{decode, decode_f32_rows};

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the input is cut into arrivals, as a QUIC stream delivers it.
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decode(&mut buf, 4096) {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= 4096);
                    let _ = decode_f32_rows(&frame.payload);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
