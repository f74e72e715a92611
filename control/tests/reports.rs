//! Latency histograms upstream: nodes in two regions report, control merges per slice, and a
//! node keeps its reports while control is down and delivers them when it is back.
#![allow(clippy::unwrap_used)]

mod harness;

use harness::*;
use meridian_control::sink::SliceStats;
use meridian_models::demo::demo_model;

async fn stats(control: &Control) -> Vec<SliceStats> {
    control.client.metrics(Some("diabetes-ridge"), 600).await.unwrap()
}

fn requests_in(stats: &[SliceStats], region: &str) -> u64 {
    stats.iter().filter(|s| s.region == region).map(|s| s.requests).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_report_histograms_and_control_merges_them_per_region_even_after_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let addr = control.handle.addr;
    let demo = demo_model("diabetes-ridge").unwrap();
    control.push(demo.name, demo).await;
    control.client.deploy(demo.name, None).await.unwrap();
    let mut nodes = Vec::new();
    for (id, region) in [("a", "eu-west"), ("b", "us-east")] {
        let mut config = node_config(id, Some(control.url()), &dir.path().join(id));
        config.region = region.to_string();
        config.report_interval_ms = 100;
        let node = Node::start(config).await;
        node.wait_live(demo.name, 1).await;
        nodes.push(node);
    }
    let r = reference(demo);
    let send = |node: &Node, n: usize| {
        let url = format!("{}/api/v1/models/{}/predict", node.url(), demo.name);
        let bodies: Vec<_> = (0..n).map(|i| r.features(i % r.rows.len())).collect();
        async move {
            for body in bodies {
                assert_eq!(post_json(&url, &body).await.0, 200);
            }
        }
    };
    send(&nodes[0], 30).await;
    send(&nodes[1], 12).await;
    wait_for("both regions merged", || async {
        let s = stats(&control).await;
        requests_in(&s, "eu-west") == 30 && requests_in(&s, "us-east") == 12
    })
    .await;
    let s = stats(&control).await;
    let eu = s.iter().find(|s| s.region == "eu-west").unwrap();
    assert_eq!((eu.model.as_str(), eu.version, eu.errors), ("diabetes-ridge", 1, 0));
    // A request through HTTP, JSON and a worker thread takes tens of µs at least.
    assert!(eu.p50_ms > 0.01 && eu.p50_ms <= eu.p99_ms && eu.p99_ms <= eu.p999_ms, "{eu:?}");
    assert!(eu.compute_p50_ms > 0.0 && eu.compute_p50_ms <= eu.p99_ms, "{eu:?}");

    // Control goes down; node a keeps serving and keeps its reports.
    control.stop().await;
    send(&nodes[0], 20).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let control = Control::start_on(dir.path(), addr).await;
    wait_for("the buffered reports to arrive", || async {
        requests_in(&stats(&control).await, "eu-west") == 20
    })
    .await;

    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}
