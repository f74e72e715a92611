//! HTTP/3 through h3 on quinn: one QUIC connection, a request per stream.

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::{
    ndjson, parse_seed, quic_connect, ClientError, ClientOptions, Posted, Prediction, Rows, SERVED_BY_HEADER,
};

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// Answers larger than this are refused.
pub(super) const MAX_ANSWER: usize = 64 << 20;

#[derive(Clone)]
pub struct H3Client {
    send: SendRequest,
    authority: String,
    token: Option<String>,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for H3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "H3Client({})", self.authority)
    }
}

fn h3_error(e: impl std::fmt::Display) -> ClientError {
    ClientError::Connection(e.to_string())
}

impl H3Client {
    pub async fn connect(options: &ClientOptions) -> Result<Self, ClientError> {
        let conn = quic_connect(options, crate::transport::tls::ALPN_H3).await?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await.map_err(h3_error)?;
        tokio::spawn(async move {
            let _ = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        let authority =
            options.url.split("://").nth(1).unwrap_or_default().split('/').next().unwrap_or_default();
        Ok(Self {
            send,
            authority: authority.to_string(),
            token: options.token.clone(),
            timeout: options.timeout,
        })
    }

    fn request(&self, path: &str, content_type: &str) -> Result<http::Request<()>, ClientError> {
        let mut r = http::Request::post(format!("https://{}{path}", self.authority))
            .header("content-type", content_type);
        if let Some(t) = &self.token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(()).map_err(|e| ClientError::Setup(e.to_string()))
    }

    pub async fn post(&self, path: &str, body: Bytes) -> Result<Posted, ClientError> {
        let (head, body) = self.exchange(self.request(path, "application/json")?, body).await?;
        let node = head.headers.get(SERVED_BY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(Posted { status: head.status.as_u16(), body, node })
    }

    /// Relay a request as given (method, path with query, headers; the authority is this
    /// client's) with a buffered body; the answer's head and body (at most 64 MiB). The mesh
    /// forwards requests to peers with it.
    pub async fn relay(
        &self,
        method: http::Method,
        path: &str,
        headers: &http::HeaderMap,
        body: Bytes,
    ) -> Result<(http::response::Parts, Bytes), ClientError> {
        let mut request =
            http::Request::builder().method(method).uri(format!("https://{}{path}", self.authority));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(()).map_err(|e| ClientError::Setup(e.to_string()))?;
        self.exchange(request, body).await
    }

    /// One request with a buffered body and its whole answer (at most 64 MiB), within the
    /// client's timeout.
    async fn exchange(
        &self,
        request: http::Request<()>,
        body: Bytes,
    ) -> Result<(http::response::Parts, Bytes), ClientError> {
        let work = async {
            let mut send = self.send.clone();
            let stream = send.send_request(request).await.map_err(h3_error)?;
            let (mut up, mut down) = stream.split();
            // The answer is read while the body goes out: a node that refuses a body (over its
            // limit, say) answers and stops reading it, and that answer is what the caller needs.
            let sending = async move {
                up.send_data(body).await?;
                up.finish().await
            };
            let receiving = async move {
                let resp = down.recv_response().await.map_err(h3_error)?;
                let mut out = BytesMut::new();
                while let Some(mut chunk) = down.recv_data().await.map_err(h3_error)? {
                    if out.len() + chunk.remaining() > MAX_ANSWER {
                        return Err(ClientError::Protocol("an answer over 64 MiB".into()));
                    }
                    out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
                }
                Ok((resp.into_parts().0, out.freeze()))
            };
            let (sent, received) = tokio::join!(sending, receiving);
            match (sent, received) {
                (_, Ok(answer)) => Ok(answer),
                (Err(e), Err(_)) => Err(h3_error(e)),
                (Ok(()), Err(e)) => Err(e),
            }
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| ClientError::Timeout(self.timeout))?
    }

    pub async fn stream(
        &self,
        model: &str,
        mut chunks: mpsc::Receiver<Rows>,
    ) -> Result<mpsc::Receiver<Result<Vec<Prediction>, ClientError>>, ClientError> {
        let mut send = self.send.clone();
        let request = self
            .request(&format!("/api/v1/models/{}/stream", super::segment(model)), "application/x-ndjson")?;
        let stream = send.send_request(request).await.map_err(h3_error)?;
        let (mut out, mut back) = stream.split();
        let (tx, rx) = mpsc::channel(crate::serve::stream::DEPTH);
        let writer_tx = tx.clone();
        tokio::spawn(async move {
            while let Some(rows) = chunks.recv().await {
                let body = match ndjson(&rows) {
                    Ok(b) => b,
                    Err(e) => return writer_tx.send(Err(e)).await.unwrap_or(()),
                };
                if out.send_data(body).await.is_err() {
                    return;
                }
            }
            let _ = out.finish().await;
        });
        tokio::spawn(async move {
            let resp = match back.recv_response().await {
                Ok(r) => r,
                Err(e) => return tx.send(Err(h3_error(e))).await.unwrap_or(()),
            };
            let status = resp.status().as_u16();
            let mut lines = super::Lines::default();
            let mut body = BytesMut::new();
            loop {
                let item = match back.recv_data().await {
                    Ok(Some(mut chunk)) if status == 200 => {
                        lines.push(&chunk.copy_to_bytes(chunk.remaining()))
                    }
                    Ok(Some(mut chunk)) => {
                        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
                        continue;
                    }
                    Ok(None) if status == 200 => return,
                    Ok(None) => Err(parse_seed(status, &body)
                        .err()
                        .unwrap_or(ClientError::Protocol("refused".into()))),
                    Err(e) => Err(h3_error(e)),
                };
                if !super::forward(&tx, item).await {
                    return;
                }
            }
        });
        Ok(rx)
    }
}
