//! Batch jobs end to end over real nodes: outputs equal real-time predictions, a job resumes
//! after a node restart with every row exactly once, cancel frees the job, bad lines are
//! reported by line, a spread job equals the single-node one, real-time serving goes on.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::*;
use meridian_models::demo::demo_model;
use meridian_node::NodeConfig;
use serde_json::{json, Map, Value};

const MODEL: &str = "breast-cancer-mlp";

/// Control and nodes (configured by `tweak`) serving the MLP.
async fn mesh(dir: &std::path::Path, ids: &[&str], tweak: impl Fn(&mut NodeConfig)) -> (Control, Vec<Node>) {
    let control = Control::start(dir).await;
    let demo = demo_model(MODEL).unwrap();
    control.push(MODEL, demo).await;
    control.client.deploy(MODEL, None).await.unwrap();
    let mut nodes = Vec::new();
    for id in ids {
        let mut config = node_config(id, Some(control.url()), &dir.join(id));
        tweak(&mut config);
        let node = Node::start(config).await;
        node.wait_live(MODEL, 1).await;
        nodes.push(node);
    }
    (control, nodes)
}

/// `n` rows of feature values made from the reference rows, each a little different.
fn rows(n: usize) -> (Vec<String>, Vec<Vec<f64>>) {
    let r = reference(demo_model(MODEL).unwrap());
    let names: Vec<String> = r.rows[0].keys().cloned().collect();
    let rows = (0..n)
        .map(|i| {
            let base = &r.rows[i % r.rows.len()];
            let scale = 1.0 + (i % 997) as f64 * 1e-4;
            names.iter().map(|k| base[k].as_f64().unwrap() * scale).collect()
        })
        .collect();
    (names, rows)
}

/// The rows as a CSV file with ids `r0`, `r1`, ...
fn csv_of(names: &[String], rows: &[Vec<f64>]) -> String {
    let mut out = format!("id,{}\n", names.join(","));
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(f64::to_string).collect();
        out.push_str(&format!("r{i},{}\n", cells.join(",")));
    }
    out
}

fn as_maps(names: &[String], rows: &[Vec<f64>]) -> Vec<Map<String, Value>> {
    rows.iter().map(|row| names.iter().cloned().zip(row.iter().map(|x| json!(x))).collect()).collect()
}

async fn submit_csv(node: &str, csv: &str) -> String {
    let (status, answer) =
        post_batch(node, &format!("model={MODEL}"), "text/csv", csv.as_bytes().to_vec()).await;
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap().to_string()
}

async fn status(node: &str, id: &str) -> Value {
    let (code, s) = get_json(&format!("{node}/api/v1/batch/{id}")).await;
    assert_eq!(code, 200, "{s}");
    s
}

/// Wait until the job is finished; its final status. Jobs score on an idle-priority thread, so
/// on a machine busy with other work (parallel tests, a build) they take longer by design.
async fn finished(node: &str, id: &str) -> Value {
    let url = format!("{node}/api/v1/batch/{id}");
    wait_for_within(&format!("batch job {id} to finish"), Duration::from_secs(180), || {
        let url = url.clone();
        async move {
            let (_, s) = get_json(&url).await;
            matches!(s["state"].as_str(), Some("done" | "failed" | "cancelled"))
        }
    })
    .await;
    status(node, id).await
}

async fn result_text(node: &str, id: &str) -> String {
    let resp = http().get(format!("{node}/api/v1/batch/{id}/result")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap()
}

/// (id, prediction, confidence, version) per CSV output line.
fn parse_output(csv: &str) -> Vec<(String, f64, f64, u32)> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,prediction,confidence,model_version"));
    lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[0].to_string(), c[1].parse().unwrap(), c[2].parse().unwrap(), c[3].parse().unwrap())
        })
        .collect()
}

/// Real-time predictions for `rows` through the seed API (2,000 rows per request).
async fn real_time(node: &str, names: &[String], rows: &[Vec<f64>]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for chunk in rows.chunks(2_000) {
        let body = json!({ "rows": as_maps(names, chunk) });
        let (status, answer) = post_json(&format!("{node}/api/v1/models/{MODEL}/predict"), &body).await;
        assert_eq!(status, 200, "{answer}");
        for p in answer["predictions"].as_array().unwrap() {
            out.push((p["prediction"].as_f64().unwrap(), p["confidence"].as_f64().unwrap()));
        }
    }
    out
}

