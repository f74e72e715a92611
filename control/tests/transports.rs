//! The node's front doors: HTTP/1.1 over TLS, HTTP/3 and the native QUIC protocol give the same
//! answers; streams keep order and bound the node's memory; bad handshakes and frames get their
//! documented errors and leave the node serving.
#![allow(clippy::unwrap_used)]

mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::*;
use meridian_models::demo::demo_model;
use meridian_node::client::{Client, ClientError, ClientOptions, Prediction, Rows, Transport};
use meridian_node::native::frame::{encode, encode_f32_rows, Kind};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

const MLP: &str = "breast-cancer-mlp";

async fn tls_node(dir: &Path) -> (Control, Node, PathBuf) {
    let control = Control::start(dir).await;
    let (config, ca) = tls_node_config("n1", Some(control.url()), &dir.join("n1"));
    let node = Node::start(config).await;
    let demo = demo_model(MLP).unwrap();
    let v = control.push(MLP, demo).await;
    control.client.deploy(MLP, Some(v)).await.unwrap();
    node.wait_live(MLP, v).await;
    (control, node, ca)
}

fn options(node: &Node, ca: &Path, transport: Transport) -> ClientOptions {
    ClientOptions {
        url: node.url(),
        transport,
        ca: Some(ca.to_path_buf()),
        quic_addr: node.handle.quic_addr,
        timeout: Duration::from_secs(20),
        ..Default::default()
    }
}

/// `n` distinct rows: the reference rows with one feature nudged by the row's index.
fn rows(n: usize) -> Vec<Map<String, Value>> {
    let r = reference(demo_model(MLP).unwrap());
    (0..n)
        .map(|i| {
            let mut row = r.rows[i % r.rows.len()].clone();
            let (name, v) = row.iter().next().map(|(k, v)| (k.clone(), v.as_f64().unwrap())).unwrap();
            row.insert(name, json!(v * (1.0 + (i as f64) * 1e-4)));
            row
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_predict_gives_the_same_answer_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node, ca) = tls_node(dir.path()).await;
    assert!(node.url().starts_with("https://"), "{}", node.url());
    let r = reference(demo_model(MLP).unwrap());
    let mut answers = Vec::new();
    for transport in [Transport::Http1, Transport::H3, Transport::Native] {
        let client = Client::connect(options(&node, &ca, transport)).await.unwrap();
        let answer = client.predict(MLP, Rows::Json(r.rows.clone())).await.unwrap();
        assert_eq!(answer.served_by, "n1");
        assert_eq!(answer.predictions.len(), r.rows.len());
        for (i, p) in answer.predictions.iter().enumerate() {
            assert!(
                close(p.prediction, r.prediction(i)),
                "{transport} row {i}: {} vs {}",
                p.prediction,
                r.prediction(i)
            );
        }
        answers.push(answer.predictions);
    }
    assert_eq!(answers[0], answers[1], "HTTP/1.1 and HTTP/3 differ");
    assert_eq!(answers[0], answers[2], "HTTP/1.1 and native QUIC differ");
    // HTTP/1.1 answers advertise HTTP/3 on the QUIC port.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let resp = http.get(format!("{}/healthz", node.url())).send().await.unwrap();
    let port = node.handle.quic_addr.unwrap().port();
    assert_eq!(resp.headers()["alt-svc"], format!("h3=\":{port}\"; ma=86400").as_str());
    node.stop().await;
    control.stop().await;
}

/// Send `chunks` on one stream and gather every prediction, in order.
async fn stream_all(client: &Client, chunks: Vec<Rows>) -> Result<Vec<Prediction>, ClientError> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for c in chunks {
            if tx.send(c).await.is_err() {
                return;
            }
        }
    });
    let mut answers = client.stream(MLP, rx).await?;
    let mut out = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(30), answers.recv()).await.unwrap() {
        out.extend(item?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows_stream_back_in_order_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node, ca) = tls_node(dir.path()).await;
    let all = rows(10_000);
    // The expected answers, one request per 1,000 rows.
    let http = Client::connect(options(&node, &ca, Transport::Http1)).await.unwrap();
    let mut expected = Vec::new();
    for chunk in all.chunks(1000) {
        expected.extend(http.predict(MLP, Rows::Json(chunk.to_vec())).await.unwrap().predictions);
    }
    for transport in [Transport::Native, Transport::H3, Transport::Http1] {
        let client = Client::connect(options(&node, &ca, transport)).await.unwrap();
        let chunks = all.chunks(100).map(|c| Rows::Json(c.to_vec())).collect();
        let got = stream_all(&client, chunks).await.unwrap();
        assert_eq!(got.len(), 10_000, "{transport}");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                close(g.prediction, e.prediction),
                "{transport} row {i}: {} vs {}",
                g.prediction,
                e.prediction
            );
        }
    }
    node.stop().await;
    control.stop().await;
}

