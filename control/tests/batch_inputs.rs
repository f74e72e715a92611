//! Batch jobs over the other inputs: rows naming an entity (the feature store fills them, as
//! for real-time requests), Parquet in with NDJSON out, and the `meridian batch` CLI.
#![allow(clippy::unwrap_used)]

mod harness;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use clap::Parser;
use harness::*;
use meridian_models::demo::{demo_model, patients_view, reading_patients, PATIENTS_CSV};
use meridian_models::ModelSpec;
use serde_json::{json, Value};

const MODEL: &str = "breast-cancer-mlp";

/// Upload `body` as a job that must be accepted; its id.
async fn upload(node: &str, query: &str, content_type: &str, body: Vec<u8>) -> String {
    let (status, answer) = post_batch(node, query, content_type, body).await;
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap().to_string()
}

async fn finished(node: &str, id: &str) -> Value {
    let url = format!("{node}/api/v1/batch/{id}");
    wait_for(&format!("batch job {id}"), || {
        let url = url.clone();
        async move { matches!(get_json(&url).await.1["state"].as_str(), Some("done" | "failed" | "cancelled")) }
    })
    .await;
    let (_, status) = get_json(&url).await;
    assert_eq!(status["state"], "done", "{status}");
    status
}

async fn result(node: &str, id: &str) -> String {
    let resp = http().get(format!("{node}/api/v1/batch/{id}/result")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_naming_an_entity_are_scored_like_real_time_entity_requests() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    control.client.put_view(&patients_view()).await.unwrap();
    let demo = demo_model(MODEL).unwrap();
    let mut spec = reading_patients(&ModelSpec::parse(demo.spec).unwrap());
    spec.name = None;
    let spec = serde_json::to_string(&spec).unwrap();
    control.client.push("mlp", spec, demo.onnx.to_vec(), false).await.unwrap();
    control.client.deploy("mlp", None).await.unwrap();
    let node = Node::start(node_config("n1", Some(control.url()), &dir.path().join("n1"))).await;
    node.wait_live("mlp", 1).await;
    node.wait_table("the patients view", |t| t.catalog.views.contains_key("patients")).await;
    let resp = http()
        .post(format!("{}/api/v1/features/patients/ingest", node.url()))
        .header("content-type", "text/csv")
        .body(PATIENTS_CSV)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ids: Vec<&str> =
        PATIENTS_CSV.lines().skip(1).take(40).map(|l| l.split(',').next().unwrap()).collect();
    // Every third row overrides a stored feature; one names a patient nobody stored.
    let mut csv = String::from("id,patient_id,mean_radius\n");
    for (i, p) in ids.iter().enumerate() {
        let radius = if i % 3 == 0 { "20.5" } else { "" };
        csv.push_str(&format!("r{i},{p},{radius}\n"));
    }
    csv.push_str("ghost,nobody,\n");
    let id = upload(&node.url(), "model=mlp", "text/csv", csv.into_bytes()).await;
    let done = finished(&node.url(), &id).await;
    assert_eq!(done["rows_scored"], 40);
    assert_eq!(done["refusals"][0]["line"], 42, "{done}");
    assert!(done["refusals"][0]["reason"].as_str().unwrap().contains("missing"), "{done}");
    let out = result(&node.url(), &id).await;
    for (i, line) in out.lines().skip(1).enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], format!("r{i}"));
        let mut request = json!({ "entity": { "patient_id": ids[i] } });
        if i % 3 == 0 {
            request["features"] = json!({ "mean_radius": 20.5 });
        }
        let (code, answer) = post_json(&format!("{}/api/v1/models/mlp/predict", node.url()), &request).await;
        assert_eq!(code, 200, "{answer}");
        let got: f64 = cells[1].parse().unwrap();
        assert!(close(got, answer["prediction"].as_f64().unwrap()), "row {i}: {got} vs {answer}");
    }
    node.stop().await;
    control.stop().await;
}

/// A Parquet file of the reference rows with ids `p0`, `p1`, ...
fn parquet_of(r: &Reference) -> Vec<u8> {
    let names: Vec<String> = r.rows[0].keys().cloned().collect();
    let mut fields = vec![Field::new("id", DataType::Utf8, false)];
    let mut columns: Vec<ArrayRef> =
        vec![Arc::new(StringArray::from_iter_values((0..r.rows.len()).map(|i| format!("p{i}"))))];
    for name in &names {
        fields.push(Field::new(name, DataType::Float64, true));
        columns.push(Arc::new(Float64Array::from_iter(r.rows.iter().map(|row| row[name].as_f64()))));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parquet_input_gives_the_reference_predictions_as_ndjson_and_the_cli_downloads_csv() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let demo = demo_model(MODEL).unwrap();
    control.push(MODEL, demo).await;
    control.client.deploy(MODEL, None).await.unwrap();
    let node = Node::start(node_config("n1", Some(control.url()), &dir.path().join("n1"))).await;
    node.wait_live(MODEL, 1).await;
    let r = reference(demo);
    let query = format!("model={MODEL}&output_format=ndjson");
    let id = upload(&node.url(), &query, "application/vnd.apache.parquet", parquet_of(&r)).await;
    finished(&node.url(), &id).await;
    let lines: Vec<Value> =
        result(&node.url(), &id).await.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), r.rows.len());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["id"], format!("p{i}"));
        assert!(close(line["prediction"].as_f64().unwrap(), r.prediction(i)), "row {i}: {line}");
        assert_eq!(line["model_version"], 1);
    }

    // The CLI: upload a file, follow the job, download its output.
    let input = dir.path().join("rows.parquet");
    std::fs::write(&input, parquet_of(&r)).unwrap();
    let output = dir.path().join("out.csv");
    let cli = meridian_control::cli::Cli::try_parse_from([
        "meridian",
        "batch",
        "submit",
        input.to_str().unwrap(),
        "--model",
        MODEL,
        "--output-format",
        "csv",
        "--output",
        output.to_str().unwrap(),
        "--node",
        &node.url(),
    ])
    .unwrap();
    meridian_control::cli::run(cli).await.unwrap();
    let text = std::fs::read_to_string(&output).unwrap();
    let mut rows = text.lines();
    assert_eq!(rows.next(), Some("id,prediction,confidence,model_version"));
    for (i, row) in rows.enumerate() {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[0], format!("p{i}"));
        assert!(close(cells[1].parse().unwrap(), r.prediction(i)));
    }
    // And refuses an output it cannot write before uploading anything.
    let cli = meridian_control::cli::Cli::try_parse_from([
        "meridian",
        "batch",
        "submit",
        input.to_str().unwrap(),
        "--model",
        MODEL,
        "--output",
        "/proc/nope/out.csv",
        "--node",
        &node.url(),
    ])
    .unwrap();
    let err = meridian_control::cli::run(cli).await.unwrap_err().to_string();
    assert!(err.contains("/proc/nope/out.csv"), "{err}");
    node.stop().await;
    control.stop().await;
}
