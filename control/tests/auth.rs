//! Auth and rate limits over real servers: control with auth on (a bootstrap admin key) and
//! nodes with auth on, JWT issuers for HS256, RS256 and EdDSA, API keys made with control's API.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use meridian_control::api::auth::admin_key_sha256;
use meridian_control::cli::client::Client;
use meridian_control::registry::keys::{generate_key, KeySpec};
use meridian_control::ControlConfig;
use meridian_gossip::keys::{KeyLimits, Scope, Scopes};
use meridian_models::demo::demo_model;
use meridian_node::auth::jwt::{JwtAlg, JwtIssuer};
use meridian_node::auth::unix_secs;
use serde_json::{json, Value};

const MLP: &str = "breast-cancer-mlp";
const LOGREG: &str = "breast-cancer-logreg";
const SECRET: &str = "the integration tests' HS256 secret, 32+ bytes";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../node/tests/fixtures/jwt");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

fn issuer(alg: JwtAlg) -> JwtIssuer {
    let (secret, public_key_pem) = match alg {
        JwtAlg::HS256 => (Some(SECRET.to_string()), None),
        // One as PEM text, one as a file path: both forms work.
        JwtAlg::RS256 => (None, Some(fixture("rsa-public.pem"))),
        JwtAlg::EdDSA => (None, Some(format!("{FIXTURES}/ed25519-public.pem"))),
    };
    JwtIssuer {
        alg,
        secret,
        public_key_pem,
        jwks_file: None,
        issuer: "https://idp.test".into(),
        audience: Some("meridian".into()),
    }
}

fn token(alg: JwtAlg, claims: &Value) -> String {
    let (a, key) = match alg {
        JwtAlg::HS256 => (Algorithm::HS256, EncodingKey::from_secret(SECRET.as_bytes())),
        JwtAlg::RS256 => {
            (Algorithm::RS256, EncodingKey::from_rsa_pem(fixture("rsa-private.pem").as_bytes()).unwrap())
        }
        JwtAlg::EdDSA => {
            (Algorithm::EdDSA, EncodingKey::from_ed_pem(fixture("ed25519-private.pem").as_bytes()).unwrap())
        }
    };
    encode(&Header::new(a), claims, &key).unwrap()
}

fn claims(exp_in: i64) -> Value {
    json!({ "sub": "app-1", "iss": "https://idp.test", "aud": "meridian",
            "exp": unix_secs() as i64 + exp_in, "scope": "predict" })
}

/// Control with auth on, driven with a bootstrap admin key; `n` nodes with auth on.
async fn secured(
    dir: &std::path::Path,
    n: usize,
    limits: impl Fn(&mut meridian_node::NodeConfig),
) -> (Control, Vec<Node>) {
    let (_, admin) = generate_key().unwrap();
    let mut config = ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("control"),
        ..ControlConfig::default()
    };
    config.auth.admin_key_sha256 = Some(admin_key_sha256(&admin));
    let mut control = Control::start_with(config).await;
    // Without the key control refuses its operator API.
    assert!(control.client.list().await.unwrap_err().to_string().contains("401"));
    control.client = Client::with_key(&control.url(), Some(&admin)).unwrap();
    let mut nodes = Vec::new();
    for i in 0..n {
        let id = format!("n{i}");
        let mut c = node_config(&id, Some(control.url()), &dir.join(&id));
        c.auth = meridian_node::auth::AuthConfig {
            jwt: vec![issuer(JwtAlg::HS256), issuer(JwtAlg::RS256), issuer(JwtAlg::EdDSA)],
            ..Default::default()
        };
        limits(&mut c);
        nodes.push(Node::start(c).await);
    }
    for name in [MLP, LOGREG] {
        let v = control.push(name, demo_model(name).unwrap()).await;
        control.client.deploy(name, Some(v)).await.unwrap();
    }
    for node in &nodes {
        node.wait_live(MLP, 1).await;
        node.wait_live(LOGREG, 1).await;
    }
    (control, nodes)
}

