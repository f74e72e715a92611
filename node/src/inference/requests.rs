//! Recently served one-row predictions by request id, so feedback (`POST /api/v1/feedback`)
//! can be joined to the model, version and arm that answered. Bounded in size and age; a
//! request id takes one outcome (it is forgotten once feedback arrives).

use std::time::Duration;

use moka::sync::Cache;

#[derive(Debug, Clone)]
pub struct Served {
    pub model: String,
    pub version: u32,
    pub arm: String,
    pub prediction: f64,
    pub class: Option<usize>,
}

pub struct RequestLog {
    cache: Cache<String, Served>,
    ttl: Duration,
}

impl RequestLog {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self { cache: Cache::builder().max_capacity(capacity).time_to_live(ttl).build(), ttl }
    }

    pub fn remember(&self, request_id: String, served: Served) {
        self.cache.insert(request_id, served);
    }

    /// The request's record, removed so it cannot be scored twice.
    pub fn take(&self, request_id: &str) -> Option<Served> {
        self.cache.remove(request_id)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}
