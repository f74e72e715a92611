//! The node's HTTP listener against slow and idle clients: headers that never finish and
//! bodies that stall are cut off within the configured time, and connections beyond
//! `max_connections` wait until one closes.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use meridian_models::demo::demo_model;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read until the server closes or answers; how long it took and what it said.
async fn outcome(conn: &mut TcpStream) -> (Duration, String) {
    let started = Instant::now();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut got))
        .await
        .expect("the server neither answered nor closed within 10 s")
        .unwrap_or(0);
    (started.elapsed(), String::from_utf8_lossy(&got[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_stalled_bodies_are_cut_off_and_connections_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let mut config = node_config("n", Some(control.url()), &dir.path().join("n"));
    config.header_timeout_ms = 500;
    config.body_idle_timeout_ms = 500;
    config.max_connections = 3;
    let node = Node::start(config).await;
    let demo = demo_model("breast-cancer-mlp").unwrap();
    control.push(demo.name, demo).await;
    control.client.deploy(demo.name, None).await.unwrap();
    node.wait_live(demo.name, 1).await;
    let addr = node.url().trim_start_matches("http://").to_string();
    // Pooled keep-alive connections from the set-up are idle now and closed within 500 ms.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Half the headers, then nothing: closed (or answered 408) after the header timeout.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"POST /api/v1/models/breast-cancer-mlp/predict HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let (took, said) = outcome(&mut conn).await;
    assert!(said.is_empty() || said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");

    // The whole head and part of the body, then nothing: the body read ends with an error.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let head = "POST /api/v1/models/breast-cancer-mlp/predict HTTP/1.1\r\nhost: x\r\n\
                content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"features\":";
    conn.write_all(head.as_bytes()).await.unwrap();
    let (took, said) = outcome(&mut conn).await;
    assert!(said.is_empty() || said.starts_with("HTTP/1.1 4"), "{said}");
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");

    // Three idle connections fill the listener: a fourth client is not served while they are
    // open, and is once the header timeout has closed them.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let health = format!("{}/healthz", node.url());
    let client = reqwest::Client::builder().timeout(Duration::from_millis(250)).build().unwrap();
    assert!(client.get(&health).send().await.is_err(), "served beyond max_connections");
    let patient = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let resp = patient.get(&health).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    for mut conn in idle {
        let (_, said) = outcome(&mut conn).await;
        assert!(said.is_empty() || said.starts_with("HTTP/1.1 408"), "{said}");
    }
    node.stop().await;
    control.stop().await;
}

/// Over TLS too: a client that completes the handshake and then sends nothing is closed after
/// the header timeout (the protocol comes from ALPN; nothing waits on unbounded first bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_after_the_tls_handshake_is_cut_off() {
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    let (mut config, ca) = tls_node_config("n", None, &dir.path().join("n"));
    config.header_timeout_ms = 500;
    let node = Node::start(config).await;
    let addr = node.url().trim_start_matches("https://").to_string();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(&ca).unwrap()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = connector.connect(name, tcp).await.unwrap();
    let started = Instant::now();
    let mut got = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut got))
        .await
        .expect("the node neither answered nor closed within 10 s")
        .unwrap_or(0);
    assert!(n == 0 || got.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&got[..n]));
    assert!(started.elapsed() < Duration::from_secs(5), "cut off after {:?}", started.elapsed());
    node.stop().await;
}
