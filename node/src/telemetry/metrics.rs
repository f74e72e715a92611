//! The node's Prometheus metrics. Names are constants here and in `docs/metrics.md`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub const REQUESTS: &str = "meridian_requests";
pub const REQUEST_DURATION: &str = "meridian_request_duration_seconds";
pub const ROWS: &str = "meridian_rows";
pub const QUEUE_DEPTH: &str = "meridian_queue_depth";
pub const CATALOG_EPOCH: &str = "meridian_catalog_epoch";
pub const MODELS_LOADED: &str = "meridian_models_loaded";
pub const FEATURE_LOOKUPS: &str = "meridian_feature_lookups";
pub const FEATURE_BREAKER_OPEN: &str = "meridian_feature_breaker_open";
pub const REPORTS_DROPPED: &str = "meridian_latency_reports_dropped";
pub const MODEL_RUNTIME: &str = "meridian_model_runtime";
/// Exposed with `_total` (prometheus-client names counters so).
pub const AUTH_FAILURES: &str = "meridian_auth_failures";
pub const RATE_LIMITED: &str = "meridian_rate_limited";
pub const FORWARDED: &str = "meridian_forwarded";
pub const MESH_MEMBERS: &str = "meridian_mesh_members";
pub const MESH_EVENTS: &str = "meridian_mesh_events";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// A counter of the mesh core or its QUIC driver (`catalogs_forged`, `connect_failures`, ...).
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    /// The peer that was asked.
    pub peer: String,
    /// `h3` or `http`.
    pub transport: &'static str,
    /// `answered` (any status but 503), `unavailable` (503) or `failed` (no answer).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `alive`, `suspect` or `down`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `missing`, `malformed`, `invalid`, `expired`, `not_yet_valid`, `audience`, `issuer`,
    /// `revoked`, `unknown_key`, `scope` or `model`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `predict` or `batch`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// `l1`, `sled`, `redis` or `sled_stale`.
    pub tier: &'static str,
    /// `hit` (a row was found) or `miss`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub version: String,
    /// Experiment arm (`shadow` for shadow copies); empty without an experiment.
    pub arm: String,
    /// `predict` (seed API) or `v2` (Open Inference Protocol).
    pub api: String,
    /// HTTP status code of the answer.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    pub model: String,
    pub version: String,
    /// `tract-cpu`, `wgpu:<adapter>`, or `tract-cpu (fell back from wgpu:<adapter>)`.
    pub runtime: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub model: String,
    pub version: String,
    pub arm: String,
    pub api: String,
}

/// One answered request, as the metrics see it. `version` is empty when no model was
/// resolved; `arm` is empty without an experiment.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub model: &'a str,
    pub version: &'a str,
    pub arm: &'a str,
    pub api: &'a str,
    pub code: u16,
    pub seconds: f64,
    pub rows: usize,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<LatencyLabels, Histogram>,
    pub rows: Family<ModelLabels, Counter>,
    pub queue_depth: Family<ModelLabels, Gauge>,
    pub catalog_epoch: Gauge,
    pub models_loaded: Gauge,
    pub feature_lookups: Family<LookupLabels, Counter>,
    pub feature_breaker_open: Gauge,
    pub reports_dropped: Counter,
    pub model_runtime: Family<RuntimeLabels, Gauge>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub rate_limited: Family<KindLabels, Counter>,
    pub forwarded: Family<ForwardLabels, Counter>,
    pub mesh_members: Family<StateLabels, Gauge>,
    pub mesh_events: Family<EventLabels, Counter>,
    /// The mesh counters' values at the last scrape (they are exported as increments).
    mesh_seen: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~13 s in ×2 steps.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// The mesh's metrics: forwards, members by state, the core's and driver's counters.