/// A client that sends without reading stalls: the node stops reading once its bounded
/// pipeline and the QUIC windows are full, rather than buffering the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_reader_stalls_stops_the_sender_not_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node, ca) = tls_node(dir.path()).await;
    let conn = raw_native(&node, &ca).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode(Kind::Open, br#"{"model":"breast-cancer-mlp"}"#)).await.unwrap();
    let width = 30;
    let frame = encode(Kind::RowsF32, &encode_f32_rows(1000, width, &vec![0.5; 1000 * width as usize]));
    let (mut sent, mut stalled) = (0usize, false);
    while sent < 256 << 20 {
        match tokio::time::timeout(Duration::from_secs(2), send.write_all(&frame)).await {
            Ok(result) => result.unwrap(),
            Err(_) => {
                stalled = true;
                break;
            }
        }
        sent += frame.len();
    }
    assert!(stalled, "the node took {sent} bytes without the answers being read");
    assert!(sent < 64 << 20, "the node buffered {sent} bytes before pushing back");
    // Reading resumes the stream: answers come, in order, for what was sent.
    let mut buf = vec![0u8; 64 * 1024];
    let n =
        tokio::time::timeout(Duration::from_secs(10), recv.read(&mut buf)).await.unwrap().unwrap().unwrap();
    assert!(n > 5 && buf[4] == Kind::Result as u8, "first answer frame kind {}", buf[4]);
    // The node still serves others meanwhile.
    let other = Client::connect(options(&node, &ca, Transport::Native)).await.unwrap();
    other.predict(MLP, Rows::F32 { cols: 30, values: vec![0.5; 30] }).await.unwrap();
    drop(send);
    drop(recv);
    conn.close(0u32.into(), b"done");
    node.stop().await;
    control.stop().await;
}

async fn raw_native(node: &Node, ca: &Path) -> quinn::Connection {
    raw_quic(node, Some(ca), b"meridian/1", true).await.unwrap()
}

/// A QUIC connection with `alpn`, trusting `ca` (none: trust nothing); after `HELLO` when `hello`.
async fn raw_quic(
    node: &Node,
    ca: Option<&Path>,
    alpn: &[u8],
    hello: bool,
) -> Result<quinn::Connection, String> {
    let roots = ca.map(|p| meridian_node::transport::tls::read_certs(p).unwrap()).unwrap_or_default();
    let tls = meridian_node::transport::tls::client_config(&roots, &[alpn]).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(quic)));
    let connecting = endpoint.connect(node.handle.quic_addr.unwrap(), "localhost").unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    if hello {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&encode(Kind::Hello, br#"{"version":1}"#)).await.unwrap();
        send.finish().unwrap();
        let welcome =
            tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(4096)).await.unwrap().unwrap();
        assert_eq!(welcome[4], Kind::Welcome as u8);
    }
    Ok(conn)
}

