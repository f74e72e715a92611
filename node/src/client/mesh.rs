//! [`MeshClient`]: predictions to a mesh of nodes, without the caller noticing when one goes
//! away. It learns the nodes from any node's `GET /api/v1/mesh/nodes`, measures its own RTT to
//! each (the best of three `GET /healthz`), calls the nearest, and moves on to the next when a
//! node is unreachable, too slow, or answers 503 (draining, shutting down). The list is fetched
//! and measured again in the background every [`MeshOptions::refresh`] and after a failure.
//! Does network I/O; its decisions (candidates, order, when to move on) are in
//! [`super::failover`]. Every network wait is bounded by one of [`MeshOptions`]' timeouts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), meridian_node::client::ClientError> {
//! use std::time::Duration;
//! use meridian_node::client::{MeshClient, MeshOptions, Rows, Transport};
//! let mesh = MeshClient::connect(
//!     vec!["https://10.0.0.1:7071".into(), "https://10.0.0.2:7071".into()],
//!     MeshOptions {
//!         transport: Transport::Native,
//!         ca: Some("data/certs/ca.pem".into()),
//!         token: Some("mk_...".into()),
//!         timeout: Duration::from_secs(2),
//!         ..Default::default()
//!     },
//! )
//! .await?;
//! println!("nearest first: {:?}", mesh.nodes().iter().map(|n| &n.id).collect::<Vec<_>>());
//! let answer = mesh.predict("breast-cancer-mlp", Rows::F32 { cols: 30, values: vec![0.0; 30] }).await?;
//! assert_eq!(Some(answer.served_by), mesh.last_served());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use meridian_gossip::MeshView;
use tokio::time::Instant;

use super::failover::{self, Candidate, Verdict};
use super::{host_port, tls_config, Answer, Client, ClientError, ClientOptions, Posted, Rows, Transport};

/// Probes per node and refresh; the best one counts (the first also pays for the connection).
const PROBES: usize = 3;
/// Nodes of the current list asked for the mesh view before the seeds, nearest first.
const VIEW_SOURCES: usize = 3;

/// How a [`MeshClient`] calls the nodes: the settings of each node's [`Client`] and the bounds
/// of the mesh's own requests.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// HTTP/1.1 by default: every node has an HTTP front end, only nodes with TLS have QUIC.
    /// HTTP/3 and the native protocol use each node's published `quic_addr`.
    pub transport: Transport,
    /// PEM file of the CA to trust for HTTPS and QUIC.
    pub ca: Option<PathBuf>,
    /// A JWT or API key (`predict` scope), sent to every node.
    pub token: Option<String>,
    /// Bound on each request to a node; past it the call moves on to the next node.
    pub timeout: Duration,
    /// Bound on connecting to a node (the QUIC handshake; HTTP/1.1 connects within
    /// `min(5 s, timeout)`).
    pub connect_timeout: Duration,
    /// Bound on fetching the mesh view from one node, and on each node's RTT probes.
    pub probe_timeout: Duration,
    /// How long a measured list is used before it is fetched and measured again (in the
    /// background; calls go on with the old list meanwhile).
    pub refresh: Duration,
    /// How many nodes one call tries at most before it returns the last node's error.
    pub max_attempts: usize,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Http1,
            ca: None,
            token: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(2),
            refresh: Duration::from_secs(5),
            max_attempts: 3,
        }
    }
}

/// A client of a whole mesh. Cheap to clone; clones share the node list and connections.
#[derive(Debug, Clone)]
pub struct MeshClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    seeds: Vec<String>,
    options: MeshOptions,
    /// For mesh views and probes.
    http: reqwest::Client,
    state: Mutex<State>,
    /// Held while the list is being fetched and measured: one refresh at a time.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug)]
struct State {
    /// Nearest first; a node that failed is moved last until the next refresh.
    nodes: Vec<Candidate>,
    refreshed_at: Instant,
    /// A node failed since the last refresh.
    stale: bool,
    /// One connected client per node id, for the URL and QUIC address it was made for.
    clients: HashMap<String, Cached>,
    last_served: Option<String>,
}

