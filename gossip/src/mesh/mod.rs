//! The mesh, sans-IO: SWIM membership (foca) and the state replicated beside it — the signed
//! catalog, revoked API keys, each node's info — as a core driven by `now`, inputs and an RNG.
//! No sockets, no clock, no tasks: a QUIC driver and the simulator (`simulations/`) run it.
//!
//! - [`identity`]: who a member is (node id, mesh address, region, generation), interned.
//! - [`codec`]: datagram framing, foca's codec, bounded decoders.
//! - [`sign`]: control's ed25519 signatures on catalogs and revocations; adoption rules.
//! - [`state`]: the replica and its merge rules, broadcast items, summaries, pulls.
//! - [`core`]: [`MeshCore`], which ties them together; [`output`]: what it asks the driver to do.
//! - [`config`]: tuning, with the reasons for each default; [`counters`]: what it counts.
//!
//! How a driver runs a core: feed it every mesh datagram (`handle_datagram`), every pull
//! stream a peer opens (`serve_pull`, answer on the same stream), the answers to its own pulls
//! (`handle_pull_response` / `handle_pull_failed`) and its due timers (`handle_timer`), each
//! with the current monotonic time; after each call, drain `poll_output` (datagrams to send,
//! pulls to open, timers to arm) and `poll_event` (what changed).

pub mod codec;
pub mod config;
pub mod core;
pub mod counters;
pub mod identity;
pub mod output;
pub mod sign;
pub mod state;

pub use self::core::{LocalNode, MeshCore};
pub use config::MeshConfig;
pub use counters::Counters;
pub use identity::{shared_interner, Interner, MeshIdentity, SharedInterner};
pub use output::{Event, Output, Timer};
pub use sign::{ControlKey, ControlPublicKey, Rejection, SignedCatalog, SignedRevocation, Verifier};
pub use state::{AdoptedCatalog, InfoRecord, PullRequest, PullResponse, Summary};
