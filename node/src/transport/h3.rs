//! HTTP/3 (h3 on quinn) in front of the same axum router as HTTP/1.1: each request becomes an
//! `http::Request` whose body streams from the QUIC stream, and the router's response streams
//! back. One handler per route, whatever the transport.

use axum::body::Body;
use axum::Router;
use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body_util::BodyExt;
use tower::ServiceExt;

type Send = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type Recv = RequestStream<h3_quinn::RecvStream, Bytes>;

/// Serve HTTP/3 requests on `conn` until the client or the node closes it.
pub async fn serve_connection(router: Router, conn: quinn::Connection, max_header_bytes: u64) {
    let peer = conn.remote_address();
    let mut h3 = match h3::server::builder()
        .max_field_section_size(max_header_bytes)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await
    {
        Ok(h3) => h3,
        Err(e) => return tracing::debug!(%peer, error = %e, "HTTP/3 connection setup failed"),
    };
    loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                let router = router.clone();
                tokio::spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((request, stream)) => {
                            let (send, recv) = stream.split();
                            respond(router, request, send, recv).await;
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "HTTP/3 request refused"),
                    }
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                break;
            }
        }
    }
}

fn body_of(recv: Recv) -> Body {
    let chunks = futures_util::stream::unfold(Some(recv), |recv| async move {
        let mut recv = recv?;
        match recv.recv_data().await {
            Ok(Some(mut data)) => Some((Ok(data.copy_to_bytes(data.remaining())), Some(recv))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    Body::from_stream(chunks)
}

async fn respond(router: Router, request: http::Request<()>, mut send: Send, recv: Recv) {
    let request = request.map(|()| body_of(recv));
    let Ok(response) = router.oneshot(request).await;
    let (parts, mut body) = response.into_parts();
    if send.send_response(http::Response::from_parts(parts, ())).await.is_err() {
        return;
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() && send.send_data(data).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/3 response body failed");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        }
    }
    let _ = send.finish().await;
}
