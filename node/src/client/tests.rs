//! [`MeshClient`] against fake nodes on loopback (port 0): the mesh view, `/healthz` and the
//! seed predict route, each node answering predictions with a chosen status.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use meridian_gossip::{MemberStatus, MeshNode, MeshView, NodeInfo};
use serde_json::{json, Value};

use super::{ClientError, MeshClient, MeshOptions, Rows};

#[derive(Clone)]
struct Fake {
    id: &'static str,
    status: StatusCode,
    /// Delay of `/healthz`, to set the measured order.
    health_delay: Duration,
    view: Arc<Mutex<Value>>,
    predictions: Arc<AtomicUsize>,
}

/// A fake node on loopback; its URL.
async fn spawn(fake: Fake) -> String {
    let app = Router::new()
        .route(
            "/healthz",
            get(|State(f): State<Fake>| async move {
                tokio::time::sleep(f.health_delay).await;
                Json(json!({"status": "ok"}))
            }),
        )
        .route("/api/v1/mesh/nodes", get(|State(f): State<Fake>| async move { Json(f.view.lock().unwrap().clone()) }))
        .route(
            "/api/v1/models/{model}/predict",
            post(|State(f): State<Fake>, Path(model): Path<String>| async move {
                f.predictions.fetch_add(1, Ordering::SeqCst);
                let body = if f.status.is_success() {
                    json!({"predictions": [{"prediction": 1.0}], "model": model, "model_version": 1, "served_by": f.id})
                } else {
                    json!({"error": "refused"})
                };
                (f.status, Json(body))
            }),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn member(id: &str, url: &str) -> MeshNode {
    MeshNode {
        id: id.into(),
        region: "eu".into(),
        state: MemberStatus::Alive,
        is_self: id == "a",
        mesh_addr: None,
        rtt_ms: None,
        info: Some(NodeInfo { id: id.into(), http_url: url.into(), ready: true, ..NodeInfo::default() }),
    }
}

/// Nodes `a` (nearest: its `/healthz` answers at once) and `b` (100 ms later); their mesh and
/// prediction counters.
async fn two_nodes(a_status: StatusCode) -> (MeshClient, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let view = Arc::new(Mutex::new(Value::Null));
    let fake = |id, status, ms| Fake {
        id,
        status,
        health_delay: Duration::from_millis(ms),
        view: view.clone(),
        predictions: Arc::default(),
    };
    let (a, b) = (fake("a", a_status, 0), fake("b", StatusCode::OK, 100));
    let (a_count, b_count) = (a.predictions.clone(), b.predictions.clone());
    let (a_url, b_url) = (spawn(a).await, spawn(b).await);
    let mesh_view = MeshView {
        node: "a".into(),
        mesh: true,
        catalog_epoch: 1,
        nodes: vec![member("a", &a_url), member("b", &b_url)],
    };
    *view.lock().unwrap() = serde_json::to_value(mesh_view).unwrap();
    let options = MeshOptions { timeout: Duration::from_secs(5), ..MeshOptions::default() };
    let mesh = MeshClient::connect(vec![b_url], options).await.unwrap();
    (mesh, a_count, b_count)
}

fn one_row() -> Rows {
    Rows::Json(vec![serde_json::Map::new()])
}

#[tokio::test]
async fn the_nearest_node_answers() {
    let (mesh, a, b) = two_nodes(StatusCode::OK).await;
    let order: Vec<String> = mesh.nodes().into_iter().map(|n| n.id).collect();
    assert_eq!(order, ["a", "b"]);
    assert!(mesh.nodes()[0].rtt.is_some());
    let answer = mesh.predict("m", one_row()).await.unwrap();
    assert_eq!(answer.served_by, "a");
    assert_eq!(mesh.last_served().as_deref(), Some("a"));
    assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 0));
}

#[tokio::test]
async fn a_503_moves_the_call_to_the_next_node_and_the_node_last() {
    let (mesh, a, b) = two_nodes(StatusCode::SERVICE_UNAVAILABLE).await;
    let answer = mesh.predict("m", one_row()).await.unwrap();
    assert_eq!(answer.served_by, "b");
    assert_eq!(mesh.last_served().as_deref(), Some("b"));
    assert_eq!(mesh.nodes().last().unwrap().id, "a", "demoted until the next refresh");
    // A refresh may measure `a` nearest again; it still answers 503, so `b` serves again.
    assert_eq!(mesh.predict("m", one_row()).await.unwrap().served_by, "b");
    assert!(a.load(Ordering::SeqCst) <= 2);
    assert_eq!(b.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_4xx_is_the_caller_s_answer() {
    let (mesh, a, b) = two_nodes(StatusCode::TOO_MANY_REQUESTS).await;
    let e = mesh.predict("m", one_row()).await.unwrap_err();
    assert!(matches!(e, ClientError::Status { status: 429, .. }), "{e}");
    assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 0));
}

#[tokio::test]
async fn post_fails_over_and_names_the_node_called() {
    let (mesh, _, _) = two_nodes(StatusCode::SERVICE_UNAVAILABLE).await;
    let posted = mesh.post("/api/v1/models/m/predict", "{\"rows\": [{}]}".into()).await.unwrap();
    assert_eq!(posted.status, 200);
    assert_eq!(posted.node.as_deref(), Some("b"), "no x-meridian-node header: the node called");
}
