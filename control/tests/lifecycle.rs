//! Deploy, rollback and restarts across real nodes.
#![allow(clippy::unwrap_used)]

mod harness;

use harness::*;
use meridian_models::demo::demo_model;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_v2_then_rollback_serves_v1_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(Node::start(node_config(id, Some(control.url()), &dir.path().join(id))).await);
    }
    // v1 is the logistic regression, v2 the MLP, under one name: their outputs differ.
    let (logreg, mlp) =
        (demo_model("breast-cancer-logreg").unwrap(), demo_model("breast-cancer-mlp").unwrap());
    assert_eq!(control.push("cancer", logreg).await, 1);
    assert_eq!(control.push("cancer", mlp).await, 2);
    let predicts = |reference: Reference| {
        let nodes: Vec<String> = nodes.iter().map(Node::url).collect();
        async move {
            for url in nodes {
                for i in [0, 5, 9] {
                    let (status, answer) =
                        post_json(&format!("{url}/api/v1/models/cancer/predict"), &reference.features(i))
                            .await;
                    assert_eq!(status, 200, "{answer}");
                    let got = answer["prediction"].as_f64().unwrap();
                    assert!(
                        close(got, reference.prediction(i)),
                        "{url} row {i}: {got} vs {}",
                        reference.prediction(i)
                    );
                }
            }
        }
    };

    control.client.deploy("cancer", Some(1)).await.unwrap();
    for n in &nodes {
        n.wait_live("cancer", 1).await;
    }
    predicts(reference(logreg)).await;

    let catalog = control.client.deploy("cancer", Some(2)).await.unwrap();
    assert_eq!(catalog.models["cancer"].previous.as_ref().map(|p| p.version), Some(1));
    for n in &nodes {
        n.wait_live("cancer", 2).await;
    }
    predicts(reference(mlp)).await;
    // v1 stays loaded beside v2, so the rollback needs no download and V2 can still pin it.
    let (status, _) = get_json(&format!("{}/v2/models/cancer/versions/1/ready", nodes[0].url())).await;
    assert_eq!(status, 200);

    let catalog = control.client.rollback("cancer").await.unwrap();
    assert_eq!(catalog.models["cancer"].live.version, 1);
    for n in &nodes {
        n.wait_live("cancer", 1).await;
    }
    predicts(reference(logreg)).await;
    let versions = control.client.show("cancer").await.unwrap();
    let statuses: Vec<String> = versions.iter().map(|r| r.status.to_string()).collect();
    assert_eq!(statuses, ["deployed", "staged"]);
    // Nothing earlier to roll back to now.
    let err = control.client.rollback("cancer").await.unwrap_err().to_string();
    assert!(err.contains("409") && err.contains("no earlier deployed version"), "{err}");
    let err = control.client.rollback("no-such-model").await.unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
    // A name is one path segment: this once deployed `cancer` v2.
    let err = control.client.deploy("nosuch/../cancer", Some(2)).await.unwrap_err().to_string();
    assert!(err.contains("404") && err.contains("nosuch/../cancer"), "{err}");

    for n in nodes {
        n.stop().await;
    }
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_while_control_is_down_serves_the_last_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let control_url = control.url();
    let config = node_config("edge", Some(control_url.clone()), &dir.path().join("edge"));
    let node = Node::start(config.clone()).await;
    let demo = demo_model("diabetes-ridge").unwrap();
    control.push(demo.name, demo).await;
    control.client.deploy(demo.name, None).await.unwrap();
    node.wait_live(demo.name, 1).await;
    node.stop().await;
    control.stop().await;

    // Control is gone; the node comes back from its data directory alone.
    let node = Node::start(config).await;
    node.wait_live(demo.name, 1).await;
    let r = reference(demo);
    let (status, answer) =
        post_json(&format!("{}/api/v1/models/{}/predict", node.url(), demo.name), &r.features(3)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(close(answer["prediction"].as_f64().unwrap(), r.prediction(3)));
    assert_eq!(get_json(&format!("{}/readyz", node.url())).await.0, 200);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_refuses_the_live_version_and_hides_archived_ones_from_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let demo = demo_model("diabetes-ridge").unwrap();
    control.push("ridge", demo).await;
    control.push("ridge", demo).await;
    control.client.deploy("ridge", Some(1)).await.unwrap();
    let err = control.client.archive("ridge", 1).await.unwrap_err().to_string();
    assert!(err.contains("409") && err.contains("is live"), "{err}");
    control.client.archive("ridge", 2).await.unwrap();
    let err = control.client.deploy("ridge", Some(2)).await.unwrap_err().to_string();
    assert!(err.contains("409") && err.contains("archived"), "{err}");
    // Versions stay monotonic after archiving.
    assert_eq!(control.push("ridge", demo).await, 3);
    let err = control.client.deploy("nope", None).await.unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
    control.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_before_anything_is_deployed_is_ready_and_serves_the_first_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path()).await;
    let node = Node::start(node_config("early", Some(control.url()), &dir.path().join("early"))).await;
    let url = format!("{}/readyz", node.url());
    wait_for("an empty catalog to make the node ready", || {
        let url = url.clone();
        async move { get_json(&url).await.0 == 200 }
    })
    .await;
    let demo = demo_model("diabetes-ridge").unwrap();
    control.push(demo.name, demo).await;
    control.client.deploy(demo.name, None).await.unwrap();
    node.wait_live(demo.name, 1).await;
    node.stop().await;
    control.stop().await;
}
