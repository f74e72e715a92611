//! The control API client used by the CLI (and by `up`). Errors carry control's message.

use meridian_node::client::segment as seg;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use meridian_gossip::{Catalog, Experiment};
use meridian_models::features::FeatureView;
use reqwest::multipart::{Form, Part};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::experiments::ExperimentResults;
use crate::api::keys::CreatedKey;
use crate::api::rollouts::RolloutStatus;
use crate::directory::NodeStatus;
use crate::registry::keys::{KeyRecord, KeySpec};
use crate::registry::ModelRecord;
use crate::rollout::RolloutSpec;
use crate::sink::SliceStats;

pub struct Client {
    base: String,
    http: reqwest::Client,
    api_key: Option<String>,
}

/// An HTTP client for control or a node that sends `api_key` as a bearer token on every request.
/// Trusts the CA in `MERIDIAN_CA` (a PEM file) when set, e.g. `meridian up`'s development CA.
pub fn http_client(api_key: Option<&str>, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let ca = std::env::var_os("MERIDIAN_CA").map(std::path::PathBuf::from);
    http_client_trusting(api_key, timeout, ca.as_deref())
}

/// [`http_client`] that also trusts the CA in the PEM file `ca` (a development CA).
pub fn http_client_trusting(
    api_key: Option<&str>,
    timeout: Duration,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key.map(str::trim).filter(|k| !k.is_empty()) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(meridian_node::client::POOL_IDLE)
        .timeout(timeout);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(builder.build()?)
}

/// Control's error body, or the raw text.
async fn error_of(resp: reqwest::Response) -> anyhow::Error {
    answered(resp, "control").await
}