/// Send `bytes` on a new request stream, finish, and read the answer: the frames' kinds and the
/// first ERROR frame's JSON, if any.
async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> (Vec<u8>, Option<Value>) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let answer = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20))
        .await
        .unwrap()
        .unwrap_or_default();
    let (mut kinds, mut error, mut at) = (Vec::new(), None, 0);
    while at + 5 <= answer.len() {
        let len = u32::from_be_bytes(answer[at..at + 4].try_into().unwrap()) as usize;
        kinds.push(answer[at + 4]);
        if answer[at + 4] == Kind::Error as u8 && error.is_none() {
            error = Some(serde_json::from_slice(&answer[at + 5..at + 4 + len]).unwrap());
        }
        at += 4 + len;
    }
    (kinds, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_and_frames_get_their_errors_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node, ca) = tls_node(dir.path()).await;
    // Wrong ALPN and an untrusted certificate: the handshake fails.
    let wrong_alpn = raw_quic(&node, Some(&ca), b"spdy/1", false).await.unwrap_err();
    assert!(wrong_alpn.contains("no_application_protocol") || wrong_alpn.contains("120"), "{wrong_alpn}");
    let untrusted = raw_quic(&node, None, b"meridian/1", false).await.unwrap_err();
    assert!(untrusted.contains("UnknownIssuer") || untrusted.contains("certificate"), "{untrusted}");
    let mut no_ca = options(&node, &ca, Transport::Http1);
    no_ca.ca = None;
    let refused = Client::connect(no_ca).await.unwrap().predict(MLP, Rows::Json(rows(1))).await.unwrap_err();
    assert!(matches!(refused, ClientError::Connect { .. }), "{refused}");

    // A protocol version the node does not speak: the connection closes with code 4.
    let conn = raw_quic(&node, Some(&ca), b"meridian/1", false).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode(Kind::Hello, br#"{"version":99}"#)).await.unwrap();
    send.finish().unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await.unwrap();
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == 4),
        "{closed}"
    );

    let conn = raw_native(&node, &ca).await;
    let open = encode(Kind::Open, br#"{"model":"breast-cancer-mlp"}"#);
    // Rows before OPEN.
    let (_, error) = exchange(&conn, &encode(Kind::RowsJson, b"[]")).await;
    assert_eq!(error.unwrap()["status"], 400);
    // A frame claiming 4 GiB: refused before its payload, with 413.
    let mut huge = open.to_vec();
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, Kind::RowsF32 as u8]);
    let (_, error) = exchange(&conn, &huge).await;
    let error = error.unwrap();
    assert_eq!(error["status"], 413, "{error}");
    // A truncated frame: the stream ends inside it.
    let mut truncated = open.to_vec();
    truncated.extend_from_slice(&encode(Kind::RowsJson, b"[{\"a\": 1}]")[..8]);
    let (_, error) = exchange(&conn, &truncated).await;
    assert!(error.unwrap()["error"].as_str().unwrap().contains("ended inside a frame"));
    // An unknown model, rows of the wrong width, malformed JSON rows: an ERROR per request.
    let (_, error) = exchange(&conn, &encode(Kind::Open, br#"{"model":"nope"}"#)).await;
    assert_eq!(error.unwrap()["status"], 404);
    let mut wrong_width = open.to_vec();
    wrong_width.extend_from_slice(&encode(Kind::RowsF32, &encode_f32_rows(1, 3, &[1.0, 2.0, 3.0])));
    let (_, error) = exchange(&conn, &wrong_width).await;
    assert!(error.unwrap()["error"].as_str().unwrap().contains("30 columns"));
    // One bad frame in a stream does not end it: the next frame is answered.
    let mut mixed = open.to_vec();
    mixed.extend_from_slice(&encode(Kind::RowsJson, b"{not json"));
    mixed.extend_from_slice(&encode(Kind::RowsF32, &encode_f32_rows(2, 30, &[0.5; 60])));
    let (kinds, _) = exchange(&conn, &mixed).await;
    assert_eq!(kinds, vec![Kind::Error as u8, Kind::Result as u8]);
    // Errors name the frame they answer.
    let mut second_bad = open.to_vec();
    second_bad.extend_from_slice(&encode(Kind::RowsF32, &encode_f32_rows(2, 30, &[0.5; 60])));
    second_bad.extend_from_slice(&encode(Kind::RowsF32, &encode_f32_rows(1, 3, &[1.0, 2.0, 3.0])));
    let (kinds, error) = exchange(&conn, &second_bad).await;
    assert_eq!(kinds, vec![Kind::Result as u8, Kind::Error as u8]);
    assert!(error.unwrap()["error"].as_str().unwrap().starts_with("rows frame 2: "));

    // Over HTTP: a stream with a bad line ends with an error naming the line.
    for transport in [Transport::Http1, Transport::H3] {
        let client = Client::connect(options(&node, &ca, transport)).await.unwrap();
        let mut bad = rows(3);
        bad[1].insert("no_such_feature".into(), json!(1.0));
        let err = stream_all(&client, vec![Rows::Json(bad)]).await.unwrap_err();
        assert_eq!(err.status(), Some(400), "{transport}: {err}");
        assert!(err.to_string().contains("line 2"), "{transport}: {err}");
        let (status, body) =
            client.post("/api/v1/models/breast-cancer-mlp/predict", "{\"rows\":".into()).await.unwrap();
        assert_eq!(status, 400, "{body:?}");
    }
    // And the node still answers everyone.
    let fresh = Client::connect(options(&node, &ca, Transport::Native)).await.unwrap();
    fresh.predict(MLP, Rows::Json(rows(3))).await.unwrap();
    node.stop().await;
    control.stop().await;
}

/// aioquic's HTTP/3 client (an independent implementation) gets the reference answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_http3_client_gets_the_reference_answers() {
    let Ok(python) = std::env::var("MERIDIAN_TEST_PYTHON") else {
        eprintln!("SKIPPED: set MERIDIAN_TEST_PYTHON to a Python with aioquic (deploy/test.sh does)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (control, node, ca) = tls_node(dir.path()).await;
    let r = reference(demo_model(MLP).unwrap());
    let body = dir.path().join("body.json");
    std::fs::write(&body, serde_json::to_vec(&json!({ "rows": r.rows })).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h3_client_check.py");
    let port = node.handle.quic_addr.unwrap().port().to_string();
    let path = format!("/api/v1/models/{MLP}/predict");
    let run = tokio::process::Command::new(python)
        .args([script, "127.0.0.1", &port, ca.to_str().unwrap(), &path, body.to_str().unwrap()])
        .kill_on_drop(true)
        .output();
    let out =
        tokio::time::timeout(Duration::from_secs(60), run).await.expect("aioquic check timed out").unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let (status, answer) = text.split_once('\n').unwrap();
    assert_eq!(status, "status 200", "{text}");
    let answer: Value = serde_json::from_str(answer).unwrap();
    for i in 0..r.rows.len() {
        let got = answer["predictions"][i]["prediction"].as_f64().unwrap();
        assert!(close(got, r.prediction(i)), "row {i}: {got} vs {}", r.prediction(i));
    }
    node.stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_http_only_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = node_config("n1", None, &dir.path().join("n1"));
    config.tls.plaintext_http = false;
    let Err(err) = meridian_node::spawn(config, tokio_util::sync::CancellationToken::new()).await else {
        panic!("a node without TLS or plaintext_http started");
    };
    assert!(err.to_string().contains("tls.plaintext_http = true"), "{err}");
}

/// Control over TLS: the CLI's client and the nodes reach it only when they trust its CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_over_tls_serves_the_nodes_and_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let ca = meridian_node::transport::certs::DevCa::open_or_create(&certs).unwrap();
    let (cert, key) = ca.issue(&["127.0.0.1".to_string()], &certs, "control").unwrap();
    let mut config = meridian_control::ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("control"),
        tls: meridian_node::transport::tls::TlsConfig {
            cert: Some(cert),
            key: Some(key),
            plaintext_http: false,
        },
        ..Default::default()
    };
    config.auth.enabled = false;
    let mut control = Control::start_exactly(config).await;
    assert!(control.url().starts_with("https://"), "{}", control.url());
    // A client that does not trust the CA cannot talk to control.
    let untrusting = meridian_control::cli::client::Client::new(&control.url()).unwrap();
    assert!(untrusting.list().await.is_err());
    control.client =
        meridian_control::cli::client::Client::with_key_trusting(&control.url(), None, &ca.cert_path)
            .unwrap();
    let v = control.push(MLP, demo_model(MLP).unwrap()).await;
    control.client.deploy(MLP, Some(v)).await.unwrap();
    // A node that trusts the CA follows control's catalog over HTTPS.
    let mut node_config = node_config("n1", Some(control.url()), &dir.path().join("n1"));
    node_config.ca_file = Some(ca.cert_path.clone());
    let node = Node::start(node_config).await;
    node.wait_live(MLP, v).await;
    node.stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_stream_answers_every_line_before_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node, ca) = tls_node(dir.path()).await;
    // Every line before a bad one is answered, and the error names the bad line, also when it
    // sits inside a chunk and blank lines came before it.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let good: Vec<String> = rows(300).iter().map(|r| serde_json::to_string(r).unwrap()).collect();
    let missing = "{\"mean_radius\": 1.0}".to_string();
    for (lines, answered, bad_line) in [
        ([&good[..2], &[String::new(), missing.clone(), good[0].clone()]].concat(), 2, 4),
        ([&good[..], &[String::new(), missing.clone(), good[0].clone()]].concat(), 300, 302),
        ([&good[..5], &["{not json".to_string()]].concat(), 5, 6),
    ] {
        let resp = http
            .post(format!("{}/api/v1/models/{MLP}/stream", node.url()))
            .header("content-type", "application/x-ndjson")
            .body(lines.join("\n"))
            .send()
            .await
            .unwrap();
        let text = resp.text().await.unwrap();
        let out: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(out.len(), answered + 1, "{text}");
        assert!(out[..answered].iter().all(|p| p.get("prediction").is_some()), "{text}");
        let error = &out[answered];
        assert_eq!(error["line"], bad_line, "{error}");
        assert!(error["error"].as_str().unwrap().contains(&format!("line {bad_line}")), "{error}");
    }
    // A stream the node refuses before reading it (an unknown model here) reports the node's
    // error on every transport, though the node closed the connection under the upload.
    for transport in [Transport::Http1, Transport::H3, Transport::Native] {
        let client = Client::connect(options(&node, &ca, transport)).await.unwrap();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for _ in 0..10 {
                if tx.send(Rows::Json(rows(250))).await.is_err() {
                    return;
                }
            }
        });
        let outcome = match client.stream("no-such-model", rx).await {
            Ok(mut answers) => answers.recv().await.unwrap().map(|_| ()),
            Err(e) => Err(e),
        };
        let err = outcome.unwrap_err();
        assert_eq!(err.status(), Some(404), "{transport}: {err}");
    }
    // A request over the node's body limit (4 MiB) is refused with 413, though the node stops
    // reading it midway. Over HTTP/1.1 the upload may break before the answer is read: then
    // the error says what probably happened.
    for transport in [Transport::Http1, Transport::H3, Transport::Native] {
        let client = Client::connect(options(&node, &ca, transport)).await.unwrap();
        let err = client.predict(MLP, Rows::Json(rows(12_000))).await.unwrap_err();
        let explained = transport == Transport::Http1 && err.to_string().contains("max_body_bytes");
        assert!(err.status() == Some(413) || explained, "{transport}: {err}");
    }
    node.stop().await;
    control.stop().await;
}

/// A node that is not there: every transport says it cannot connect, within the connect
/// timeout (5 s), not after the request timeout (QUIC transports once waited the full 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_node_is_a_connect_error_on_every_transport() {
    // A UDP and TCP port nothing listens on: bound, then released.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for transport in [Transport::Http1, Transport::H3, Transport::Native] {
        let options = ClientOptions {
            url: format!("http://127.0.0.1:{port}"),
            transport,
            quic_addr: Some(format!("127.0.0.1:{port}").parse().unwrap()),
            timeout: Duration::from_secs(60),
            ..Default::default()
        };
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            Client::connect(options).await?.predict(MLP, Rows::Json(rows(1))).await
        })
        .await
        .unwrap_or_else(|_| panic!("{transport}: still waiting after 20 s"));
        let err = outcome.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{transport}: {err}");
    }
}
