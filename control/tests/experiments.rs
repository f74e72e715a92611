//! A/B experiments across real nodes: sticky assignment identical on every node, answers from
//! the arm's version, a shadow that never changes the answer, and bad definitions refused.
#![allow(clippy::unwrap_used)]

mod harness;

use harness::*;
use meridian_control::registry::keys::KeySpec;
use meridian_gossip::keys::{KeyLimits, Scope, Scopes};
use meridian_gossip::{Arm, Experiment};
use meridian_models::demo::demo_model;
use serde_json::json;

fn experiment(arms: Vec<Arm>, shadow: Option<u32>) -> Experiment {
    Experiment {
        name: "mlp-vs-logreg".into(),
        model: "cancer".into(),
        arms,
        shadow,
        unit_key: "user_id".into(),
        salt: "s".into(),
    }
}

fn arm(name: &str, version: u32, weight_bp: u32) -> Arm {
    Arm { name: name.into(), version, weight_bp }
}

/// Control with `cancer` v1 = logistic regression (deployed), v2 = MLP, and `ids` nodes.
async fn setup(dir: &std::path::Path, ids: &[&str]) -> (Control, Vec<Node>) {
    let control = models(dir).await;
    let nodes = start_nodes(&control, dir, ids, |_| {}).await;
    (control, nodes)
}

async fn models(dir: &std::path::Path) -> Control {
    let control = Control::start(dir).await;
    control.push("cancer", demo_model("breast-cancer-logreg").unwrap()).await;
    control.push("cancer", demo_model("breast-cancer-mlp").unwrap()).await;
    control.client.deploy("cancer", Some(1)).await.unwrap();
    control
}

async fn start_nodes(
    control: &Control,
    dir: &std::path::Path,
    ids: &[&str],
    tweak: impl Fn(&mut meridian_node::NodeConfig),
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in ids {
        let mut config = node_config(id, Some(control.url()), &dir.join(id));
        config.report_interval_ms = 100;
        tweak(&mut config);
        let node = Node::start(config).await;
        node.wait_live("cancer", 1).await;
        nodes.push(node);
    }
    nodes
}

