//! Every bad input gets a clear JSON error with the right status, and nothing stored is lost.
#![allow(clippy::unwrap_used)]

mod harness;

use harness::*;
use meridian_models::demo::demo_model;
use serde_json::{json, Value};

async fn mlp_node(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut meridian_node::NodeConfig),
) -> (Control, Node) {
    let control = Control::start(dir).await;
    let mut config = node_config("n", Some(control.url()), &dir.join("n"));
    tweak(&mut config);
    let node = Node::start(config).await;
    let demo = demo_model("breast-cancer-mlp").unwrap();
    control.push(demo.name, demo).await;
    control.client.deploy(demo.name, None).await.unwrap();
    node.wait_live(demo.name, 1).await;
    (control, node)
}

fn error_of(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_else(|| panic!("no error message in {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_api_bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node) = mlp_node(dir.path(), |c| c.max_body_bytes = 64 << 10).await;
    let url = format!("{}/api/v1/models/breast-cancer-mlp/predict", node.url());
    let r = reference(demo_model("breast-cancer-mlp").unwrap());

    let (status, answer) = post_raw(&url, b"{\"features\": {".to_vec()).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("malformed JSON") && error_of(&answer).contains("line 1"), "{answer}");

    let mut row = r.rows[0].clone();
    row.insert("mean_radiuss".into(), json!(1.0));
    let (status, answer) = post_json(&url, &json!({ "features": row })).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("unknown features [\"mean_radiuss\"]"), "{answer}");

    let mut row = r.rows[0].clone();
    row.remove("worst_area");
    row.remove("mean_texture");
    let (status, answer) = post_json(&url, &json!({ "rows": [r.rows[1], row] })).await;
    assert_eq!(status, 422);
    let msg = error_of(&answer);
    assert!(
        msg.starts_with("rows[1]:") && msg.contains("\"mean_texture\"") && msg.contains("\"worst_area\""),
        "{msg}"
    );

    let mut row = r.rows[0].clone();
    row.insert("mean_area".into(), json!("big"));
    let (status, answer) = post_json(&url, &json!({ "features": row })).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("\"mean_area\" must be a number"), "{answer}");

    let mut row = r.rows[0].clone();
    row.insert("mean_area".into(), json!(1e39));
    let (status, answer) = post_json(&url, &json!({ "features": row })).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("not a finite 32-bit float"), "{answer}");

    let (status, answer) = post_raw(&url, br#"{"features": {"mean_area": NaN}}"#.to_vec()).await;
    assert_eq!(status, 400, "{answer}");

    let (status, answer) = post_json(&url, &json!({ "feature": r.rows[0] })).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("unknown field `feature`"), "{answer}");

    let big = json!({ "rows": vec![r.rows[0].clone(); 200] });
    let (status, answer) = post_json(&url, &big).await;
    assert_eq!(status, 413);
    assert!(error_of(&answer).contains("max_body_bytes"), "{answer}");

    let (status, answer) =
        post_json(&format!("{}/api/v1/models/nope/predict", node.url()), &r.features(0)).await;
    assert_eq!(status, 404);
    assert!(error_of(&answer).contains("unknown model \"nope\""), "{answer}");

    // The node still answers good requests after all that.
    let (status, _) = post_json(&url, &r.features(0)).await;
    assert_eq!(status, 200);
    node.stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node) = mlp_node(dir.path(), |_| {}).await;
    let url = format!("{}/v2/models/breast-cancer-mlp/infer", node.url());
    let input = |shape: Value, datatype: &str, data: Value| json!({ "inputs": [{ "name": "input", "shape": shape, "datatype": datatype, "data": data }] });
    let cases = [
        (input(json!([1, 29]), "FP32", json!(vec![0.0; 29])), 400, "has shape [1, 29]"),
        (input(json!([1, 30]), "INT64", json!(vec![0; 30])), 400, "datatype INT64"),
        (input(json!([2, 30]), "FP32", json!(vec![0.0; 30])), 400, "needs 60 values, data has 30"),
        (input(json!([1, 30]), "FP32", json!(vec!["x"; 30])), 400, "not a number"),
        // Sized from the shape before the data: these once aborted the whole process.
        (input(json!([1_000_000_000, 30]), "FP32", json!(vec![0.0; 30])), 413, "the limit is 10000"),
        (input(json!([u64::MAX / 10, 30]), "FP32", json!(vec![0.0; 30])), 413, "the limit is 10000"),
        // Nested data must follow the shape, not merely hold as many numbers.
        (input(json!([2, 30]), "FP32", json!([vec![0.0; 29], vec![0.0; 31]])), 400, "row 0 has 29 values"),
        (input(json!([2, 30]), "FP32", json!([vec![0.0; 30]])), 400, "needs 2 rows, data has 1"),
        (
            json!({ "inputs": [{ "name": "x", "shape": [1, 30], "datatype": "FP32", "data": vec![0.0; 30] }] }),
            400,
            "unknown input \"x\"",
        ),
        (json!({ "inputs": [] }), 400, "has 0 inputs"),
        (
            json!({ "inputs": [{ "name": "input", "shape": [1, 30], "datatype": "FP32", "data": vec![0.0; 30] }],
                 "outputs": [{ "name": "logits" }] }),
            400,
            "unknown output \"logits\"",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = post_json(&url, &body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert!(error_of(&answer).contains(needle), "{needle:?} not in {answer}");
    }
    // NaN can only arrive in binary form; it is refused, not scored.
    let mut payload =
        serde_json::to_vec(&json!({ "inputs": [{ "name": "input", "shape": [1, 30], "datatype": "FP32",
        "parameters": { "binary_data_size": 120 } }] }))
        .unwrap();
    let header_len = payload.len();
    payload.extend((0..30).flat_map(|i| if i == 7 { f32::NAN } else { 0.0f32 }.to_le_bytes()));
    let resp = http()
        .post(&url)
        .header("Inference-Header-Content-Length", header_len.to_string())
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let answer: Value = resp.json().await.unwrap();
    assert!(error_of(&answer).contains("element 7 (row 0, column 7) is not finite"), "{answer}");

    let (status, answer) = post_json(
        &format!("{}/v2/models/breast-cancer-mlp/versions/9/infer", node.url()),
        &input(json!([1, 30]), "FP32", json!(vec![0.0; 30])),
    )
    .await;
    assert_eq!(status, 404);
    assert!(error_of(&answer).contains("no version 9"), "{answer}");
    node.stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_mismatched_pushes_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let demo = demo_model("breast-cancer-mlp").unwrap();
    let spec = demo.spec.replace("breast-cancer-mlp", "m");

    let err = control
        .client
        .push("m", spec.clone(), b"not an onnx file".to_vec(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("422") && err.contains("does not load as ONNX"), "{err}");
    let mut truncated = demo.onnx.to_vec();
    truncated.truncate(truncated.len() / 3);
    let err = control.client.push("m", spec.clone(), truncated, false).await.unwrap_err().to_string();
    assert!(err.contains("422"), "{err}");
    let ridge_spec = demo_model("diabetes-ridge").unwrap().spec.replace("diabetes-ridge", "m");
    let err = control.client.push("m", ridge_spec, demo.onnx.to_vec(), false).await.unwrap_err().to_string();
    assert!(err.contains("fill 10 columns but the model input has 30 columns"), "{err}");
    let err = control
        .client
        .push("m", "features = [".into(), demo.onnx.to_vec(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid feature spec"), "{err}");
    let err = control
        .client
        .push("m", spec.replace("name = \"m\"", "name = \"x\""), demo.onnx.to_vec(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec is for model \"x\""), "{err}");

    // Nothing was stored: no model, and the first good push is version 1.
    assert!(control.client.list().await.unwrap().is_empty());
    let artifacts = std::fs::read_dir(dir.path().join("control/artifacts")).unwrap().count();
    assert_eq!(artifacts, 0);
    assert_eq!(control.push("m", demo).await, 1);
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_not_loaded_yet_answer_503() {
    let dir = tempfile::tempdir().unwrap();
    // A node that has never reached control has no catalog.
    let config = node_config("lonely", Some("http://127.0.0.1:9".into()), &dir.path().join("lonely"));
    let node = Node::start(config).await;
    let r = reference(demo_model("diabetes-ridge").unwrap());
    let resp = http()
        .post(format!("{}/api/v1/models/diabetes-ridge/predict", node.url()))
        .json(&r.features(0))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let answer: Value = resp.json().await.unwrap();
    assert!(error_of(&answer).contains("has not received a catalog"), "{answer}");
    assert_eq!(get_json(&format!("{}/readyz", node.url())).await.0, 503);
    node.stop().await;

    // A catalog whose artifact is gone from disk (and control is down): 503 for that model.
    let (control, node) = mlp_node(dir.path(), |_| {}).await;
    let data_dir = node.data_dir.clone();
    node.stop().await;
    control.stop().await;
    for entry in std::fs::read_dir(data_dir.join("artifacts")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let node = Node::start(node_config("n", None, &data_dir)).await;
    node.wait_table("the persisted catalog adopted", |t| t.has_catalog).await;
    let (status, answer) = post_json(
        &format!("{}/api/v1/models/breast-cancer-mlp/predict", node.url()),
        &json!({ "features": {} }),
    )
    .await;
    assert_eq!(status, 503);
    assert!(error_of(&answer).contains("deployed but not loaded"), "{answer}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_returns_429_rather_than_queueing_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node) = mlp_node(dir.path(), |c| {
        c.queue_capacity = 1;
        c.workers_per_model = 1;
        c.max_batch_rows = 10_000;
        c.max_body_bytes = 64 << 20;
    })
    .await;
    // Binary V2 requests: decoding costs a copy, so the model's queue is what fills up.
    let rows = 10_000;
    let mut body =
        serde_json::to_vec(&json!({ "inputs": [{ "name": "input", "shape": [rows, 30], "datatype": "FP32",
        "parameters": { "binary_data_size": rows * 30 * 4 } }] }))
        .unwrap();
    let header_len = body.len();
    body.extend((0..rows * 30).flat_map(|i| ((i % 7) as f32 * 0.1).to_le_bytes()));
    let url = format!("{}/v2/models/breast-cancer-mlp/infer", node.url());
    let client = http();
    let requests = (0..32).map(|_| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tokio::spawn(async move {
            let resp = client
                .post(url)
                .header("Inference-Header-Content-Length", header_len.to_string())
                .body(body)
                .send()
                .await
                .unwrap();
            let retry_after = resp.headers().get("retry-after").is_some();
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.unwrap();
            (status, retry_after, answer)
        })
    });
    let mut ok = 0;
    let mut refused = 0;
    for handle in requests.collect::<Vec<_>>() {
        let (status, retry_after, answer) = handle.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert!(retry_after, "429 without Retry-After");
                assert!(error_of(&answer).contains("queue is full"), "{answer}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert!(ok >= 1, "nothing was served");
    assert!(refused >= 1, "a queue of 1 took 32 concurrent 10,000-row requests without refusing any");
    node.stop().await;
    control.stop().await;
}

/// The framework's own refusals (a body over the limit, a query or form that does not parse,
/// a method a route does not take, a path that is not UTF-8) are JSON errors like every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_refusals_are_json_errors_too() {
    let dir = tempfile::tempdir().unwrap();
    let (control, node) = mlp_node(dir.path(), |_| {}).await;
    let (c, n) = (control.url(), node.url());
    let big = vec![b'x'; 3 << 20];
    let cases = [
        (http().post(format!("{c}/api/v1/keys")).header("content-type", "application/json").body(big), 413),
        (http().get(format!("{c}/api/v1/experiments/x/results?window_s=abc")), 400),
        (http().post(format!("{c}/api/v1/models/m/versions")).json(&json!({})), 400),
        (http().delete(format!("{c}/healthz")), 405),
        (http().put(format!("{n}/api/v1/models/breast-cancer-mlp/predict")), 405),
        (http().post(format!("{n}/api/v1/models/breast-cancer-mlp/stream?bogus=1")), 400),
        (http().get(format!("{n}/api/v1/features/%FF%FE/p1")), 400),
    ];
    for (request, status) in cases {
        let resp = request.send().await.unwrap();
        let url = resp.url().to_string();
        assert_eq!(resp.status().as_u16(), status, "{url}");
        assert_eq!(resp.headers()["content-type"], "application/json", "{url}");
        let answer: Value = resp.json().await.unwrap();
        assert!(!error_of(&answer).is_empty(), "{url}: {answer}");
    }
    // A placement must say what it means: region names checked, regions only with their mode.
    let place = format!("{c}/api/v1/models/breast-cancer-mlp/placement");
    for (body, needle) in [
        (json!({"mode": "regions", "regions": ["", "../x"]}), "must be 1-64 letters"),
        (json!({"mode": "all", "regions": ["eu"]}), "goes only with"),
        (json!({"mode": "regions", "regions": []}), "at least one region"),
        (json!({"mode": "everywhere"}), "unknown variant"),
    ] {
        let resp = http().put(&place).json(&body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let answer: Value = resp.json().await.unwrap();
        assert!(error_of(&answer).contains(needle), "{needle:?} not in {answer}");
    }
    node.stop().await;
    control.stop().await;
}
