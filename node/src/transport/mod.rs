//! The node's front doors besides the router itself:
//!
//! - [`tls`]: TLS 1.3 server and client configs (rustls on ring), certificate files.
//! - [`certs`]: a development CA and the certificates it signs (`meridian certs`, `meridian up`).
//! - [`tcp`]: HTTP/1.1 and HTTP/2 over TLS.
//! - [`quic`]: the UDP endpoint: HTTP/3 ([`h3`]) and the native protocol ([`crate::native`]),
//!   told apart by ALPN.

pub mod certs;
pub mod h3;
pub mod quic;
pub mod tcp;
pub mod tls;