fn row(model: &str) -> Value {
    reference(demo_model(model).unwrap()).features(0)
}

/// POST a predict with `credential` as a bearer token; the status, headers and answer.
async fn predict(
    node: &str,
    model: &str,
    credential: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = http().post(format!("{node}/api/v1/models/{model}/predict")).json(&row(model));
    if let Some(c) = credential {
        req = req.bearer_auth(c);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap())
}

async fn create_key(control: &Control, scopes: &[Scope], models: &[&str], limits: KeyLimits) -> String {
    let spec = KeySpec {
        name: "test".into(),
        scopes: scopes.iter().copied().collect::<Scopes>(),
        models: (!models.is_empty()).then(|| models.iter().map(|m| m.to_string()).collect()),
        limits,
    };
    control.client.create_key(&spec).await.unwrap().key
}

/// Wait until `node` accepts `key` (the catalog carrying it has arrived).
async fn wait_accepted(node: &Node, key: &str) {
    let id = meridian_gossip::keys::key_id(key).unwrap().to_string();
    node.wait_table(&format!("key {id}"), |t| t.catalog.keys.contains_key(&id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused_and_fresh_ones_accepted_for_every_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = secured(dir.path(), 1, |_| {}).await;
    let node = nodes[0].url();
    for alg in [JwtAlg::HS256, JwtAlg::RS256, JwtAlg::EdDSA] {
        let (status, headers, answer) = predict(&node, MLP, Some(&token(alg, &claims(300)))).await;
        assert_eq!(status, 200, "{alg:?}: {answer}");
        assert_eq!(headers["ratelimit-limit"], "1000");
        // Expired beyond the 30 s leeway.
        let (status, headers, answer) = predict(&node, MLP, Some(&token(alg, &claims(-120)))).await;
        assert_eq!(status, 401, "{alg:?}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains("expired"), "{answer}");
        assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    }
    let mut refused = Vec::new();
    let mut wrong_aud = claims(300);
    wrong_aud["aud"] = json!("another-service");
    refused.push(("audience", token(JwtAlg::RS256, &wrong_aud)));
    let mut wrong_iss = claims(300);
    wrong_iss["iss"] = json!("https://evil.test");
    refused.push(("issuer", token(JwtAlg::EdDSA, &wrong_iss)));
    let other = EncodingKey::from_ed_pem(fixture("other-ed25519-private.pem").as_bytes()).unwrap();
    refused.push(("signature", encode(&Header::new(Algorithm::EdDSA), &claims(300), &other).unwrap()));
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    refused.push(("malformed", format!("{}.{}.", b64(json!({"alg": "none"})), b64(claims(300)))));
    for (why, token) in refused {
        let (status, _, answer) = predict(&node, MLP, Some(&token)).await;
        assert_eq!(status, 401, "{why}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(why), "{why}: {answer}");
    }
    let (status, headers, answer) = predict(&node, MLP, None).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    // The token has `predict` only: features:write is refused with 403.
    let put = http()
        .put(format!("{node}/api/v1/features/patients/p1"))
        .bearer_auth(token(JwtAlg::HS256, &claims(300)))
        .json(&json!({"features": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 403);
    // Health and metrics stay open; the failures are counted.
    let metrics = metrics_text(&node).await;
    assert!(metrics.contains("meridian_auth_failures_total{reason=\"expired\"} 3"), "{metrics}");
    nodes.into_iter().next().unwrap().stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_need_their_scope_and_model_and_a_revoked_key_stops_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = secured(dir.path(), 2, |_| {}).await;
    let mlp_only = create_key(&control, &[Scope::Predict], &[MLP], KeyLimits::default()).await;
    let batch_only = create_key(&control, &[Scope::Batch], &[], KeyLimits::default()).await;
    for node in &nodes {
        wait_accepted(node, &mlp_only).await;
        wait_accepted(node, &batch_only).await;
    }
    let n0 = nodes[0].url();
    let (status, _, answer) = predict(&n0, MLP, Some(&mlp_only)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = predict(&n0, LOGREG, Some(&mlp_only)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains(LOGREG), "{answer}");
    let (status, _, answer) = predict(&n0, MLP, Some(&batch_only)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("predict"), "{answer}");
    // The same key works through x-api-key, on the V2 API too.
    let v2 = http().get(format!("{n0}/v2/models/{MLP}")).header("x-api-key", &mlp_only).send().await.unwrap();
    assert_eq!(v2.status().as_u16(), 200);
    // A key limited to some models cannot batch-score another (the model is in the body).
    let both = create_key(&control, &[Scope::Batch], &[MLP], KeyLimits::default()).await;
    wait_accepted(&nodes[0], &both).await;
    let submit = |model: &str| {
        http()
            .post(format!("{n0}/api/v1/batch"))
            .bearer_auth(&both)
            .json(&json!({"model": model, "input": "/nonexistent.csv"}))
    };
    assert_eq!(submit(LOGREG).send().await.unwrap().status().as_u16(), 403);
    assert_eq!(submit(MLP).send().await.unwrap().status().as_u16(), 400);
    // A node key is not an operator key.
    let as_operator = Client::with_key(&control.url(), Some(&mlp_only)).unwrap();
    assert!(as_operator.keys().await.unwrap_err().to_string().contains("403"));
    let id = meridian_gossip::keys::key_id(&mlp_only).unwrap().to_string();
    let listed = control.client.keys().await.unwrap();
    assert!(listed.iter().any(|k| k.id == id && k.hash != mlp_only && k.revoked_at.is_none()));
    // Revoke: every node refuses the key as revoked, within the catalog's propagation time.
    let revoked_at = tokio::time::Instant::now();
    control.client.revoke_key(&id).await.unwrap();
    for node in &nodes {
        let url = node.url();
        wait_for("the revoked key refused", || {
            let (url, key) = (url.clone(), mlp_only.clone());
            async move { predict(&url, MLP, Some(&key)).await.0 == 401 }
        })
        .await;
        let (_, _, answer) = predict(&url, MLP, Some(&mlp_only)).await;
        assert!(answer["error"].as_str().unwrap().contains("revoked"), "{answer}");
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(5), "took {:?}", revoked_at.elapsed());
    assert!(control.client.keys().await.unwrap().iter().any(|k| k.id == id && k.revoked_at.is_some()));
    for node in nodes {
        node.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_limit_gets_429_and_the_allowed_rate_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = secured(dir.path(), 1, |c| c.limits.batch_per_minute = 2).await;
    let limited = KeyLimits { predict_per_second: Some(20), batch_per_minute: None };
    let key = create_key(&control, &[Scope::Predict, Scope::Batch], &[], limited).await;
    wait_accepted(&nodes[0], &key).await;
    let node = nodes[0].url();
    // A burst of 60 at once: the bucket holds 20 (plus what refills meanwhile).
    let burst = (0..60).map(|_| predict(&node, MLP, Some(&key)));
    let answers = futures_util::future::join_all(burst).await;
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    assert!((20..=30).contains(&ok), "{ok} of 60 passed");
    let (_, headers, answer) = answers.iter().find(|(s, _, _)| *s == 429).unwrap();
    assert!(answer["error"].as_str().unwrap().contains("rate limit"), "{answer}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["ratelimit-limit"], "20");
    assert_eq!(headers["ratelimit-remaining"], "0");
    // Another model has its own bucket.
    assert_eq!(predict(&node, LOGREG, Some(&key)).await.0, 200);
    // At 10 a second (half the limit) every request passes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..20 {
        let (status, headers, answer) = predict(&node, MLP, Some(&key)).await;
        assert_eq!(status, 200, "request {i}: {answer}");
        assert!(headers.contains_key("ratelimit-remaining"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Batch submissions: 2 a minute (the node's default here), then 429 for about half a minute.
    for _ in 0..2 {
        let resp = http()
            .post(format!("{node}/api/v1/batch"))
            .bearer_auth(&key)
            .json(&json!({"model": "nope"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404);
        assert!(resp.headers().contains_key("ratelimit-remaining"), "{:?}", resp.headers());
    }
    let resp = http()
        .post(format!("{node}/api/v1/batch"))
        .bearer_auth(&key)
        .json(&json!({"model": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let wait: u32 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((20..=30).contains(&wait), "Retry-After {wait}");
    assert_eq!(resp.headers()["ratelimit-limit"], "2");
    assert_eq!(resp.headers()["ratelimit-remaining"], "0");
    // Another key has its own bucket.
    let other = create_key(&control, &[Scope::Batch], &[], KeyLimits::default()).await;
    wait_accepted(&nodes[0], &other).await;
    let resp = http()
        .post(format!("{node}/api/v1/batch"))
        .bearer_auth(&other)
        .json(&json!({"model": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let metrics = metrics_text(&node).await;
    assert!(metrics.contains("meridian_rate_limited_total{kind=\"batch\"} 1"), "{metrics}");
    nodes.into_iter().next().unwrap().stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_on_unless_turned_off_and_control_makes_an_admin_key_when_it_has_none() {
    assert!(meridian_node::NodeConfig::default().auth.enabled);
    assert!(ControlConfig::default().auth.enabled);
    let dir = tempfile::tempdir().unwrap();
    // Control with auth on by default and no bootstrap key: it writes one, readable only by us.
    let config = ControlConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("control"),
        ..ControlConfig::default()
    };
    let control = Control::start_with(config).await;
    let path = dir.path().join("control/admin.key");
    let admin = std::fs::read_to_string(&path).unwrap().trim().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(control.client.list().await.unwrap_err().to_string().contains("401"));
    let admin_client = Client::with_key(&control.url(), Some(&admin)).unwrap();
    assert!(admin_client.list().await.unwrap().is_empty());
    // Nodes' routes stay open on control.
    assert!(control.client.catalog().await.is_ok());
    // A node with the default config refuses requests without a credential; health stays open.
    let on = Node::start(meridian_node::NodeConfig {
        auth: Default::default(),
        ..node_config("on", Some(control.url()), &dir.path().join("on"))
    })
    .await;
    let (status, _, _) = predict(&on.url(), MLP, None).await;
    assert_eq!(status, 401);
    assert_eq!(http().get(format!("{}/healthz", on.url())).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(http().get(format!("{}/api/v1/node", on.url())).send().await.unwrap().status().as_u16(), 401);
    // Turned off explicitly (the harness's default): no credential needed.
    let off = Node::start(node_config("off", Some(control.url()), &dir.path().join("off"))).await;
    assert_eq!(http().get(format!("{}/api/v1/node", off.url())).send().await.unwrap().status().as_u16(), 200);
    on.stop().await;
    off.stop().await;
    control.stop().await;
}

/// The native QUIC protocol authenticates once per connection (`HELLO`), and each request on
/// the connection still follows the key: its models, its rate limit, its revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_quic_authenticates_per_connection_and_follows_models_limits_and_revocation() {
    use meridian_node::client::{Client as Node2, ClientOptions, Rows, Transport};
    let dir = tempfile::tempdir().unwrap();
    let ca = meridian_node::transport::certs::DevCa::open_or_create(&dir.path().join("certs")).unwrap();
    let (cert, key) = ca.issue(&["127.0.0.1".to_string()], &dir.path().join("certs"), "n0").unwrap();
    let (control, nodes) = secured(dir.path(), 1, |c| {
        c.tls = meridian_node::transport::tls::TlsConfig {
            cert: Some(cert.clone()),
            key: Some(key.clone()),
            plaintext_http: true,
        };
    })
    .await;
    let node = &nodes[0];
    let options = |token: Option<&str>| ClientOptions {
        url: node.url(),
        transport: Transport::Native,
        ca: Some(ca.cert_path.clone()),
        token: token.map(str::to_string),
        quic_addr: node.handle.quic_addr,
        timeout: Duration::from_secs(10),
    };
    let rows = |model: &str| Rows::Json(vec![reference(demo_model(model).unwrap()).rows[0].clone()]);
    // No token, or a made-up key: the connection is refused with UNAUTHENTICATED.
    for token in [None, Some("mk_0123456789_00")] {
        let err = Node2::connect(options(token)).await.unwrap_err();
        assert_eq!(err.status(), Some(401), "{err}");
        assert!(err.to_string().contains("code 3"), "{err}");
    }
    // A key for the logistic regression only, 5 predictions a second.
    let limits = KeyLimits { predict_per_second: Some(5), ..KeyLimits::default() };
    let logreg_only = create_key(&control, &[Scope::Predict], &[LOGREG], limits).await;
    wait_accepted(node, &logreg_only).await;
    let client = Node2::connect(options(Some(&logreg_only))).await.unwrap();
    assert_eq!(client.predict(MLP, rows(MLP)).await.unwrap_err().status(), Some(403));
    let mut refused = None;
    for _ in 0..20 {
        match client.predict(LOGREG, rows(LOGREG)).await {
            Ok(answer) => assert_eq!(answer.predictions.len(), 1),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    match refused {
        Some(meridian_node::client::ClientError::Status {
            status: 429, retry_after_ms: Some(ms), ..
        }) => {
            assert!(ms >= 1000, "{ms}")
        }
        other => panic!("a burst of 20 at 5/s was not limited: {other:?}"),
    }
    // Revoking a key ends it on open connections too, within the catalog's propagation time.
    let full = create_key(&control, &[Scope::Predict], &[], KeyLimits::default()).await;
    wait_accepted(node, &full).await;
    let client = Node2::connect(options(Some(&full))).await.unwrap();
    client.predict(MLP, rows(MLP)).await.unwrap();
    let id = meridian_gossip::keys::key_id(&full).unwrap().to_string();
    control.client.revoke_key(&id).await.unwrap();
    wait_for("the revoked key refused on an open connection", || {
        let client = client.clone();
        let rows = rows(MLP);
        async move { client.predict(MLP, rows).await.is_err_and(|e| e.status() == Some(401)) }
    })
    .await;
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

/// A node's reports to control need the `node` scope (its `auth.peer_key`): with them open,
/// anyone who reached control could point a node id at any URL (where spread batch shards and
/// their credential go) or feed a canary's judgement with made-up latencies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reports_to_control_need_the_node_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (control, _) = secured(dir.path(), 0, |_| {}).await;
    let url = format!("{}/api/v1/nodes/heartbeat", control.url());
    let forged = json!({ "id": "eu-1", "region": "eu", "http_url": "http://attacker.example",
                         "catalog_epoch": 1, "ready": true, "models": [], "queued": 0 });
    let post = |key: Option<String>| {
        let mut request = http().post(&url).json(&forged);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(None).await, 401);
    let app = create_key(&control, &[Scope::Predict, Scope::Batch], &[], KeyLimits::default()).await;
    assert_eq!(post(Some(app)).await, 403);
    let report = http().post(format!("{}/api/v1/metrics/report", control.url())).json(&json!({}));
    assert_eq!(report.send().await.unwrap().status().as_u16(), 401);
    assert!(control.client.nodes().await.unwrap().is_empty(), "nothing was registered");
    // A node with a node-scoped peer key reports itself.
    let node_key = create_key(&control, &[Scope::Node], &[], KeyLimits::default()).await;
    let mut config = node_config("n0", Some(control.url()), &dir.path().join("n0"));
    config.auth.peer_key = Some(node_key);
    config.heartbeat_ms = 100;
    let node = Node::start(config).await;
    wait_for("the node in control's directory", || async {
        control.client.nodes().await.unwrap().iter().any(|n| n.info.id == "n0")
    })
    .await;
    node.stop().await;
    control.stop().await;
}
