//! Push → deploy → predict over real servers: the seed API and the Open Inference Protocol
//! reproduce the generator's onnxruntime reference outputs.
#![allow(clippy::unwrap_used)]

mod harness;

use harness::*;
use meridian_models::demo::{demo_model, DEMO_MODELS};
use serde_json::{json, Value};

async fn one_node_with_demo_models(dir: &std::path::Path) -> (Control, Node) {
    let control = Control::start(dir).await;
    let node = Node::start(node_config("n1", Some(control.url()), &dir.join("n1"))).await;
    for demo in DEMO_MODELS {
        let v = control.push(demo.name, demo).await;
        control.client.deploy(demo.name, Some(v)).await.unwrap();
    }
    for demo in DEMO_MODELS {
        node.wait_live(demo.name, 1).await;
    }
    (control, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_deploy_predict_returns_reference_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node) = one_node_with_demo_models(dir.path()).await;
    for demo in DEMO_MODELS {
        let r = reference(demo);
        let url = format!("{}/api/v1/models/{}/predict", node.url(), demo.name);
        for i in 0..r.rows.len() {
            let (status, answer) = post_json(&url, &r.features(i)).await;
            assert_eq!(status, 200, "{answer}");
            let got = answer["prediction"].as_f64().unwrap();
            assert!(close(got, r.prediction(i)), "{} row {i}: {got} vs {}", demo.name, r.prediction(i));
            assert_eq!(answer["model_version"], 1);
            assert_eq!(answer["served_by"], "n1");
            assert!(answer["request_id"].as_str().is_some_and(|s| !s.is_empty()));
            assert!(answer["latency_ms"].as_f64().is_some());
            if let Some(p) = r.outputs.get("probabilities") {
                let max = p[i].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).fold(0.0, f64::max);
                assert!(close(answer["confidence"].as_f64().unwrap(), max));
            }
        }
        // The batch form answers every row, in order.
        let (status, answer) = post_json(&url, &json!({ "rows": r.rows })).await;
        assert_eq!(status, 200, "{answer}");
        let preds = answer["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), r.rows.len());
        for (i, p) in preds.iter().enumerate() {
            assert!(close(p["prediction"].as_f64().unwrap(), r.prediction(i)), "{} batch row {i}", demo.name);
        }
    }
    node.stop().await;
    control.stop().await;
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        x => vec![x.as_f64().unwrap()],
    }
}

