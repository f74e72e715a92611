//! meridian-benches: measurements, never pass/fail tests.
//!
//! - `http-load.sh` + `wrk/post.lua`: HTTP/1.1 load on a local mesh (`meridian up`) for the seed
//!   API and V2 JSON at concurrency 1, 8 and 64; figures in `docs/performance.md`.
//!
//! Will hold (later issues): criterion micro-benchmarks of the runtimes and the request path,
//! and the Rust load generator (HdrHistogram, closed and open loop corrected for coordinated
//! omission, HTTP/1.1, HTTP/3, native QUIC and V2).
