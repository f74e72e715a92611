//! `meridian nodes drain ID`: ask the node to drain (`POST /api/v1/admin/drain`, scope
//! `admin`), then follow it out of the mesh as another node sees it, with a spinner, until that
//! node shows it `down` (or no longer lists it) or the wait is over.

use std::time::Duration;

use anyhow::{bail, Context};
use meridian_gossip::{MemberStatus, MeshView};
use tokio::time::Instant;

use super::super::client::answered;
use super::super::output::{spinner, Output};
use super::{view_of, Mesh};

/// How often the watching node is asked, and the bound on each ask.
const POLL: Duration = Duration::from_millis(500);
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(mesh: &Mesh<'_>, id: &str, wait: Duration, out: &Output) -> anyhow::Result<()> {
    let view = mesh.view().await?;
    let url = view
        .nodes
        .iter()
        .find(|n| n.id == id)
        .with_context(|| {
            format!("{} does not list a node {id:?} (`meridian nodes` shows the ids)", view.node)
        })?
        .info
        .as_ref()
        .map(|i| i.http_url.trim_end_matches('/').to_string())
        .with_context(|| format!("node {id} has not published its URL yet"))?;
    let resp = mesh
        .http()
        .post(format!("{url}/api/v1/admin/drain"))
        .send()
        .await
        .with_context(|| format!("cannot reach node {id} at {url}"))?;
    if !resp.status().is_success() {
        return Err(answered(resp, &format!("node {id}")).await);
    }
    let started = Instant::now();
    let bar = spinner(out.json);
    bar.set_message(format!("{id} is draining"));
    let outcome = follow(mesh.http(), &watchers(&view, id), id, wait, &bar).await;
    bar.finish_and_clear();
    report(id, &outcome, started.elapsed(), wait, out)
}

/// How the wait ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// `by` shows the node down or lists it no more.
    Left { by: String },
    /// No other node to watch from (no mesh, or the node is alone in it).
    Unwatched,
    /// Still there when the wait was over, last seen in this state.
    Stayed { state: String },
}

/// The nodes that can see `id` leave: the other alive members that published a URL.
fn watchers(view: &MeshView, id: &str) -> Vec<String> {
    view.nodes
        .iter()
        .filter(|n| n.id != id && n.state == MemberStatus::Alive)
        .filter_map(|n| n.info.as_ref().map(|i| i.http_url.trim_end_matches('/').to_string()))
        .collect()
}

/// `id` as `view` shows it: `None` once it is down or gone, else its state (`alive, draining`).
fn still_there(view: &MeshView, id: &str) -> Option<String> {
    let node = view.nodes.iter().find(|n| n.id == id)?;
    if node.state == MemberStatus::Down {
        return None;
    }
    let state = node.state.as_str();
    let draining = node.info.as_ref().is_some_and(|i| i.draining);
    Some(if draining { format!("{state}, draining") } else { state.to_string() })
}

async fn follow(
    http: &reqwest::Client,
    watchers: &[String],
    id: &str,
    wait: Duration,
    bar: &indicatif::ProgressBar,
) -> Outcome {
    if watchers.is_empty() {
        return Outcome::Unwatched;
    }
    let deadline = Instant::now() + wait;
    let mut state = "draining".to_string();
    loop {
        // The first watcher that answers says; one that went away too is skipped.
        for watcher in watchers {
            let ask =
                tokio::time::timeout_at(deadline.min(Instant::now() + ASK_TIMEOUT), view_of(http, watcher));
            let Ok(Ok(view)) = ask.await else { continue };
            match still_there(&view, id) {
                None => return Outcome::Left { by: view.node },
                Some(seen) => {
                    bar.set_message(format!("{id}: {seen} (as {} sees it)", view.node));
                    state = seen;
                    break;
                }
            }
        }
        if Instant::now() + POLL >= deadline {
            return Outcome::Stayed { state };
        }
        tokio::time::sleep(POLL).await;
    }
}

fn report(id: &str, outcome: &Outcome, took: Duration, wait: Duration, out: &Output) -> anyhow::Result<()> {
    let seconds = (took.as_secs_f64() * 10.0).round() / 10.0;
    if out.json {
        let (left, seen_by, state) = match outcome {
            Outcome::Left { by } => (Some(true), Some(by.as_str()), Some("down")),
            Outcome::Unwatched => (None, None, None),
            Outcome::Stayed { state } => (Some(false), None, Some(state.as_str())),
        };
        let json = serde_json::json!({
            "node": id, "draining": true, "left": left, "seen_by": seen_by, "state": state, "seconds": seconds,
        });
        say!("{}", serde_json::to_string_pretty(&json)?);
    }
    match outcome {
        Outcome::Left { by } if !out.json => say!("node {id} drained: {by} sees it down after {seconds} s"),
        Outcome::Unwatched if !out.json => {
            say!("node {id} is draining; no other node in its mesh to watch it leave")
        }
        Outcome::Stayed { state } => bail!("node {id} is still {state} after {} s", wait.as_secs()),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use meridian_gossip::{MeshNode, NodeInfo};

    use super::*;

    fn node(id: &str, state: MemberStatus, draining: bool, with_info: bool) -> MeshNode {
        MeshNode {
            id: id.into(),
            region: "eu".into(),
            state,
            is_self: id == "a",
            mesh_addr: None,
            rtt_ms: None,
            info: with_info.then(|| NodeInfo {
                id: id.into(),
                http_url: format!("http://{id}:7071/"),
                draining,
                ..NodeInfo::default()
            }),
        }
    }

    fn view(nodes: Vec<MeshNode>) -> MeshView {
        MeshView { node: "a".into(), mesh: true, catalog_epoch: 1, nodes }
    }

    #[test]
    fn watchers_are_the_other_alive_nodes_with_a_url() {
        let v = view(vec![
            node("a", MemberStatus::Alive, false, true),
            node("b", MemberStatus::Alive, true, true),
            node("c", MemberStatus::Suspect, false, true),
            node("d", MemberStatus::Alive, false, false),
            node("e", MemberStatus::Alive, false, true),
        ]);
        assert_eq!(watchers(&v, "b"), ["http://a:7071", "http://e:7071"]);
    }

    #[test]
    fn a_node_has_left_once_down_or_gone() {
        let v = view(vec![
            node("a", MemberStatus::Alive, false, true),
            node("b", MemberStatus::Alive, true, true),
            node("c", MemberStatus::Suspect, false, true),
            node("d", MemberStatus::Down, true, true),
        ]);
        assert_eq!(still_there(&v, "b").as_deref(), Some("alive, draining"));
        assert_eq!(still_there(&v, "c").as_deref(), Some("suspect"));
        assert_eq!(still_there(&v, "d"), None);
        assert_eq!(still_there(&v, "gone"), None);
    }

    #[tokio::test]
    async fn with_no_watcher_the_drain_is_not_followed() {
        let http = reqwest::Client::new();
        let outcome =
            follow(&http, &[], "b", Duration::from_secs(30), &indicatif::ProgressBar::hidden()).await;
        assert_eq!(outcome, Outcome::Unwatched);
    }
}
