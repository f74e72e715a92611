//! A node serving on the GPU (lavapipe in CI): the demo models answer with the reference
//! outputs under concurrent load, `/metrics` and the model metadata say which runtime serves
//! each model, and a per-model override keeps one on tract with the reason given.
#![allow(clippy::unwrap_used)]

mod harness;

use serde_json::Value;

use harness::*;
use meridian_models::demo::DEMO_MODELS;
use meridian_models::runtime::gpu::{GpuContext, GpuOptions};
use meridian_node::config::{ModelTuning, RuntimeMode};

fn have_adapter() -> bool {
    let found = GpuContext::open(GpuOptions { allow_software: true }).unwrap().is_some();
    if !found {
        assert!(
            std::env::var_os("MERIDIAN_REQUIRE_GPU").is_none(),
            "MERIDIAN_REQUIRE_GPU is set but there is no adapter"
        );
        eprintln!("SKIPPED: no GPU adapter (install mesa-vulkan-drivers for lavapipe)");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_served_on_the_gpu_give_the_reference_answers_and_say_so() {
    if !have_adapter() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let mut config = node_config("g1", Some(control.url()), &dir.path().join("g1"));
    config.runtime = RuntimeMode::Auto;
    config.gpu.allow_software = true;
    config.models.insert(
        "diabetes-ridge".into(),
        ModelTuning { runtime: Some(RuntimeMode::Cpu), ..Default::default() },
    );
    let node = Node::start(config).await;
    for demo in DEMO_MODELS {
        let v = control.push(demo.name, demo).await;
        control.client.deploy(demo.name, Some(v)).await.unwrap();
    }
    for demo in DEMO_MODELS {
        node.wait_live(demo.name, 1).await;
    }
    for demo in DEMO_MODELS {
        let r = reference(demo);
        let url = format!("{}/api/v1/models/{}/predict", node.url(), demo.name);
        // Concurrent one-row requests, so the workers batch them on the device.
        let answers = futures_util::future::join_all((0..r.rows.len()).map(|i| {
            let url = url.clone();
            let body = r.features(i);
            async move { post_json(&url, &body).await }
        }))
        .await;
        for (i, (status, answer)) in answers.into_iter().enumerate() {
            assert_eq!(status, 200, "{answer}");
            let got = answer["prediction"].as_f64().unwrap();
            assert!(close(got, r.prediction(i)), "{} row {i}: {got} vs {}", demo.name, r.prediction(i));
        }
        let (status, meta) = get_json(&format!("{}/v2/models/{}", node.url(), demo.name)).await;
        assert_eq!(status, 200);
        let runtime = meta["parameters"]["runtime"].as_str().unwrap().to_string();
        let reason = meta["parameters"]["runtime_reason"].as_str().unwrap().to_string();
        if demo.name == "diabetes-ridge" {
            assert_eq!(runtime, "tract-cpu");
            assert!(reason.contains("cpu"), "{reason}");
        } else {
            assert!(runtime.starts_with("wgpu:"), "{}: {runtime} ({reason})", demo.name);
            assert!(reason.contains("GPU kernels"), "{reason}");
        }
    }
    let metrics = metrics_text(&node.url()).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("meridian_model_runtime{") && l.contains("breast-cancer-mlp"))
        .unwrap_or_else(|| panic!("no runtime metric for the MLP in:\n{metrics}"));
    assert!(line.contains("runtime=\"wgpu:"), "{line}");
    // `meridian models show` lists where each model runs and why, from the nodes' reports.
    for (model, want) in [("breast-cancer-mlp", "wgpu:"), ("diabetes-ridge", "tract-cpu")] {
        let mut placements = Value::Null;
        wait_for(&format!("{model}'s runtime reported to control"), || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
                .args(["--control", &control.url(), "--json", "models", "show", model])
                .output()
                .unwrap();
            let shown: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            placements = shown["nodes"].clone();
            let ok = placements[0]["node"] == "g1"
                && placements[0]["runtime"].as_str().is_some_and(|r| r.starts_with(want));
            async move { ok }
        })
        .await;
        assert!(!placements[0]["runtime_reason"].as_str().unwrap().is_empty(), "{placements}");
    }
    node.stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_gpu_without_an_adapter_refuses_to_start() {
    // Only meaningful where there is no hardware adapter (software ones are not used here).
    if GpuContext::open(GpuOptions { allow_software: false }).unwrap().is_some() {
        eprintln!("SKIPPED: this machine has a hardware GPU");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = node_config("g2", None, dir.path());
    config.runtime = RuntimeMode::Gpu;
    let Err(err) = meridian_node::spawn(config, tokio_util::sync::CancellationToken::new()).await else {
        panic!("the node started with runtime = \"gpu\" and no adapter");
    };
    assert!(err.to_string().contains("no usable GPU adapter"), "{err}");
}
