//! The node's client for control: catalog long-poll, artifacts, heartbeats. Every call has a
//! timeout. Peers serve the same artifact route, so the client fetches artifacts from them too.

use std::time::Duration;

use meridian_gossip::{Catalog, NodeInfo};
use meridian_models::digest::sha256_hex;

use crate::config::NodeConfig;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control unreachable: {0}")]
    Http(#[from] reqwest::Error),
    #[error("control answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("artifact {digest} is larger than max_artifact_bytes ({limit})")]
    TooLarge { digest: String, limit: u64 },
    #[error("artifact {expected} arrived with digest {actual}")]
    DigestMismatch { expected: String, actual: String },
}

pub struct ControlClient {
    base: String,
    http: reqwest::Client,
    max_artifact_bytes: u64,
    /// The node's `auth.peer_key`, presented with its reports (control wants the `node` scope).
    credential: Option<String>,
}

impl ControlClient {
    /// A client over the node's shared HTTP client ([`crate::NodeState::peers`]).
    pub fn with_client(base: &str, http: reqwest::Client, config: &NodeConfig) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            max_artifact_bytes: config.max_artifact_bytes,
            credential: config.auth.peer_key.clone(),
        }
    }

    /// `request` with `Authorization: Bearer <peer_key>` when the node has one.
    fn credentialed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// The node's client of its control, over its shared HTTP client; `None` without
    /// `control_url`.
    pub fn of_node(state: &crate::node::NodeState) -> Option<Self> {
        let url = state.config.control_url.as_deref()?;
        Some(Self::with_client(url, state.peers.clone(), &state.config))
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ControlError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(ControlError::Status { status, body })
    }

    /// The catalog, once its epoch is above `after` or `wait_ms` passed.
    pub async fn catalog(&self, after: u64, wait_ms: u64) -> Result<Catalog, ControlError> {
        self.long_poll("/api/v1/catalog", after, wait_ms).await
    }

    /// The catalog signed by control (for the mesh), once its epoch is above `after` or
    /// `wait_ms` passed.
    pub async fn signed_catalog(
        &self,
        after: u64,
        wait_ms: u64,
    ) -> Result<meridian_gossip::mesh::SignedCatalog, ControlError> {
        self.long_poll("/api/v1/catalog/signed", after, wait_ms).await
    }

    async fn long_poll<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        after: u64,
        wait_ms: u64,
    ) -> Result<T, ControlError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .query(&[("after_epoch", after), ("wait_ms", wait_ms)])
            .timeout(Duration::from_millis(wait_ms + 5_000))
            .send()
            .await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// The artifact with `digest`, verified.
    pub async fn artifact(&self, digest: &str) -> Result<Vec<u8>, ControlError> {
        let resp = self
            .http
            .get(format!("{}/api/v1/artifacts/{digest}", self.base))
            .timeout(Duration::from_secs(300))
            .send()
            .await?;
        let mut resp = Self::check(resp).await?;
        let too_large =
            || ControlError::TooLarge { digest: digest.to_string(), limit: self.max_artifact_bytes };
        if resp.content_length().is_some_and(|n| n > self.max_artifact_bytes) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > self.max_artifact_bytes {
                return Err(too_large());
            }
        }
        let actual = sha256_hex(&bytes);
        if actual != digest {
            return Err(ControlError::DigestMismatch { expected: digest.to_string(), actual });
        }
        Ok(bytes)
    }

    pub async fn report(&self, report: &meridian_gossip::report::LatencyReport) -> Result<(), ControlError> {
        let resp = self
            .credentialed(self.http.post(format!("{}/api/v1/metrics/report", self.base)))
            .json(report)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        Self::check(resp).await.map(|_| ())
    }

    /// The HTTP URL of node `id`, from control's node directory.
    pub async fn node_url(&self, id: &str) -> Result<Option<String>, ControlError> {
        let resp = self
            .http
            .get(format!("{}/api/v1/nodes", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        let nodes: Vec<serde_json::Value> = Self::check(resp).await?.json().await?;
        Ok(nodes.iter().find(|n| n["id"] == id).and_then(|n| n["http_url"].as_str()).map(str::to_string))
    }

    pub async fn heartbeat(&self, info: &NodeInfo) -> Result<(), ControlError> {
        let resp = self
            .credentialed(self.http.post(format!("{}/api/v1/nodes/heartbeat", self.base)))
            .json(info)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        Self::check(resp).await.map(|_| ())
    }
}