#[derive(Debug)]
struct Cached {
    made_for: (String, Option<String>),
    client: Client,
}

impl MeshClient {
    /// Fetch the mesh view from the first of `seeds` (node base URLs) that answers, measure the
    /// RTT to each candidate and order them. Seeds are asked again when no known node answers.
    /// Nodes without a mesh list only themselves: then every seed is asked and the lists joined,
    /// so a list of standalone nodes fails over too.
    ///
    /// Errors: no seed answered (`Connect`, or `Status` when one refused the token), or the
    /// view lists no node to call (`Unavailable`).
    pub async fn connect(seeds: Vec<String>, options: MeshOptions) -> Result<Self, ClientError> {
        let seeds: Vec<String> = seeds.iter().map(|s| s.trim().trim_end_matches('/').to_string()).collect();
        if seeds.iter().all(String::is_empty) {
            return Err(ClientError::Setup("MeshClient needs at least one seed URL".into()));
        }
        let tls = tls_config(
            &ClientOptions { ca: options.ca.clone(), ..ClientOptions::default() },
            &[b"http/1.1"],
        )?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(options.probe_timeout)
            .pool_idle_timeout(super::POOL_IDLE)
            .timeout(options.probe_timeout)
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let state = State {
            nodes: Vec::new(),
            refreshed_at: Instant::now(),
            stale: false,
            clients: HashMap::new(),
            last_served: None,
        };
        let inner = Inner {
            seeds: seeds.into_iter().filter(|s| !s.is_empty()).collect(),
            options,
            http,
            state: Mutex::new(state),
            refreshing: Arc::default(),
        };
        let client = Self { inner: Arc::new(inner) };
        client.refresh().await?;
        if client.inner.lock().nodes.is_empty() {
            return Err(ClientError::Unavailable("the mesh lists no node alive and not draining".into()));
        }
        Ok(client)
    }

    /// Predict `rows` with the live version of `model` on the nearest node that can answer.
    /// A 4xx (429 included) or 500 is returned at once; after [`MeshOptions::max_attempts`]
    /// nodes failed, the last one's error.
    pub async fn predict(&self, model: &str, rows: Rows) -> Result<Answer, ClientError> {
        let op = |client: Client| {
            let rows = rows.clone();
            async move { client.predict(model, rows).await }
        };
        let verdict =
            |r: &Result<Answer, ClientError>| r.as_ref().err().map_or(Verdict::Return, failover::after_error);
        let (answer, called) = self.call(Some(model), op, verdict).await?;
        let served = if answer.served_by.is_empty() { called } else { answer.served_by.clone() };
        self.inner.lock().last_served = Some(served);
        Ok(answer)
    }

    /// [`Client::post`] to the nearest node that can answer (HTTP transports only). Any status
    /// but 503 is the answer; when every node tried answered 503, the last 503 is. `node` is
    /// the answer's `x-meridian-node`, or the node called when it sent none.
    pub async fn post(&self, path: &str, body: Bytes) -> Result<Posted, ClientError> {
        let op = |client: Client| {
            let body = body.clone();
            async move { client.post_full(path, body).await }
        };
        let verdict = |r: &Result<Posted, ClientError>| match r {
            Ok(p) => failover::after_status(p.status),
            Err(e) => failover::after_error(e),
        };
        let (mut posted, called) = self.call(None, op, verdict).await?;
        let served = posted.node.get_or_insert(called).clone();
        self.inner.lock().last_served = Some(served);
        Ok(posted)
    }

    /// The candidates, nearest first as last measured (a node that failed since is last).
    pub fn nodes(&self) -> Vec<Candidate> {
        self.inner.lock().nodes.clone()
    }

