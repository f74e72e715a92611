//! Real control and node servers on 127.0.0.1 port 0, each with its own temp directory.
#![allow(clippy::unwrap_used, dead_code)]

pub mod redis;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_control::cli::client::Client;
use meridian_control::{ControlConfig, ControlHandle};
use meridian_models::demo::DemoModel;
use meridian_node::inference::ServingTable;
use meridian_node::{NodeConfig, NodeHandle};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Control {
    pub handle: ControlHandle,
    pub token: CancellationToken,
    pub client: Client,
}

impl Control {
    pub async fn start(dir: &Path) -> Control {
        Self::start_on(dir, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Start on a given address (to restart control where nodes expect it).
    pub async fn start_on(dir: &Path, listen: SocketAddr) -> Control {
        let mut config = ControlConfig { listen, data_dir: dir.join("control"), ..ControlConfig::default() };
        // Auth is on by default; these tests are about other things (tests/auth.rs turns it on).
        config.auth.enabled = false;
        Self::start_with(config).await
    }

    /// Start with `config`: plaintext HTTP unless the config has a certificate (tests of other
    /// things talk to control over plain HTTP on loopback).
    pub async fn start_with(mut config: ControlConfig) -> Control {
        if !config.tls.enabled() {
            config.tls.plaintext_http = true;
        }
        Self::start_exactly(config).await
    }

    pub async fn start_exactly(config: ControlConfig) -> Control {
        let token = CancellationToken::new();
        let handle = meridian_control::spawn(config, token.clone()).await.expect("control starts");
        let client = Client::new(&handle.url()).unwrap();
        Control { handle, token, client }
    }

    pub fn url(&self) -> String {
        self.handle.url()
    }

    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.handle.task).await.expect("control stops in time").unwrap().unwrap();
    }

    pub async fn push(&self, name: &str, demo: &DemoModel) -> u32 {
        let spec = demo.spec.replace(&format!("name = \"{}\"", demo.name), &format!("name = \"{name}\""));
        self.client.push(name, spec, demo.onnx.to_vec(), false).await.expect("push").version
    }
}

pub struct Node {
    pub handle: NodeHandle,
    pub token: CancellationToken,
    pub data_dir: PathBuf,
}

pub fn node_config(id: &str, control: Option<String>, data_dir: &Path) -> NodeConfig {
    NodeConfig {
        id: id.to_string(),
        region: format!("region-{id}"),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        control_url: control,
        data_dir: data_dir.to_path_buf(),
        catalog_wait_ms: 2_000,
        heartbeat_ms: 500,
        tls: meridian_node::transport::tls::TlsConfig { plaintext_http: true, ..Default::default() },
        // Auth is on by default; these tests are about other things (tests/auth.rs turns it on).
        auth: meridian_node::auth::AuthConfig { enabled: false, ..Default::default() },
        ..NodeConfig::default()
    }
}

/// A node config with TLS: a development CA in `dir/certs` signs the node's certificate for
/// 127.0.0.1 and localhost; HTTP/1.1 over TLS on TCP, HTTP/3 and native QUIC on UDP. Returns
/// the config and the CA's PEM path for clients.
pub fn tls_node_config(id: &str, control: Option<String>, data_dir: &Path) -> (NodeConfig, PathBuf) {
    let certs = data_dir.join("certs");
    let ca = meridian_node::transport::certs::DevCa::open_or_create(&certs).unwrap();
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let (cert, key) = ca.issue(&names, &certs, id).unwrap();
    let mut config = node_config(id, control, data_dir);
    config.tls =
        meridian_node::transport::tls::TlsConfig { cert: Some(cert), key: Some(key), plaintext_http: false };
    (config, ca.cert_path.clone())
}

impl Node {
    pub async fn start(config: NodeConfig) -> Node {
        let token = CancellationToken::new();
        let data_dir = config.data_dir.clone();
        let handle = meridian_node::spawn(config, token.clone()).await.expect("node starts");
        Node { handle, token, data_dir }
    }

    pub fn url(&self) -> String {
        self.handle.url()
    }

    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.handle.task).await.expect("node stops in time").unwrap().unwrap();
    }

    /// Wait until the node's serving table satisfies `check`.
    pub async fn wait_table(&self, what: &str, check: impl Fn(&ServingTable) -> bool) {
        let state = self.handle.state.clone();
        let what = format!("{what} on {}", state.config.id);
        wait_for(&what, || {
            let ok = check(&state.table.load());
            async move { ok }
        })
        .await;
    }

    /// Wait until `model` is live at `version` here.
    pub async fn wait_live(&self, model: &str, version: u32) {
        let what = format!("{model} v{version} live");
        self.wait_table(&what, |t| t.models.get(model).is_some_and(|s| s.live.manifest.version == version))
            .await;
    }
}

/// Poll `check` every 20 ms until it holds; panic after [`WAIT`].
pub async fn wait_for<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_within(what, WAIT, check).await;
}

/// [`wait_for`] with its own bound.
pub async fn wait_for_within<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// POST `body` as JSON; the status and the JSON answer.
pub async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let resp = http().post(url).json(body).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// PUT `{"features": features}` for one entity; the status.
pub async fn put_features(node_url: &str, view: &str, entity: &str, features: Value) -> u16 {
    let resp = http()
        .put(format!("{node_url}/api/v1/features/{view}/{entity}"))
        .json(&json!({ "features": features }))
        .send()
        .await
        .expect("request");
    resp.status().as_u16()
}

pub async fn post_raw(url: &str, body: Vec<u8>) -> (u16, Value) {
    let resp =
        http().post(url).header("content-type", "application/json").body(body).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// Upload `body` as a batch job (`POST /api/v1/batch?{query}`); the status and the answer.
pub async fn post_batch(node: &str, query: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = http()
        .post(format!("{node}/api/v1/batch?{query}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// The node's `/metrics` text.
pub async fn metrics_text(node_url: &str) -> String {
    http().get(format!("{node_url}/metrics")).send().await.unwrap().text().await.unwrap()
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let resp = http().get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// The reference rows and outputs of a demo model.
pub struct Reference {
    pub rows: Vec<Map<String, Value>>,
    pub outputs: Map<String, Value>,
}

pub fn reference(demo: &DemoModel) -> Reference {
    let v: Value = serde_json::from_str(demo.reference).unwrap();
    Reference {
        rows: v["rows"].as_array().unwrap().iter().map(|r| r.as_object().unwrap().clone()).collect(),
        outputs: v["outputs"].as_object().unwrap().clone(),
    }
}

impl Reference {
    /// The seed API's expected `prediction` for row `i`.
    pub fn prediction(&self, i: usize) -> f64 {
        match self.outputs.get("probabilities") {
            Some(p) => p[i][1].as_f64().unwrap(),
            None => self.outputs["value"][i][0].as_f64().unwrap(),
        }
    }

    pub fn features(&self, i: usize) -> Value {
        json!({ "features": self.rows[i] })
    }
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}