async fn wait_experiment_versions(nodes: &[Node], versions: &[u32]) {
    for node in nodes {
        node.wait_table("experiment versions loaded", |t| {
            t.catalog.experiments.contains_key("cancer")
                && versions.iter().all(|v| {
                    t.models.get("cancer").is_some_and(|s| s.versions().any(|m| m.manifest.version == *v))
                })
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_is_sticky_and_identical_on_every_node_and_arms_answer_with_their_version() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = setup(dir.path(), &["eu", "us", "ap"]).await;
    control
        .client
        .start_experiment(&experiment(vec![arm("control", 1, 5_000), arm("mlp", 2, 5_000)], None))
        .await
        .unwrap();
    wait_experiment_versions(&nodes, &[1, 2]).await;
    let (logreg, mlp) = (
        reference(demo_model("breast-cancer-logreg").unwrap()),
        reference(demo_model("breast-cancer-mlp").unwrap()),
    );
    let exp = experiment(vec![arm("control", 1, 5_000), arm("mlp", 2, 5_000)], None);
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..40 {
        let user_id = format!("user-{user}");
        let expected_arm = exp.assign(&user_id).unwrap().clone();
        let row = user % logreg.rows.len();
        for node in &nodes {
            let mut body = logreg.features(row);
            body["unit"] = json!(user_id);
            let (status, answer) =
                post_json(&format!("{}/api/v1/models/cancer/predict", node.url()), &body).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["arm"], expected_arm.name.as_str(), "{user_id} on {}", node.url());
            assert_eq!(answer["assignment"], "sticky");
            assert_eq!(answer["model_version"], expected_arm.version);
            let reference = if expected_arm.version == 1 { &logreg } else { &mlp };
            assert!(close(answer["prediction"].as_f64().unwrap(), reference.prediction(row)));
        }
        seen.insert(expected_arm.name);
    }
    assert_eq!(seen.len(), 2, "40 users all landed in one arm of a 50/50 split");
    // The unit may also come in a header named by the unit key; without one the arm is random.
    let resp = http()
        .post(format!("{}/api/v1/models/cancer/predict", nodes[0].url()))
        .header("user_id", "user-7")
        .json(&logreg.features(0))
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["arm"], exp.assign("user-7").unwrap().name.as_str());
    let (_, answer) =
        post_json(&format!("{}/api/v1/models/cancer/predict", nodes[0].url()), &logreg.features(0)).await;
    assert_eq!(answer["assignment"], "random");
    // Per-arm metrics.
    let metrics = metrics_text(&nodes[0].url()).await;
    assert!(metrics.contains(r#"arm="mlp""#) && metrics.contains(r#"arm="control""#), "{metrics}");
    // Stopping the experiment sends everyone to the live version.
    control.client.stop_experiment("mlp-vs-logreg").await.unwrap();
    for node in &nodes {
        node.wait_table("experiment gone", |t| t.catalog.experiments.is_empty()).await;
        let mut body = logreg.features(0);
        body["unit"] = json!("user-1");
        let (_, answer) = post_json(&format!("{}/api/v1/models/cancer/predict", node.url()), &body).await;
        assert_eq!(answer["model_version"], 1);
        assert!(answer.get("arm").is_none());
    }
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_arm_never_changes_the_answer_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = setup(dir.path(), &["n"]).await;
    control.client.start_experiment(&experiment(vec![arm("control", 1, 10_000)], Some(2))).await.unwrap();
    wait_experiment_versions(&nodes, &[1, 2]).await;
    let node = &nodes[0];
    let logreg = reference(demo_model("breast-cancer-logreg").unwrap());
    for i in 0..logreg.rows.len() {
        let mut body = logreg.features(i);
        body["unit"] = json!(format!("u{i}"));
        let (status, answer) =
            post_json(&format!("{}/api/v1/models/cancer/predict", node.url()), &body).await;
        assert_eq!(status, 200);
        assert_eq!(answer["model_version"], 1);
        assert!(close(answer["prediction"].as_f64().unwrap(), logreg.prediction(i)));
    }
    let url = format!("{}/metrics", node.url());
    wait_for("shadow copies recorded", || {
        let url = url.clone();
        async move {
            let text = http().get(url).send().await.unwrap().text().await.unwrap();
            text.contains(r#"meridian_requests_total{model="cancer",version="2",arm="shadow",api="predict",code="200"} 16"#)
        }
    })
    .await;
    nodes.into_iter().next().unwrap().stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_experiments_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = setup(dir.path(), &[]).await;
    let cases = [
        (experiment(vec![arm("a", 1, 5_000), arm("b", 2, 4_000)], None), "422", "sum to 9000"),
        (experiment(vec![arm("a", 1, 5_000), arm("b", 9, 5_000)], None), "422", "no version 9"),
    ];
    for (exp, status, needle) in cases {
        let err = control.client.start_experiment(&exp).await.unwrap_err().to_string();
        assert!(err.contains(status) && err.contains(needle), "{err}");
    }
    control.client.start_experiment(&experiment(vec![arm("a", 2, 10_000)], None)).await.unwrap();
    let mut second = experiment(vec![arm("a", 1, 10_000)], None);
    second.name = "another".into();
    let err = control.client.start_experiment(&second).await.unwrap_err().to_string();
    assert!(err.contains("409") && err.contains("already runs experiment"), "{err}");
    // Version 2 is not live, but the experiment needs it.
    let err = control.client.archive("cancer", 2).await.unwrap_err().to_string();
    assert!(err.contains("409") && err.contains("running experiment"), "{err}");
    assert!(control.client.stop_experiment("nope").await.unwrap_err().to_string().contains("404"));
    drop(nodes);
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_is_scored_per_arm_and_reaches_the_experiment_results() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = setup(dir.path(), &["n"]).await;
    let exp = experiment(vec![arm("control", 1, 5_000), arm("mlp", 2, 5_000)], None);
    control.client.start_experiment(&exp).await.unwrap();
    wait_experiment_versions(&nodes, &[1, 2]).await;
    let node = &nodes[0];
    let logreg = reference(demo_model("breast-cancer-logreg").unwrap());
    let mut expected: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
    for user in 0..60 {
        let mut body = logreg.features(user % logreg.rows.len());
        body["unit"] = json!(format!("user-{user}"));
        let (_, answer) = post_json(&format!("{}/api/v1/models/cancer/predict", node.url()), &body).await;
        let id = answer["request_id"].as_str().unwrap().to_string();
        // The truth is "malignant" (class 0): correct when P(benign) < 0.5.
        let correct = if answer["prediction"].as_f64().unwrap() < 0.5 { 1.0 } else { 0.0 };
        let label = if user % 2 == 0 { json!(0) } else { json!("malignant") };
        let (status, fb) = post_json(
            &format!("{}/api/v1/feedback", node.url()),
            &json!({ "request_id": id, "label": label }),
        )
        .await;
        assert_eq!(status, 200, "{fb}");
        assert_eq!(fb["outcome"], correct);
        let e = expected.entry(answer["arm"].as_str().unwrap().to_string()).or_default();
        e.0 += 1;
        e.1 += correct;
        // One outcome per request id.
        let (status, again) = post_json(
            &format!("{}/api/v1/feedback", node.url()),
            &json!({ "request_id": id, "reward": 1.0 }),
        )
        .await;
        assert_eq!(status, 404, "{again}");
    }
    let bad = [
        (json!({ "request_id": "nope", "label": 0 }), 404),
        (json!({ "request_id": "x", "label": 0, "reward": 1.0 }), 400),
        (json!({ "request_id": "x" }), 400),
    ];
    for (body, status) in bad {
        assert_eq!(post_json(&format!("{}/api/v1/feedback", node.url()), &body).await.0, status, "{body}");
    }
    wait_for("outcomes in the results", || async {
        let r = control.client.experiment_results(&exp.name).await.unwrap();
        r.arms.iter().map(|a| a.outcome.n).sum::<u64>() == 60
    })
    .await;
    let results = control.client.experiment_results(&exp.name).await.unwrap();
    for a in &results.arms {
        let (n, correct) = expected[&a.arm];
        assert_eq!(a.outcome.n, n, "{}", a.arm);
        assert!((a.outcome_mean.unwrap() - correct / n as f64).abs() < 1e-12, "{}", a.arm);
        assert!(a.requests >= n);
    }
    assert!(results.arms[1].p_value.is_some_and(|p| (0.0..=1.0).contains(&p)));
    assert!(!results.stopped);
    // Stopping ends the split, not the results: they stay readable, marked stopped.
    control.client.stop_experiment(&exp.name).await.unwrap();
    let after = control.client.experiment_results(&exp.name).await.unwrap();
    assert!(after.stopped);
    let counts = |r: &meridian_control::api::experiments::ExperimentResults| {
        r.arms.iter().map(|a| a.outcome.n).collect::<Vec<_>>()
    };
    assert_eq!(counts(&after), counts(&results));
    assert_eq!(control.client.experiment(&exp.name).await.unwrap().name, exp.name);
    nodes.into_iter().next().unwrap().stop().await;
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_sent_to_another_region_reaches_the_node_that_answered() {
    let dir = tempfile::tempdir().unwrap();
    // With auth on: the relay presents the node's own peer key (it once went without and got
    // 401; the caller's key must not travel to an address from control's directory).
    let control = models(dir.path()).await;
    let key_of = |scopes: &[Scope]| KeySpec {
        name: "app".into(),
        scopes: scopes.iter().copied().collect::<Scopes>(),
        models: None,
        limits: KeyLimits::default(),
    };
    let key = control.client.create_key(&key_of(&[Scope::Predict])).await.unwrap().key;
    let peer_key = control.client.create_key(&key_of(&[Scope::Predict])).await.unwrap().key;
    let nodes = start_nodes(&control, dir.path(), &["eu", "us"], |c| {
        c.auth.enabled = true;
        c.auth.peer_key = Some(peer_key.clone());
    })
    .await;
    let key_id = meridian_gossip::keys::key_id(&key).unwrap().to_string();
    for node in &nodes {
        node.wait_table("the key", |t| t.catalog.keys.contains_key(&key_id)).await;
    }
    let post_json = |url: String, body: serde_json::Value| {
        let key = key.clone();
        async move {
            let resp = http().post(url).header("x-api-key", key).json(&body).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let exp = experiment(vec![arm("control", 1, 5_000), arm("mlp", 2, 5_000)], None);
    control.client.start_experiment(&exp).await.unwrap();
    wait_experiment_versions(&nodes, &[1, 2]).await;
    wait_for("both nodes in control's directory", || async {
        control.client.nodes().await.unwrap().len() == 2
    })
    .await;
    let logreg = reference(demo_model("breast-cancer-logreg").unwrap());
    let mut body = logreg.features(0);
    body["unit"] = json!("user-1");
    let (_, answer) = post_json(format!("{}/api/v1/models/cancer/predict", nodes[0].url()), body).await;
    let id = answer["request_id"].as_str().unwrap().to_string();
    assert!(id.ends_with("@eu"), "{id}");
    // The client reports the outcome later, to the other region's node.
    let (status, fb) =
        post_json(format!("{}/api/v1/feedback", nodes[1].url()), json!({ "request_id": id, "reward": 0.25 }))
            .await;
    assert_eq!(status, 200, "{fb}");
    assert_eq!(fb["recorded_by"], "eu");
    assert_eq!(fb["arm"], answer["arm"]);
    // Still one outcome per request, wherever it is sent.
    let (status, _) =
        post_json(format!("{}/api/v1/feedback", nodes[1].url()), json!({ "request_id": id, "reward": 1.0 }))
            .await;
    assert_eq!(status, 404);
    wait_for("the outcome in the results", || async {
        let r = control.client.experiment_results(&exp.name).await.unwrap();
        r.arms.iter().any(|a| a.outcome.n == 1 && a.outcome_mean == Some(0.25))
    })
    .await;
    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shadow_never_reaches_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let (control, nodes) = setup(dir.path(), &["n"]).await;
    // v3 takes 10 columns: every shadow copy of a 30-column request fails in its runtime.
    control.push("cancer", demo_model("diabetes-ridge").unwrap()).await;
    control.client.start_experiment(&experiment(vec![arm("control", 1, 10_000)], Some(3))).await.unwrap();
    wait_experiment_versions(&nodes, &[1, 3]).await;
    let node = &nodes[0];
    let logreg = reference(demo_model("breast-cancer-logreg").unwrap());
    for i in 0..8 {
        let (status, answer) =
            post_json(&format!("{}/api/v1/models/cancer/predict", node.url()), &logreg.features(i)).await;
        assert_eq!(status, 200, "{answer}");
        assert!(close(answer["prediction"].as_f64().unwrap(), logreg.prediction(i)));
    }
    let url = format!("{}/metrics", node.url());
    wait_for("the shadow failures to be counted", || {
        let url = url.clone();
        async move {
            let text = http().get(url).send().await.unwrap().text().await.unwrap();
            text.contains(r#"meridian_requests_total{model="cancer",version="3",arm="shadow",api="predict",code="500"} 8"#)
        }
    })
    .await;
    nodes.into_iter().next().unwrap().stop().await;
    control.stop().await;
}
