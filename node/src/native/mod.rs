//! The native QUIC protocol (ALPN `meridian/1`), specified in docs/protocol.md:
//!
//! - [`frame`]: the length-prefixed framing, pure and fuzzed.
//! - [`io`]: reading frames off any async byte stream, bounded.
//! - [`server`]: the node's side: one `HELLO` per connection authenticates it; then every
//!   bidirectional stream is a request: `OPEN`, rows frames, and one `RESULT` (or `ERROR`) per
//!   rows frame, in order. Unary is a stream with one rows frame.

pub mod frame;
pub mod io;
pub mod server;

/// Application error codes: in `CONNECTION_CLOSE` and `RESET_STREAM`/`STOP_SENDING` (below 16),
/// and in `ERROR` frames (the HTTP status the same failure gets: 400, 401, 403, 404, 413, 422,
/// 429, 500, 503).
pub mod code {
    pub const NO_ERROR: u32 = 0;
    /// A frame that cannot be decoded, or a frame kind out of place.
    pub const PROTOCOL: u32 = 1;
    /// A frame longer than the node's limit.
    pub const FRAME_TOO_LARGE: u32 = 2;
    /// The `HELLO` token was missing, invalid, expired or revoked.
    pub const UNAUTHENTICATED: u32 = 3;
    /// The `HELLO` asked for a protocol version this node does not speak.
    pub const UNSUPPORTED_VERSION: u32 = 4;
    /// The node is shutting down; reconnect elsewhere.
    pub const SHUTTING_DOWN: u32 = 5;
    /// No `HELLO` within the handshake timeout.
    pub const HELLO_TIMEOUT: u32 = 6;
}
