//! HTTP/1.1 (and HTTP/2 when the node offers it) through reqwest on rustls.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{
    ndjson, parse_seed, tls_config, ClientError, ClientOptions, Posted, Prediction, Rows, SERVED_BY_HEADER,
};

#[derive(Debug, Clone)]
pub struct Http1Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Http1Client {
    pub fn new(options: &ClientOptions) -> Result<Self, ClientError> {
        let tls = tls_config(options, &[b"http/1.1"])?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(super::CONNECT_TIMEOUT.min(options.timeout))
            .pool_idle_timeout(super::POOL_IDLE)
            .timeout(options.timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let base = options.url.trim_end_matches('/').to_string();
        Ok(Self { http, base, token: options.token.clone() })
    }

    fn request(&self, path: &str) -> reqwest::RequestBuilder {
        self.authed(self.http.post(format!("{}{path}", self.base)))
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    fn failed(&self, e: &reqwest::Error) -> ClientError {
        if e.is_timeout() {
            return ClientError::Timeout(Duration::ZERO);
        }
        ClientError::Connect { url: self.base.clone(), reason: e.to_string() }
    }

    pub async fn post(&self, path: &str, body: Bytes) -> Result<Posted, ClientError> {
        let len = body.len();
        let resp =
            self.request(path).header("content-type", "application/json").body(body).send().await.map_err(
                |e| match self.failed(&e) {
                    // A node refusing a body over its limit answers 413 and closes the connection;
                    // over HTTP/1.1 the upload can break before that answer is read.
                    ClientError::Connect { url, reason } if len > 1 << 20 => ClientError::Connect {
                        url,
                        reason: format!(
                            "{reason} (while sending {len} bytes: the node may refuse bodies this large, \
                         max_body_bytes is 4 MiB by default; send fewer rows per request)"
                        ),
                    },
                    other => other,
                },
            )?;
        let status = resp.status().as_u16();
        let node = resp.headers().get(SERVED_BY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.bytes().await.map_err(|e| self.failed(&e))?;
        Ok(Posted { status, body, node })
    }

    /// Why the node refuses requests for `model`, if it does: a node that answers a stream
    /// with an error before reading its body (unknown model, bad key, draining) closes the
    /// connection under the client's upload, which then sees only a broken connection. The
    /// model's V2 readiness route, with the same credentials, gets the node's own error.
    async fn refusal(&self, model: &str) -> Option<ClientError> {
        let probe =
            self.authed(self.http.get(format!("{}/v2/models/{}/ready", self.base, super::segment(model))));
        let resp = probe.timeout(Duration::from_secs(5)).send().await.ok()?;
        let status = resp.status().as_u16();
        if status == 200 {
            return None;
        }
        let body = resp.bytes().await.ok()?;
        parse_seed(status, &body).err()
    }

    pub async fn stream(
        &self,
        model: &str,
        chunks: mpsc::Receiver<Rows>,
    ) -> Result<mpsc::Receiver<Result<Vec<Prediction>, ClientError>>, ClientError> {
        let body = futures_util::stream::unfold(chunks, |mut chunks| async move {
            let rows = chunks.recv().await?;
            Some((ndjson(&rows).map_err(|e| std::io::Error::other(e.to_string())), chunks))
        });
        let resp = self
            .request(&format!("/api/v1/models/{}/stream", super::segment(model)))
            .header("content-type", "application/x-ndjson")
            .body(reqwest::Body::wrap_stream(body))
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await;
        let resp = match resp {
            Ok(resp) => resp,
            Err(e) => return Err(self.refusal(model).await.unwrap_or_else(|| self.failed(&e))),
        };
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(parse_seed(status, &body)
                .err()
                .unwrap_or(ClientError::Protocol("stream refused".into())));
        }
        let (tx, rx) = mpsc::channel(crate::serve::stream::DEPTH);
        let mut bytes = resp.bytes_stream();
        tokio::spawn(async move {
            let mut lines = super::Lines::default();
            while let Some(chunk) = bytes.next().await {
                let item = match chunk {
                    Ok(chunk) => lines.push(&chunk),
                    Err(e) => Err(ClientError::Connection(e.to_string())),
                };
                if !super::forward(&tx, item).await {
                    return;
                }
            }
        });
        Ok(rx)
    }
}