/// An error answer of `who` (control, a node): its `{"error": …}` body or the raw text.
pub async fn answered(resp: reqwest::Response, who: &str) -> anyhow::Error {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(text);
    anyhow::anyhow!("{who} answered {status}: {message}")
}

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::with_key(base, None)
    }

    /// A client that sends `api_key` (needs `admin` when control's auth is on).
    pub fn with_key(base: &str, api_key: Option<&str>) -> anyhow::Result<Self> {
        let http = http_client(api_key, Duration::from_secs(600))?;
        let api_key = api_key.map(str::to_string);
        Ok(Self { base: base.trim_end_matches('/').to_string(), http, api_key })
    }

    /// [`Self::with_key`], trusting the CA in the PEM file `ca` (control over HTTPS with a
    /// development CA).
    pub fn with_key_trusting(
        base: &str,
        api_key: Option<&str>,
        ca: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let http = http_client_trusting(api_key, Duration::from_secs(600), Some(ca))?;
        let api_key = api_key.map(str::to_string);
        Ok(Self { base: base.trim_end_matches('/').to_string(), http, api_key })
    }

    /// The API key this client sends, for requests to nodes.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = req.send().await.with_context(|| format!("cannot reach control at {}", self.base))?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        Ok(resp.json().await?)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Push an artifact with its spec, showing upload progress on a terminal.
    pub async fn push(
        &self,
        name: &str,
        spec: String,
        artifact: Vec<u8>,
        progress: bool,
    ) -> anyhow::Result<ModelRecord> {
        let len = artifact.len() as u64;
        let bar = if progress { ProgressBar::new(len) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(format!("pushing {name}"));
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            artifact.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
        let counted = bar.clone();
        let stream = futures_util::stream::iter(chunks).map(move |chunk| {
            if let Ok(c) = &chunk {
                counted.inc(c.len() as u64);
            }
            chunk
        });
        let body = reqwest::Body::wrap_stream(stream);
        let part = Part::stream_with_length(body, len).file_name("model.onnx");
        let user = std::env::var("USER").unwrap_or_else(|_| "cli".to_string());
        let form = Form::new().text("spec", spec).text("pushed_by", user).part("artifact", part);
        bar.set_message(format!("validating {name}"));
        let result = self
            .send(self.http.post(self.url(&format!("/api/v1/models/{}/versions", seg(name)))).multipart(form))
            .await;
        bar.finish_and_clear();
        result
    }

    pub async fn list(&self) -> anyhow::Result<Vec<Value>> {
        self.send(self.http.get(self.url("/api/v1/models"))).await
    }

    pub async fn show(&self, name: &str) -> anyhow::Result<Vec<ModelRecord>> {
        self.send(self.http.get(self.url(&format!("/api/v1/models/{}", seg(name))))).await
    }

    pub async fn deploy(&self, name: &str, version: Option<u32>) -> anyhow::Result<Catalog> {
        let body = serde_json::json!({ "version": version });
        self.send(self.http.post(self.url(&format!("/api/v1/models/{}/deploy", seg(name)))).json(&body)).await
    }

    pub async fn rollback(&self, name: &str) -> anyhow::Result<Catalog> {
        self.send(self.http.post(self.url(&format!("/api/v1/models/{}/rollback", seg(name))))).await
    }

    /// Where `name` is loaded across the mesh.
    pub async fn place(&self, name: &str, placement: &meridian_gossip::Placement) -> anyhow::Result<Catalog> {
        self.send(self.http.put(self.url(&format!("/api/v1/models/{}/placement", seg(name)))).json(placement))
            .await
    }

    pub async fn archive(&self, name: &str, version: u32) -> anyhow::Result<Catalog> {
        self.send(self.http.post(self.url(&format!(
            "/api/v1/models/{}/versions/{}/archive",
            seg(name),
            version
        ))))
        .await
    }

    pub async fn catalog(&self) -> anyhow::Result<Catalog> {
        self.send(self.http.get(self.url("/api/v1/catalog"))).await
    }

    pub async fn start_experiment(&self, experiment: &Experiment) -> anyhow::Result<Catalog> {
        self.send(self.http.post(self.url("/api/v1/experiments")).json(experiment)).await
    }

    pub async fn experiments(&self) -> anyhow::Result<Vec<Experiment>> {
        self.send(self.http.get(self.url("/api/v1/experiments"))).await
    }

    pub async fn experiment(&self, name: &str) -> anyhow::Result<Experiment> {
        self.send(self.http.get(self.url(&format!("/api/v1/experiments/{}", seg(name))))).await
    }

    pub async fn experiment_results(&self, name: &str) -> anyhow::Result<ExperimentResults> {
        self.send(self.http.get(self.url(&format!("/api/v1/experiments/{}/results", seg(name))))).await
    }

    pub async fn stop_experiment(&self, name: &str) -> anyhow::Result<Catalog> {
        self.send(self.http.post(self.url(&format!("/api/v1/experiments/{}/stop", seg(name))))).await
    }

    pub async fn start_rollout(&self, spec: &RolloutSpec) -> anyhow::Result<RolloutStatus> {
        self.send(self.http.post(self.url("/api/v1/rollouts")).json(spec)).await
    }

    pub async fn rollout(&self, model: &str) -> anyhow::Result<RolloutStatus> {
        self.send(self.http.get(self.url(&format!("/api/v1/rollouts/{}", seg(model))))).await
    }

    pub async fn rollout_command(&self, model: &str, command: &str) -> anyhow::Result<RolloutStatus> {
        self.send(self.http.post(self.url(&format!("/api/v1/rollouts/{}/{}", seg(model), seg(command)))))
            .await
    }

    pub async fn put_view(&self, view: &FeatureView) -> anyhow::Result<Catalog> {
        self.send(self.http.put(self.url(&format!("/api/v1/views/{}", seg(&view.name)))).json(view)).await
    }

    pub async fn views(&self) -> anyhow::Result<Vec<FeatureView>> {
        self.send(self.http.get(self.url("/api/v1/views"))).await
    }

    pub async fn metrics(&self, model: Option<&str>, window_s: u64) -> anyhow::Result<Vec<SliceStats>> {
        let mut req = self.http.get(self.url("/api/v1/metrics")).query(&[("window_s", window_s)]);
        if let Some(m) = model {
            req = req.query(&[("model", m)]);
        }
        self.send(req).await
    }

    pub async fn nodes(&self) -> anyhow::Result<Vec<NodeStatus>> {
        self.send(self.http.get(self.url("/api/v1/nodes"))).await
    }

    /// Create an API key; the answer holds the key, shown this once.
    pub async fn create_key(&self, spec: &KeySpec) -> anyhow::Result<CreatedKey> {
        self.send(self.http.post(self.url("/api/v1/keys")).json(spec)).await
    }

    pub async fn keys(&self) -> anyhow::Result<Vec<KeyRecord>> {
        self.send(self.http.get(self.url("/api/v1/keys"))).await
    }

    pub async fn revoke_key(&self, id: &str) -> anyhow::Result<KeyRecord> {
        self.send(self.http.delete(self.url(&format!("/api/v1/keys/{}", seg(id))))).await
    }
}
