//! Canary rollouts end to end: a healthy canary reaches 100 %, a canary that breaches a guard
//! in one region is rolled back everywhere, and the rollout survives a control restart.
#![allow(clippy::unwrap_used)]

mod harness;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use harness::*;
use meridian_control::rollout::{Phase, RolloutSpec};
use meridian_control::ControlConfig;
use meridian_models::demo::demo_model;
use meridian_node::inference::fault::Fault;

async fn setup(dir: &std::path::Path, regions: &[&str], listen: SocketAddr) -> (Control, Vec<Node>) {
    setup_with_faults(dir, regions, listen, &[]).await
}

/// `slow`: (region, version, delay) faults injected on that region's node.
async fn setup_with_faults(
    dir: &std::path::Path,
    regions: &[&str],
    listen: SocketAddr,
    slow: &[(&str, u32, u64)],
) -> (Control, Vec<Node>) {
    let control = Control::start_with(ControlConfig {
        listen,
        data_dir: dir.join("control"),
        rollout_tick_ms: 100,
        // Auth is on by default; tests/auth.rs covers it.
        auth: meridian_control::config::ControlAuthConfig { enabled: false, ..Default::default() },
        ..ControlConfig::default()
    })
    .await;
    control.push("cancer", demo_model("breast-cancer-logreg").unwrap()).await;
    control.push("cancer", demo_model("breast-cancer-mlp").unwrap()).await;
    control.client.deploy("cancer", Some(1)).await.unwrap();
    let mut nodes = Vec::new();
    for region in regions {
        let mut config = node_config(region, Some(control.url()), &dir.join(region));
        config.region = region.to_string();
        config.report_interval_ms = 100;
        config.faults = slow
            .iter()
            .filter(|(r, _, _)| r == region)
            .map(|(_, version, delay_ms)| Fault {
                model: "cancer".into(),
                version: *version,
                delay_ms: *delay_ms,
            })
            .collect();
        let node = Node::start(config).await;
        node.wait_live("cancer", 1).await;
        nodes.push(node);
    }
    (control, nodes)
}

fn spec(hold_ms: u64, max_p99_ms: f64) -> RolloutSpec {
    RolloutSpec {
        model: "cancer".into(),
        baseline: 1,
        canary: 2,
        steps: vec![50, 100],
        hold_ms,
        max_p99_ms: Some(max_p99_ms),
        max_p99_ratio: None,
        max_error_rate: Some(0.5),
        min_requests: 5,
    }
}

/// Steady traffic with many users to every node until `stop`; each good request comes with two
/// a client got wrong (422, missing features), which say nothing about the canary and must not
/// count as its errors (they once rolled a healthy canary back).
fn traffic(nodes: &[Node], stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let urls: Vec<String> =
        nodes.iter().map(|n| format!("{}/api/v1/models/cancer/predict", n.url())).collect();
    let r = reference(demo_model("breast-cancer-logreg").unwrap());
    tokio::spawn(async move {
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            for url in &urls {
                let mut body = r.features(i % r.rows.len());
                body["unit"] = serde_json::json!(format!("user-{i}"));
                let _ = post_json(url, &body).await;
                let bad =
                    serde_json::json!({ "unit": format!("user-{i}"), "features": { "mean_radius": 1.0 } });
                for _ in 0..2 {
                    let _ = post_json(url, &bad).await;
                }
            }
            i += 1;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_reaches_100_percent_and_becomes_live() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = setup(dir.path(), &["eu-west", "us-east"], "127.0.0.1:0".parse().unwrap()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&nodes, stop.clone());
    let started = control.client.start_rollout(&spec(600, 10_000.0)).await.unwrap();
    assert_eq!(started.canary_bp, 5_000);
    wait_for("the rollout to promote the canary", || async {
        control.client.rollout("cancer").await.unwrap().rollout.phase == Phase::Promoted
    })
    .await;
    for n in &nodes {
        n.wait_live("cancer", 2).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(control.client.catalog().await.unwrap().experiments.is_empty());
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_slowed_in_one_region_is_rolled_back_in_every_region() {
    let dir = tempfile::tempdir().unwrap();
    // Version 2 is made 40 ms slower on the ap-south node only.
    let slow = [("ap-south", 2, 40)];
    let (control, nodes) =
        setup_with_faults(dir.path(), &["eu-west", "ap-south"], "127.0.0.1:0".parse().unwrap(), &slow).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&nodes, stop.clone());
    control.client.start_rollout(&spec(60_000, 25.0)).await.unwrap();
    wait_for("the automatic rollback", || async {
        matches!(control.client.rollout("cancer").await.unwrap().rollout.phase, Phase::RolledBack { .. })
    })
    .await;
    let status = control.client.rollout("cancer").await.unwrap();
    let Phase::RolledBack { reason } = &status.rollout.phase else { unreachable!() };
    assert!(
        reason.contains("p99") && reason.contains("canary v2") && reason.contains("ap-south"),
        "{reason}"
    );
    assert_eq!(status.canary_bp, 0);
    for n in &nodes {
        n.wait_table("the split gone", |t| {
            t.catalog.experiments.is_empty() && t.models["cancer"].live.manifest.version == 1
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_state_survives_a_control_restart_and_operators_can_pause_and_abort() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = setup(dir.path(), &[], "127.0.0.1:0".parse().unwrap()).await;
    let addr = control.handle.addr;
    control.client.start_rollout(&spec(600_000, 10_000.0)).await.unwrap();
    let err = control.client.start_rollout(&spec(1, 1.0)).await.unwrap_err().to_string();
    assert!(err.contains("409"), "{err}");
    control.client.rollout_command("cancer", "pause").await.unwrap();
    control.stop().await;
    let control = Control::start_on(dir.path(), addr).await;
    let status = control.client.rollout("cancer").await.unwrap();
    assert!(matches!(status.rollout.phase, Phase::Paused { step: 0, .. }), "{:?}", status.rollout.phase);
    assert_eq!(status.canary_bp, 5_000);
    let status = control.client.rollout_command("cancer", "abort").await.unwrap();
    assert_eq!(status.rollout.phase, Phase::Aborted);
    assert!(control.client.catalog().await.unwrap().experiments.is_empty());
    let err = control.client.rollout_command("cancer", "resume").await.unwrap_err().to_string();
    assert!(err.contains("409") && err.contains("over"), "{err}");
    drop(nodes);
    control.stop().await;
}