    /// The node that served the last answer (from the answer itself), if any yet.
    pub fn last_served(&self) -> Option<String> {
        self.inner.lock().last_served.clone()
    }

    /// Fetch the mesh view and measure the nodes now, waiting for a refresh in progress first.
    /// On failure the old list stays.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        self.inner.refresh().await
    }

    /// Try `op` on the nodes in order (for a `model`, those holding it warm first) until
    /// `verdict` says the result is the caller's; the result and the id of the node that gave it.
    async fn call<T, F, Fut>(
        &self,
        model: Option<&str>,
        op: F,
        verdict: impl Fn(&Result<T, ClientError>) -> Verdict,
    ) -> Result<(T, String), ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut last = Err(ClientError::Unavailable("no node to call".into()));
        for node in self.plan(model).await? {
            let result = match self.client_for(&node).await {
                Ok(client) => op(client).await,
                Err(e) => Err(e),
            };
            if verdict(&result) == Verdict::Return {
                return result.map(|value| (value, node.id));
            }
            if let Err(e) = &result {
                tracing::debug!(node = %node.id, error = %e, "mesh client: trying the next node");
            }
            self.failed(&node.id);
            last = result.map(|value| (value, node.id));
        }
        last
    }

    /// The nodes one call may try. With no node known (every one failed to refresh so far),
    /// refresh first; otherwise refresh in the background when the list is due.
    async fn plan(&self, model: Option<&str>) -> Result<Vec<Candidate>, ClientError> {
        let attempts = self.inner.options.max_attempts.max(1);
        let pick = |nodes: &[Candidate]| -> Vec<Candidate> {
            let ordered = match model {
                Some(m) => failover::holders_first(nodes, m),
                None => nodes.to_vec(),
            };
            ordered.into_iter().take(attempts).collect()
        };
        let nodes = pick(&self.inner.lock().nodes);
        if !nodes.is_empty() {
            self.refresh_if_due();
            return Ok(nodes);
        }
        self.refresh().await?;
        let nodes = pick(&self.inner.lock().nodes);
        if nodes.is_empty() {
            return Err(ClientError::Unavailable("the mesh lists no node alive and not draining".into()));
        }
        Ok(nodes)
    }

    fn refresh_if_due(&self) {
        let due = {
            let s = self.inner.lock();
            failover::refresh_due(s.stale, s.refreshed_at.elapsed(), self.inner.options.refresh)
        };
        if due {
            self.refresh_in_background();
        }
    }

    fn refresh_in_background(&self) {
        let Ok(one_at_a_time) = self.inner.refreshing.clone().try_lock_owned() else { return };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _held = one_at_a_time;
            if let Err(e) = inner.refresh().await {
                tracing::debug!(error = %e, "mesh client: refreshing the node list failed; keeping the old one");
            }
        });
    }

    /// The node failed: last in the list, its connection dropped, the list due for a refresh.
    fn failed(&self, id: &str) {
        {
            let mut s = self.inner.lock();
            failover::demote(&mut s.nodes, id);
            s.clients.remove(id);
            s.stale = true;
        }
        self.refresh_if_due();
    }

    /// The cached client of `node`, or a new one connected within `connect_timeout`.
    async fn client_for(&self, node: &Candidate) -> Result<Client, ClientError> {
        let made_for = (node.http_url.clone(), node.quic_addr.clone());
        if let Some(cached) = self.inner.lock().clients.get(&node.id).filter(|c| c.made_for == made_for) {
            return Ok(cached.client.clone());
        }
        let o = &self.inner.options;
        let quic_addr = match (o.transport, &node.quic_addr) {
            (Transport::Http1, _) | (_, None) => None,
            (_, Some(addr)) => Some(resolve_quic(addr, &node.http_url, o.connect_timeout).await?),
        };
        let options = ClientOptions {
            url: node.http_url.clone(),
            transport: o.transport,
            ca: o.ca.clone(),
            token: o.token.clone(),
            quic_addr,
            timeout: o.timeout,
        };
        let client = tokio::time::timeout(o.connect_timeout, Client::connect(options))
            .await
            .map_err(|_| ClientError::Timeout(o.connect_timeout))??;
        self.inner.lock().clients.insert(node.id.clone(), Cached { made_for, client: client.clone() });
        Ok(client)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetch the candidates (from the nearest known nodes, then the seeds), measure and order
    /// them, and drop the clients of nodes no longer listed. On failure the old list stays
    /// until the next refresh is due.
    async fn refresh(&self) -> Result<(), ClientError> {
        let known: Vec<String> =
            self.lock().nodes.iter().take(VIEW_SOURCES).map(|n| n.http_url.clone()).collect();
        let mut sources = known;
        for seed in &self.seeds {
            if !sources.contains(seed) {
                sources.push(seed.clone());
            }
        }
        let fetched = self.fetch_candidates(&sources).await;
        let fetched = match fetched {
            Ok(candidates) => Ok(self.measure(candidates).await),
            Err(e) => Err(e),
        };
        let mut s = self.lock();
        s.refreshed_at = Instant::now();
        s.stale = false;
        let nodes = fetched?;
        s.clients.retain(|id, _| nodes.iter().any(|n| &n.id == id));
        s.nodes = nodes;
        Ok(())
    }

    /// The candidates of the first source's view that answers; of every seed's view joined
    /// when that node runs no mesh (it lists only itself).
    async fn fetch_candidates(&self, sources: &[String]) -> Result<Vec<Candidate>, ClientError> {
        let mut errors = Vec::new();
        for source in sources {
            match self.fetch_view(source).await {
                Ok(view) if view.mesh => return Ok(failover::candidates(&view.nodes)),
                Ok(view) => {
                    let others = self.seeds.iter().filter(|s| *s != source).map(|s| self.fetch_view(s));
                    let mut views = vec![view];
                    views.extend(join_all(others).await.into_iter().filter_map(Result::ok));
                    return Ok(failover::candidates(&failover::joined(&views)));
                }
                Err(e) => errors.push(e),
            }
        }
        // A node that answered (a refused token) says more than the ones that did not.
        if let Some(at) = errors.iter().position(|e| e.status().is_some()) {
            return Err(errors.swap_remove(at));
        }
        let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Err(ClientError::Connect { url: sources.join(", "), reason: reasons.join("; ") })
    }

    /// `GET {base}/api/v1/mesh/nodes` within `probe_timeout`.
    async fn fetch_view(&self, base: &str) -> Result<MeshView, ClientError> {
        let within = self.options.probe_timeout;
        let mut request = self.http.get(format!("{base}/api/v1/mesh/nodes"));
        if let Some(token) = &self.options.token {
            request = request.bearer_auth(token);
        }
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                ClientError::Timeout(within)
            } else {
                ClientError::Connect { url: base.to_string(), reason: e.to_string() }
            }
        };
        let work = async {
            let response = request.send().await.map_err(failed)?;
            let status = response.status().as_u16();
            let body = response.bytes().await.map_err(failed)?;
            if !(200..300).contains(&status) {
                let message = format!("{base}/api/v1/mesh/nodes: {}", String::from_utf8_lossy(&body));
                return Err(ClientError::Status { status, message, retry_after_ms: None });
            }
            serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol(format!("mesh view of {base}: {e}")))
        };
        tokio::time::timeout(within, work).await.map_err(|_| ClientError::Timeout(within))?
    }

    /// Every candidate probed at once; nearest first.
    async fn measure(&self, mut candidates: Vec<Candidate>) -> Vec<Candidate> {
        let rtts = join_all(candidates.iter().map(|c| self.probe(&c.http_url))).await;
        for (candidate, rtt) in candidates.iter_mut().zip(rtts) {
            candidate.rtt = rtt;
        }
        failover::order(candidates)
    }

    /// The best of [`PROBES`] `GET /healthz` round trips within `probe_timeout`; `None` when
    /// none completed.
    async fn probe(&self, base: &str) -> Option<Duration> {
        let deadline = Instant::now() + self.options.probe_timeout;
        let url = format!("{base}/healthz");
        let mut best: Option<Duration> = None;
        for _ in 0..PROBES {
            let started = Instant::now();
            let round_trip = async {
                let response = self.http.get(&url).send().await.ok()?;
                let ok = response.status().is_success();
                // Read the body so the next probe reuses the connection.
                response.bytes().await.ok()?;
                ok.then_some(())
            };
            match tokio::time::timeout_at(deadline, round_trip).await {
                Ok(Some(())) => {
                    let rtt = started.elapsed();
                    best = Some(best.map_or(rtt, |b| b.min(rtt)));
                }
                _ => break,
            }
        }
        best
    }
}

