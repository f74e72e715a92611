//! The feature store end to end: predict by entity, ingest, TTL, invalidation across nodes, a
//! Redis outage (real redis-server, killed and restarted), the sled cache across restarts.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::redis::Redis;
use harness::*;
use meridian_models::demo::{demo_model, patients_view, reading_patients};
use meridian_models::features::{FeatureType, FeatureView};
use meridian_models::ModelSpec;
use serde_json::{json, Value};

/// Control with the patients view and the MLP reading it, and nodes configured by `tweak`.
async fn mesh(
    dir: &std::path::Path,
    nodes: &[&str],
    redis: Option<String>,
    l1_ttl: u64,
) -> (Control, Vec<Node>) {
    let control = Control::start(dir).await;
    control.client.put_view(&patients_view()).await.unwrap();
    let demo = demo_model("breast-cancer-mlp").unwrap();
    let mut spec = reading_patients(&ModelSpec::parse(demo.spec).unwrap());
    spec.name = None;
    control
        .client
        .push("mlp", serde_json::to_string(&spec).unwrap(), demo.onnx.to_vec(), false)
        .await
        .unwrap();
    control.client.deploy("mlp", None).await.unwrap();
    let mut started = Vec::new();
    for id in nodes {
        let mut config = node_config(id, Some(control.url()), &dir.join(id));
        config.features.redis_url = redis.clone();
        config.features.l1_ttl_secs = l1_ttl;
        config.features.breaker_open_ms = 200;
        let node = Node::start(config).await;
        node.wait_live("mlp", 1).await;
        started.push(node);
    }
    (control, started)
}