fn v2_request(r: &Reference, features: &[&str]) -> (Value, Vec<f32>) {
    let data: Vec<f32> =
        r.rows.iter().flat_map(|row| features.iter().map(|f| row[*f].as_f64().unwrap() as f32)).collect();
    let body = json!({
        "id": "req-1",
        "inputs": [{ "name": "input", "shape": [r.rows.len(), features.len()], "datatype": "FP32", "data": data }],
    });
    (body, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_infer_batched_returns_reference_outputs_in_json_and_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node) = one_node_with_demo_models(dir.path()).await;
    let demo = demo_model("breast-cancer-mlp").unwrap();
    let spec = meridian_models::ModelSpec::parse(demo.spec).unwrap();
    let r = reference(demo);
    let names: Vec<&str> = spec.feature_names().collect();
    let (body, data) = v2_request(&r, &names);

    for path in ["infer", "versions/1/infer"] {
        let url = format!("{}/v2/models/{}/{path}", node.url(), demo.name);
        let (status, answer) = post_json(&url, &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["model_name"], demo.name);
        assert_eq!(answer["model_version"], "1");
        assert_eq!(answer["id"], "req-1");
        let outputs = answer["outputs"].as_array().unwrap();
        let probs = outputs.iter().find(|o| o["name"] == "probabilities").unwrap();
        assert_eq!(probs["datatype"], "FP32");
        assert_eq!(probs["shape"], json!([r.rows.len(), 2]));
        let expected = flat(&r.outputs["probabilities"]);
        for (g, e) in flat(&probs["data"]).iter().zip(&expected) {
            assert!(close(*g, *e), "{g} vs {e}");
        }
        let labels = outputs.iter().find(|o| o["name"] == "label").unwrap();
        assert_eq!(labels["datatype"], "INT64");
        assert_eq!(flat(&labels["data"]), flat(&r.outputs["label"]));
    }

    // Binary tensor data extension: input bytes after the JSON header, output bytes requested.
    let header = json!({
        "inputs": [{ "name": "input", "shape": [r.rows.len(), 30], "datatype": "FP32",
                     "parameters": { "binary_data_size": data.len() * 4 } }],
        "outputs": [{ "name": "probabilities", "parameters": { "binary_data": true } }],
    });
    let mut payload = serde_json::to_vec(&header).unwrap();
    let header_len = payload.len();
    payload.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    let resp = http()
        .post(format!("{}/v2/models/{}/infer", node.url(), demo.name))
        .header("Inference-Header-Content-Length", header_len.to_string())
        .header("content-type", "application/octet-stream")
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let json_len: usize =
        resp.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = resp.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    let out = &answer["outputs"][0];
    assert_eq!(out["name"], "probabilities");
    let size = out["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
    assert_eq!(size, bytes.len() - json_len);
    let got: Vec<f64> = bytes[json_len..]
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let expected = flat(&r.outputs["probabilities"]);
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert!(close(*g, *e), "{g} vs {e}");
    }
    node.stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_health_and_metadata_describe_the_served_models() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node) = one_node_with_demo_models(dir.path()).await;
    let base = node.url();
    assert_eq!(get_json(&format!("{base}/v2/health/live")).await.0, 200);
    assert_eq!(get_json(&format!("{base}/v2/health/ready")).await.0, 200);
    assert_eq!(get_json(&format!("{base}/readyz")).await.0, 200);
    let (status, server) = get_json(&format!("{base}/v2")).await;
    assert_eq!(status, 200);
    assert!(server["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));
    let (status, meta) = get_json(&format!("{base}/v2/models/diabetes-ridge")).await;
    assert_eq!(status, 200);
    assert_eq!(meta["inputs"][0], json!({ "name": "input", "datatype": "FP32", "shape": [-1, 10] }));
    assert_eq!(meta["outputs"][0]["name"], "value");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(get_json(&format!("{base}/v2/models/diabetes-ridge/versions/1/ready")).await.0, 200);
    assert_eq!(get_json(&format!("{base}/v2/models/diabetes-ridge/versions/7/ready")).await.0, 404);
    assert_eq!(get_json(&format!("{base}/v2/models/nope/ready")).await.0, 404);
    // Served requests show up in the metrics.
    let r = reference(demo_model("diabetes-ridge").unwrap());
    post_json(&format!("{base}/api/v1/models/diabetes-ridge/predict"), &r.features(0)).await;
    let metrics = metrics_text(&base).await;
    assert!(
        metrics.contains(
            r#"meridian_requests_total{model="diabetes-ridge",version="1",arm="",api="predict",code="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("meridian_request_duration_seconds_bucket{"));
    node.stop().await;
    control.stop().await;
}

/// The stock `tritonclient` HTTP client works unchanged (JSON and binary tensors both ways).
/// Needs a Python with `tritonclient[http]`: the test script (`deploy/test.sh`) makes one and
/// sets `MERIDIAN_TEST_PYTHON`; without it this test says it was skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_tritonclient_gets_reference_outputs() {
    let Ok(python) = std::env::var("MERIDIAN_TEST_PYTHON") else {
        eprintln!(
            "SKIPPED: set MERIDIAN_TEST_PYTHON to a Python with tritonclient[http] (deploy/test.sh does)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (control, node) = one_node_with_demo_models(dir.path()).await;
    let reference = dir.path().join("reference.json");
    std::fs::write(&reference, demo_model("breast-cancer-mlp").unwrap().reference).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tritonclient_check.py");
    let host = node.handle.addr.to_string();
    let run = tokio::process::Command::new(python)
        .args([script, &host, "breast-cancer-mlp", reference.to_str().unwrap()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("tritonclient check timed out")
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tritonclient check failed:\n{text}");
    assert!(text.contains("tritonclient: ok"), "{text}");
    node.stop().await;
    control.stop().await;
}