/// The socket address of a node's QUIC endpoint from its published `host:port`; a wildcard
/// host (a node bound to `0.0.0.0`) means the host of its HTTP URL.
async fn resolve_quic(published: &str, http_url: &str, within: Duration) -> Result<SocketAddr, ClientError> {
    let (host, port) = quic_target(published, http_url)?;
    let lookup = tokio::net::lookup_host((host, port));
    let unresolved = |reason: &str| ClientError::Connect { url: http_url.to_string(), reason: reason.into() };
    match tokio::time::timeout(within, lookup).await {
        Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| unresolved("no address for its QUIC endpoint")),
        Ok(Err(e)) => Err(unresolved(&format!("QUIC endpoint {published}: {e}"))),
        Err(_) => Err(ClientError::Timeout(within)),
    }
}

/// Host and port to reach `published` (`host:port`, `[v6]:port`) at.
fn quic_target(published: &str, http_url: &str) -> Result<(String, u16), ClientError> {
    let (host, port) = host_port(&format!("quic://{published}"))?;
    let wildcard = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    if wildcard {
        return Ok((host_port(http_url)?.0, port));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn quic_target_takes_the_published_address() {
        let t = |p| quic_target(p, "https://node-a.example:7071").unwrap();
        assert_eq!(t("10.0.0.5:7443"), ("10.0.0.5".to_string(), 7443));
        assert_eq!(t("node-a.internal:7443"), ("node-a.internal".to_string(), 7443));
        assert_eq!(t("[::1]:7443"), ("::1".to_string(), 7443));
    }

    #[test]
    fn a_wildcard_quic_host_means_the_http_host() {
        let t = |p| quic_target(p, "https://node-a.example:7071").unwrap();
        assert_eq!(t("0.0.0.0:7443"), ("node-a.example".to_string(), 7443));
        assert_eq!(t("[::]:7443"), ("node-a.example".to_string(), 7443));
    }

    /// Callers spawn calls on tokio's multi-threaded runtime.
    #[allow(dead_code)]
    fn calls_are_send(mesh: &MeshClient) {
        fn send<T: Send>(_: T) {}
        send(mesh.predict("m", Rows::Json(Vec::new())));
        send(mesh.post("/p", Bytes::new()));
        send(mesh.refresh());
        send(MeshClient::connect(Vec::new(), MeshOptions::default()));
    }

    #[tokio::test]
    async fn connect_without_seeds_is_a_setup_error() {
        let e = MeshClient::connect(vec![" ".into()], MeshOptions::default()).await.unwrap_err();
        assert!(matches!(e, ClientError::Setup(_)), "{e}");
    }

    #[tokio::test]
    async fn connect_to_no_answering_seed_names_them() {
        let options = MeshOptions { probe_timeout: Duration::from_millis(500), ..MeshOptions::default() };
        // A port nothing listens on any more: refused at once.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let seed = format!("http://{addr}");
        let e = MeshClient::connect(vec![seed.clone()], options).await.unwrap_err();
        assert!(matches!(&e, ClientError::Connect { url, .. } if url.contains(&seed)), "{e}");
    }
}