fn register_mesh(
    registry: &mut Registry,
) -> (Family<ForwardLabels, Counter>, Family<StateLabels, Gauge>, Family<EventLabels, Counter>) {
    let forwarded = Family::<ForwardLabels, Counter>::default();
    registry.register(
        FORWARDED,
        "Requests this node forwarded to a peer holding the model, by peer, transport and outcome",
        forwarded.clone(),
    );
    let mesh_members = Family::<StateLabels, Gauge>::default();
    registry.register(MESH_MEMBERS, "Mesh members this node knows, by state", mesh_members.clone());
    let mesh_events = Family::<EventLabels, Counter>::default();
    registry.register(
        MESH_EVENTS,
        "What the mesh counted: traffic, and everything it dropped or refused (docs/mesh.md)",
        mesh_events.clone(),
    );
    (forwarded, mesh_members, mesh_events)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration =
            Family::<LatencyLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let rows = Family::<ModelLabels, Counter>::default();
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        let catalog_epoch = Gauge::default();
        let models_loaded = Gauge::default();
        registry.register(
            REQUESTS,
            "Inference requests answered, by model, version, API and status code",
            requests.clone(),
        );
        registry.register(REQUEST_DURATION, "Time from request decoded to answer encoded", duration.clone());
        registry.register(ROWS, "Rows scored", rows.clone());
        registry.register(QUEUE_DEPTH, "Requests waiting in a model version's queue", queue_depth.clone());
        registry.register(CATALOG_EPOCH, "Epoch of the catalog this node serves", catalog_epoch.clone());
        registry.register(MODELS_LOADED, "Model versions loaded (live and previous)", models_loaded.clone());
        let feature_lookups = Family::<LookupLabels, Counter>::default();
        let feature_breaker_open = Gauge::default();
        registry.register(
            FEATURE_LOOKUPS,
            "Feature store lookups by the tier that answered",
            feature_lookups.clone(),
        );
        registry.register(
            FEATURE_BREAKER_OPEN,
            "1 while the circuit breaker in front of Redis is open",
            feature_breaker_open.clone(),
        );
        let reports_dropped = Counter::default();
        registry.register(
            REPORTS_DROPPED,
            "Latency reports dropped because control was unreachable too long",
            reports_dropped.clone(),
        );
        let model_runtime = Family::<RuntimeLabels, Gauge>::default();
        registry.register(
            MODEL_RUNTIME,
            "1 for the runtime serving each loaded model version",
            model_runtime.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            AUTH_FAILURES,
            "Requests refused by authentication (401) or authorization (403)",
            auth_failures.clone(),
        );
        let rate_limited = Family::<KindLabels, Counter>::default();
        registry.register(
            RATE_LIMITED,
            "Requests refused by a per-key rate limit (429)",
            rate_limited.clone(),
        );
        let (forwarded, mesh_members, mesh_events) = register_mesh(&mut registry);
        Self {
            forwarded,
            mesh_members,
            mesh_events,
            mesh_seen: Default::default(),
            auth_failures,
            rate_limited,
            model_runtime,
            registry,
            requests,
            duration,
            rows,
            queue_depth,
            catalog_epoch,
            models_loaded,
            feature_lookups,
            feature_breaker_open,
            reports_dropped,
        }
    }
}

impl Metrics {
    /// Record one forward to a peer.
    pub fn forwarded(&self, peer: &str, transport: &'static str, outcome: &'static str) {
        self.forwarded.get_or_create(&ForwardLabels { peer: peer.to_string(), transport, outcome }).inc();
    }

    /// Bring `meridian_mesh_events` up to the mesh's counters (`name → total since start`).
    pub fn mesh_counters(&self, totals: impl IntoIterator<Item = (String, u64)>) {
        let Ok(mut seen) = self.mesh_seen.lock() else { return };
        for (event, total) in totals {
            let last = seen.entry(event.clone()).or_insert(0);
            let delta = total.saturating_sub(*last);
            *last = total.max(*last);
            let counter = self.mesh_events.get_or_create(&EventLabels { event });
            counter.inc_by(delta);
        }
    }

    /// Record one answered request.
    pub fn observe(&self, o: &Outcome<'_>) {
        self.requests
            .get_or_create(&RequestLabels {
                model: o.model.to_string(),
                version: o.version.to_string(),
                arm: o.arm.to_string(),
                api: o.api.to_string(),
                code: o.code.to_string(),
            })
            .inc();
        if o.code == 200 {
            let labels = LatencyLabels {
                model: o.model.to_string(),
                version: o.version.to_string(),
                arm: o.arm.to_string(),
                api: o.api.to_string(),
            };
            self.duration.get_or_create(&labels).observe(o.seconds);
            let labels = ModelLabels { model: o.model.to_string(), version: o.version.to_string() };
            self.rows.get_or_create(&labels).inc_by(o.rows as u64);
        }
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn rate_limited(&self, kind: &'static str) {
        self.rate_limited.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn feature_lookup(&self, tier: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.feature_lookups.get_or_create(&LookupLabels { tier, result }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