fn assert_matches_real_time(output: &[(String, f64, f64, u32)], expected: &[(f64, f64)]) {
    assert_eq!(output.len(), expected.len());
    for (i, ((id, p, c, v), (ep, ec))) in output.iter().zip(expected).enumerate() {
        assert_eq!(id, &format!("r{i}"), "row {i} in input order");
        assert!(close(*p, *ep) && close(*c, *ec), "row {i}: batch {p}/{c}, real time {ep}/{ec}");
        assert_eq!(*v, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_csv_job_equals_real_time_predictions_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = mesh(dir.path(), &["n1"], |_| {}).await;
    let node = nodes[0].url();
    let (names, rows) = rows(100_000);
    let id = submit_csv(&node, &csv_of(&names, &rows)).await;
    let done = finished(&node, &id).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!((done["rows_scored"].as_u64(), done["rows_refused"].as_u64()), (Some(100_000), Some(0)));
    let output = parse_output(&result_text(&node, &id).await);
    assert_matches_real_time(&output, &real_time(&node, &names, &rows).await);
    // One-row requests agree too (a sample).
    for i in (0..100_000).step_by(9_973) {
        let one = &as_maps(&names, &rows[i..=i])[0];
        let url = format!("{node}/api/v1/models/{MODEL}/predict");
        let (_, answer) = post_json(&url, &json!({ "features": one })).await;
        assert!(close(output[i].1, answer["prediction"].as_f64().unwrap()), "row {i}");
    }
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

/// Nodes whose model is slowed (each model call sleeps), with small checkpoints.
fn slow(config: &mut NodeConfig) {
    config.batch.checkpoint_rows = 1_000;
    config.batch.model_rows = 250;
    config.faults =
        vec![meridian_node::inference::fault::Fault { model: MODEL.into(), version: 1, delay_ms: 15 }];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_by_a_node_restart_resumes_and_scores_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let (control, mut nodes) = mesh(dir.path(), &["n1"], slow).await;
    let node = nodes.pop().unwrap();
    let config = node.handle.state.config.clone();
    let (names, rows) = rows(20_000);
    let id = submit_csv(&node.url(), &csv_of(&names, &rows)).await;
    let url = format!("{}/api/v1/batch/{id}", node.url());
    wait_for("a few checkpoints", || {
        let url = url.clone();
        async move { get_json(&url).await.1["chunks_done"].as_u64().unwrap_or(0) >= 3 }
    })
    .await;
    node.stop().await;

    // Restarted on the same data directory.
    let node = Node::start(config).await;
    let before = status(&node.url(), &id).await;
    let stopped_at = before["chunks_done"].as_u64().unwrap();
    assert!((3..20).contains(&stopped_at), "{before}");
    assert_ne!(before["state"], "done");
    let done = finished(&node.url(), &id).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["rows_scored"], 20_000);
    let output = parse_output(&result_text(&node.url(), &id).await);
    // Every row exactly once, in order, with the real-time answer.
    assert_matches_real_time(&output, &real_time(&node.url(), &names, &rows).await);
    // The checkpoint is freed once the output is written.
    assert_eq!(node.handle.state.batch.store.chunk_count(&id), 0);
    node.stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_job_and_frees_its_files_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = mesh(dir.path(), &["n1"], slow).await;
    let node = &nodes[0];
    let (names, rows) = rows(50_000);
    let id = submit_csv(&node.url(), &csv_of(&names, &rows)).await;
    let url = format!("{}/api/v1/batch/{id}", node.url());
    wait_for("the job to score rows", || {
        let url = url.clone();
        async move { get_json(&url).await.1["rows_done"].as_u64().unwrap_or(0) > 0 }
    })
    .await;
    let (code, cancelled) = post_json(&format!("{url}/cancel"), &json!({})).await;
    assert_eq!(code, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let rows_then = cancelled["rows_done"].as_u64().unwrap();
    assert!(rows_then < 50_000);
    // Its upload, job directory and checkpoint are gone; it has no result; it stays stopped.
    let job_dir = node.data_dir.join("batch").join(&id);
    assert!(!job_dir.exists(), "{job_dir:?} remains");
    assert_eq!(node.handle.state.batch.store.chunk_count(&id), 0);
    let resp = http().get(format!("{url}/result")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let (code, _) = post_json(&format!("{url}/cancel"), &json!({})).await;
    assert_eq!(code, 409, "cancelling twice");
    // The running slot is free: the next job runs to the end.
    let next = submit_csv(&node.url(), &csv_of(&names, &rows[..500])).await;
    assert_eq!(finished(&node.url(), &next).await["state"], "done");
    assert_eq!(status(&node.url(), &id).await["rows_done"].as_u64(), Some(rows_then));
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_reported_by_line_and_the_rest_is_scored() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = mesh(dir.path(), &["n1"], |_| {}).await;
    let node = nodes[0].url();
    let (names, rows) = rows(12);
    let mut lines: Vec<String> = csv_of(&names, &rows).lines().map(str::to_string).collect();
    let radius = 1 + names.iter().position(|n| n == "mean_radius").unwrap();
    let set = |line: &mut String, cell: &str| {
        let mut cells: Vec<&str> = line.split(',').collect();
        cells[radius] = cell;
        *line = cells.join(",");
    };
    // Line numbers count the header as line 1: data row i is line i + 2.
    lines[3] = "r2,1,2,3".to_string(); // too few cells
    set(&mut lines[5], "big"); // not a number
    set(&mut lines[8], ""); // missing, no default
    set(&mut lines[10], "NaN");
    let id = submit_csv(&node, &(lines.join("\n") + "\n")).await;
    let done = finished(&node, &id).await;
    assert_eq!(done["state"], "done", "{done}");
    let refused: Vec<u64> =
        done["refusals"].as_array().unwrap().iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(refused, vec![4, 6, 9, 11], "{done}");
    assert_eq!((done["rows_scored"].as_u64(), done["rows_refused"].as_u64()), (Some(8), Some(4)));
    let reasons: Vec<&str> =
        done["refusals"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].contains("cells"), "{reasons:?}");
    assert!(reasons[1].contains("mean_radius") && reasons[1].contains("number"), "{reasons:?}");
    assert!(reasons[2].contains("missing") && reasons[2].contains("mean_radius"), "{reasons:?}");
    let ids: Vec<String> = parse_output(&result_text(&node, &id).await).into_iter().map(|r| r.0).collect();
    assert_eq!(ids, ["r0", "r1", "r3", "r5", "r6", "r8", "r10", "r11"]);

    // NDJSON: a malformed line and a wrong type, by line (blank lines count as lines).
    let mut nd: Vec<String> =
        as_maps(&names, &rows[..4]).iter().map(|r| serde_json::to_string(r).unwrap()).collect();
    nd.insert(1, String::new());
    nd[2] = "{\"mean_radius\": ".to_string();
    nd[3] = nd[3].replacen("\"mean_radius\":", "\"mean_radius\":[1],\"x\":", 1);
    let (code, answer) =
        post_batch(&node, &format!("model={MODEL}"), "application/x-ndjson", nd.join("\n").into_bytes())
            .await;
    assert_eq!(code, 202, "{answer}");
    let done = finished(&node, answer["id"].as_str().unwrap()).await;
    let refused: Vec<u64> =
        done["refusals"].as_array().unwrap().iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(refused, vec![3, 4], "{done}");
    assert_eq!(done["rows_scored"], 2);
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_with_the_reason_and_a_full_disk_fails_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("batch");
    std::fs::create_dir(&root).unwrap();
    let roots = vec![root.clone(), "/dev".into()];
    let (control, nodes) = mesh(dir.path(), &["n1"], |c| {
        c.limits.batch_per_minute = 9;
        c.batch.paths = roots.clone();
    })
    .await;
    let node = nodes[0].url();
    let url = format!("{node}/api/v1/batch");
    let input = root.join("rows.csv");
    let (names, rows) = rows(50);
    std::fs::write(&input, csv_of(&names, &rows)).unwrap();
    let outside = dir.path().join("outside.csv");
    std::fs::write(&outside, csv_of(&names, &rows)).unwrap();
    let (code, e) = post_json(&url, &json!({"model": "nope", "input": input})).await;
    assert_eq!(code, 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("nope"));
    // Each refused with 400 and the reason, naming the path.
    for (body, reason) in [
        (json!({"model": MODEL, "input": root.join("missing.csv")}), "missing.csv"),
        (json!({"model": MODEL, "input": input, "output": root.join("no/out.csv")}), "no/out.csv"),
        // Files outside batch.paths, to read or to write.
        (json!({"model": MODEL, "input": outside}), "not under this node's batch.paths"),
        (json!({"model": MODEL, "input": input, "output": outside}), "not under this node's batch.paths"),
        // A device never ends: it is no input (this once hung the node and grew without bound).
        (json!({"model": MODEL, "input": "/dev/zero", "format": "csv"}), "not a regular file"),
        (json!({"model": MODEL, "input": input, "output": input}), "it is the input file"),
    ] {
        let (code, e) = post_json(&url, &body).await;
        assert_eq!(code, 400, "{body} -> {e}");
        assert!(e["error"].as_str().unwrap().contains(reason), "{reason:?} not in {e}");
    }
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), csv_of(&names, &rows), "nothing was written");
    // Disk full while writing the output: the job fails with the reason, its checkpoint kept.
    if std::path::Path::new("/dev/full").exists() {
        let (code, answer) =
            post_json(&url, &json!({"model": MODEL, "input": input, "output": "/dev/full", "format": "csv"}))
                .await;
        assert_eq!(code, 202, "{answer}");
        let id = answer["id"].as_str().unwrap();
        let failed = finished(&node, id).await;
        assert_eq!(failed["state"], "failed", "{failed}");
        assert!(failed["error"].as_str().unwrap().contains("No space left"), "{failed}");
        assert_eq!(failed["rows_done"], 50);
        assert!(nodes[0].handle.state.batch.store.chunk_count(id) > 0, "the checkpoint is intact");
    }
    // The submission limit (9 a minute here): every submission above counted, refused or not.
    let used = if std::path::Path::new("/dev/full").exists() { 8 } else { 7 };
    for _ in used..9 {
        let (code, answer) = post_json(&url, &json!({"model": MODEL, "input": input})).await;
        assert_eq!(code, 202, "{answer}");
    }
    let resp = http().post(&url).json(&json!({"model": MODEL, "input": input})).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    // With auth off every caller is `anonymous` and shares the bucket; with auth on each key has
    // its own (tests/auth.rs).
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spread_job_over_three_nodes_equals_the_single_node_output() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = mesh(dir.path(), &["a", "b", "c"], |c| {
        c.region = "eu".into();
        c.batch.checkpoint_rows = 1_000;
    })
    .await;
    wait_for("three ready nodes in the directory", || {
        let client = &control.client;
        async move {
            let nodes = client.nodes().await.unwrap_or_default();
            nodes.iter().filter(|n| n.info.ready && !n.info.models.is_empty()).count() == 3
        }
    })
    .await;
    let (names, rows) = rows(10_000);
    let csv = csv_of(&names, &rows);
    let single = submit_csv(&nodes[0].url(), &csv).await;
    assert_eq!(finished(&nodes[0].url(), &single).await["state"], "done");
    let (code, answer) =
        post_batch(&nodes[1].url(), &format!("model={MODEL}&spread=true"), "text/csv", csv.into_bytes())
            .await;
    assert_eq!(code, 202, "{answer}");
    let spread = answer["id"].as_str().unwrap();
    let done = finished(&nodes[1].url(), spread).await;
    assert_eq!(done["state"], "done", "{done}");
    let parts: Vec<&str> =
        done["parts"].as_array().unwrap().iter().map(|p| p["node"].as_str().unwrap()).collect();
    assert_eq!(parts, ["a", "b", "c"]);
    assert_eq!(done["rows_scored"], 10_000);
    let one = parse_output(&result_text(&nodes[0].url(), &single).await);
    let three = parse_output(&result_text(&nodes[1].url(), spread).await);
    assert_eq!(one.len(), three.len());
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(a.0, b.0);
        assert!(close(a.1, b.1) && close(a.2, b.2), "{a:?} vs {b:?}");
    }
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_requests_succeed_while_a_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = mesh(dir.path(), &["n1"], |_| {}).await;
    let node = nodes[0].url();
    let (names, rows) = rows(100_000);
    let id = submit_csv(&node, &csv_of(&names, &rows)).await;
    let r = reference(demo_model(MODEL).unwrap());
    let predict = format!("{node}/api/v1/models/{MODEL}/predict");
    let mut during = 0;
    for i in 0..300 {
        let (code, answer) = post_json(&predict, &r.features(i % r.rows.len())).await;
        assert_eq!(code, 200, "{answer}");
        assert!(close(answer["prediction"].as_f64().unwrap(), r.prediction(i % r.rows.len())));
        if status(&node, &id).await["state"] == "running" {
            during += 1;
        }
    }
    tokio::time::timeout(Duration::from_secs(60), finished(&node, &id)).await.unwrap();
    eprintln!("{during} of 300 real-time requests were answered while the job was running");
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}