fn reference_ndjson(r: &Reference) -> String {
    r.rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut row = row.clone();
            row.insert("patient_id".into(), json!(format!("ref{i}")));
            serde_json::to_string(&row).unwrap()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_view(node: &Node, view: &str) {
    node.wait_table(&format!("view {view}"), |t| t.catalog.views.contains_key(view)).await;
}

async fn ingest(node: &Node, view: &str, body: String, content_type: &str) -> Value {
    let resp = http()
        .post(format!("{}/api/v1/features/{view}/ingest", node.url()))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn predict(node: &Node, body: Value) -> (u16, Value) {
    post_json(&format!("{}/api/v1/models/mlp/predict", node.url()), &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_by_entity_equals_predict_with_the_same_features_inline() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = mesh(dir.path(), &["n"], None, 60).await;
    let node = &nodes[0];
    let r = reference(demo_model("breast-cancer-mlp").unwrap());
    let summary = ingest(node, "patients", reference_ndjson(&r), "application/x-ndjson").await;
    assert_eq!(summary["written"], 16);
    assert_eq!(summary["store"], "sled");
    for i in 0..r.rows.len() {
        let (status, by_entity) =
            predict(node, json!({ "entity": { "patient_id": format!("ref{i}") } })).await;
        assert_eq!(status, 200, "{by_entity}");
        let (_, inline) = predict(node, r.features(i)).await;
        assert_eq!(by_entity["prediction"], inline["prediction"]);
        assert!(close(by_entity["prediction"].as_f64().unwrap(), r.prediction(i)));
        assert!(by_entity.get("degraded").is_none());
    }
    // Request features override stored ones.
    let mut row = r.rows[3].clone();
    row.insert("worst_area".into(), json!(4000.0));
    let (_, inline) = predict(node, json!({ "features": row })).await;
    let (_, overridden) =
        predict(node, json!({ "entity": { "patient_id": "ref3" }, "features": { "worst_area": 4000.0 } }))
            .await;
    assert_eq!(inline["prediction"], overridden["prediction"]);
    assert_ne!(overridden["prediction"], predict(node, r.features(3)).await.1["prediction"]);
    // An unknown entity has nothing stored and these features have no default: 422 naming them.
    let (status, answer) = predict(node, json!({ "entity": { "patient_id": "nobody" } })).await;
    assert_eq!(status, 422);
    assert!(answer["error"].as_str().unwrap().contains("\"mean_radius\""), "{answer}");
    let (status, answer) = predict(node, json!({ "entity": { "user": "x" } })).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("\"patient_id\""), "{answer}");
    // Redefining the view without the features the deployed model reads is refused (it once
    // went through and every prediction by entity failed), and nothing changes.
    let mut shrunk = patients_view();
    shrunk.features.retain(|name, _| name == "mean_radius");
    let err = control.client.put_view(&shrunk).await.unwrap_err().to_string();
    assert!(err.contains("409") && err.contains("mlp v1") && err.contains("worst_area"), "{err}");
    let (status, _) = predict(node, json!({ "entity": { "patient_id": "ref2" } })).await;
    assert_eq!(status, 200);
    nodes.into_iter().next().unwrap().stop().await;
    control.stop().await;
}

fn users_view(ttl_secs: u64) -> FeatureView {
    FeatureView {
        name: "users".into(),
        entity: "user_id".into(),
        features: [
            ("age", FeatureType::Int),
            ("score", FeatureType::Float),
            ("country", FeatureType::String),
        ]
        .into_iter()
        .map(|(k, t)| (k.to_string(), t))
        .collect(),
        ttl_secs,
        description: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_ingest_of_100k_rows_into_redis_reports_exactly_the_bad_lines() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = mesh(dir.path(), &["n"], Some(redis.url()), 60).await;
    control.client.put_view(&users_view(3600)).await.unwrap();
    let node = &nodes[0];
    wait_view(node, "users").await;
    let bad = [
        (17, "{not json"),
        (5_000, r#"{"user_id": "u", "age": "old"}"#),
        (77_777, r#"{"age": 3}"#),
        (99_999, r#"{"user_id": "u", "height": 2}"#),
    ];
    let mut lines = Vec::with_capacity(100_000);
    for n in 1..=100_000 {
        match bad.iter().find(|(line, _)| *line == n) {
            Some((_, text)) => lines.push(text.to_string()),
            None => lines.push(format!(
                r#"{{"user_id": "u{n}", "age": {}, "score": {}.5, "country": "de"}}"#,
                n % 90,
                n
            )),
        }
    }
    let summary = ingest(node, "users", lines.join("\n"), "application/x-ndjson").await;
    assert_eq!(summary["written"], 99_996);
    assert_eq!(summary["refused_count"], 4);
    let refused: Vec<u64> =
        summary["refused"].as_array().unwrap().iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(refused, vec![17, 5_000, 77_777, 99_999]);
    assert_eq!(summary["store"], "redis");
    let (status, row) = get_json(&format!("{}/api/v1/features/users/u1234", node.url())).await;
    assert_eq!(status, 200);
    // Read back in the view's types: the int as an integer.
    assert_eq!(row["features"], json!({ "age": 64, "score": 1234.5, "country": "de" }));
    // CSV: a malformed line is refused with its line number.
    let csv = "user_id,age,score\nc1,30,1.5\nc2,thirty,2\nc3,31,2.5\n";
    let summary = ingest(node, "users", csv.to_string(), "text/csv").await;
    assert_eq!(summary["written"], 2);
    assert_eq!(summary["refused"][0]["line"], 3);
    nodes.into_iter().next().unwrap().stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_expire_with_the_view_ttl() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = mesh(dir.path(), &["r"], Some(redis.url()), 1).await;
    control.client.put_view(&users_view(1)).await.unwrap();
    let embedded = Node::start(node_config("s", Some(control.url()), &dir.path().join("s"))).await;
    for node in [&nodes[0], &embedded] {
        wait_view(node, "users").await;
        assert_eq!(put_features(&node.url(), "users", "u1", json!({ "age": 30 })).await, 200);
        assert_eq!(get_json(&format!("{}/api/v1/features/users/u1", node.url())).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    for node in [&nodes[0], &embedded] {
        let (status, answer) = get_json(&format!("{}/api/v1/features/users/u1", node.url())).await;
        assert_eq!(status, 404, "{}: {answer}", node.url());
    }
    embedded.stop().await;
    nodes.into_iter().next().unwrap().stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_node_invalidates_the_caches_of_the_others() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    // L1 lives 60 s: only the invalidation can make node b see the new value quickly.
    let (control, nodes) = mesh(dir.path(), &["a", "b"], Some(redis.url()), 60).await;
    let r = reference(demo_model("breast-cancer-mlp").unwrap());
    ingest(&nodes[0], "patients", reference_ndjson(&r), "application/x-ndjson").await;
    let url_b = format!("{}/api/v1/features/patients/ref0", nodes[1].url());
    assert_eq!(get_json(&url_b).await.1["features"]["worst_area"], r.rows[0]["worst_area"]);
    let (_, before) = predict(&nodes[1], json!({ "entity": { "patient_id": "ref0" } })).await;
    assert_eq!(put_features(&nodes[0].url(), "patients", "ref0", json!({ "worst_area": 4000.0 })).await, 200);
    wait_for("node b to see the write", || {
        let url = url_b.clone();
        async move { get_json(&url).await.1["features"]["worst_area"] == json!(4000.0) }
    })
    .await;
    let (_, after) = predict(&nodes[1], json!({ "entity": { "patient_id": "ref0" } })).await;
    assert_ne!(before["prediction"], after["prediction"]);
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_opens_the_breaker_serves_degraded_from_sled_and_recovers() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = mesh(dir.path(), &["n"], Some(redis.url()), 1).await;
    let node = &nodes[0];
    let r = reference(demo_model("breast-cancer-mlp").unwrap());
    ingest(node, "patients", reference_ndjson(&r), "application/x-ndjson").await;
    let by_entity = |i: usize| json!({ "entity": { "patient_id": format!("ref{i}") } });
    for i in 0..r.rows.len() {
        let (status, answer) = predict(node, by_entity(i)).await;
        assert_eq!(status, 200);
        assert!(answer.get("degraded").is_none());
    }
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1_100)).await; // L1 entries expire
    for round in 0..3 {
        for i in 0..r.rows.len() {
            let (status, answer) = predict(node, by_entity(i)).await;
            assert_eq!(status, 200, "round {round} row {i}: {answer}");
            assert_eq!(answer["degraded"], true);
            assert!(close(answer["prediction"].as_f64().unwrap(), r.prediction(i)));
        }
    }
    let metrics = metrics_text(&node.url()).await;
    assert!(metrics.contains("meridian_feature_breaker_open 1"), "{metrics}");
    // Writes cannot land while Redis is away: 503, not a silent local write.
    assert_eq!(put_features(&node.url(), "patients", "ref0", json!({ "worst_area": 1.0 })).await, 503);

    redis.restart();
    // The breaker refuses writes until its probe finds Redis back (within breaker_open_ms).
    wait_for("a write to land in the restarted Redis", || async {
        let resp = http()
            .post(format!("{}/api/v1/features/patients/ingest", node.url()))
            .body(reference_ndjson(&r))
            .send()
            .await
            .unwrap();
        resp.status() == 200
    })
    .await;
    wait_for("answers that are not degraded", || async {
        let (status, answer) = predict(node, by_entity(0)).await;
        status == 200 && answer.get("degraded").is_none()
    })
    .await;
    nodes.into_iter().next().unwrap().stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sled_cache_survives_a_node_restart() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let (control, mut nodes) = mesh(dir.path(), &["n"], Some(redis.url()), 60).await;
    let node = nodes.remove(0);
    let r = reference(demo_model("breast-cancer-mlp").unwrap());
    ingest(&node, "patients", reference_ndjson(&r), "application/x-ndjson").await;
    let (status, _) = predict(&node, json!({ "entity": { "patient_id": "ref5" } })).await;
    assert_eq!(status, 200);
    let data_dir = node.data_dir.clone();
    node.stop().await;
    redis.kill();
    let mut config = node_config("n", Some(control.url()), &data_dir);
    config.features.redis_url = Some(redis.url());
    let node = Node::start(config).await;
    node.wait_live("mlp", 1).await;
    let (status, answer) = predict(&node, json!({ "entity": { "patient_id": "ref5" } })).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["degraded"], true);
    assert!(close(answer["prediction"].as_f64().unwrap(), r.prediction(5)));
    node.stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_cache_never_serves_an_old_answer() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    control.client.put_view(&patients_view()).await.unwrap();
    let (logreg, mlp) =
        (demo_model("breast-cancer-logreg").unwrap(), demo_model("breast-cancer-mlp").unwrap());
    for demo in [logreg, mlp] {
        let mut spec = reading_patients(&ModelSpec::parse(demo.spec).unwrap());
        spec.name = None;
        control
            .client
            .push("m", serde_json::to_string(&spec).unwrap(), demo.onnx.to_vec(), false)
            .await
            .unwrap();
    }
    control.client.deploy("m", Some(1)).await.unwrap();
    let mut config = node_config("n", Some(control.url()), &dir.path().join("n"));
    config.result_cache_capacity = 10_000;
    let node = Node::start(config).await;
    node.wait_live("m", 1).await;
    let r = reference(mlp);
    ingest(&node, "patients", reference_ndjson(&r), "application/x-ndjson").await;
    let url = format!("{}/api/v1/models/m/predict", node.url());
    let body = json!({ "entity": { "patient_id": "ref2" } });
    let first = post_json(&url, &body).await.1;
    assert_eq!(post_json(&url, &body).await.1["prediction"], first["prediction"]);
    // A feature write changes the input vector: a new answer, not the cached one.
    let written = json!({ "worst_area": 4000.0, "worst_radius": 40.0 });
    assert_eq!(put_features(&node.url(), "patients", "ref2", written).await, 200);
    let after_write = post_json(&url, &body).await.1;
    assert_ne!(after_write["prediction"], first["prediction"]);
    // A deploy changes the version: v2's own answer.
    control.client.deploy("m", Some(2)).await.unwrap();
    node.wait_live("m", 2).await;
    let mut row = r.rows[2].clone();
    row.insert("worst_area".into(), json!(4000.0));
    row.insert("worst_radius".into(), json!(40.0));
    let expected = post_json(&url, &json!({ "features": row })).await.1;
    let after_deploy = post_json(&url, &body).await.1;
    assert_eq!(after_deploy["model_version"], 2);
    assert_eq!(after_deploy["prediction"], expected["prediction"]);
    assert_ne!(after_deploy["prediction"], after_write["prediction"]);
    node.stop().await;
    control.stop().await;
}
