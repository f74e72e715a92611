//! The decisions of [`super::mesh::MeshClient`], kept free of I/O and of the clock so they are
//! tested alone: which nodes of a mesh view are worth calling, in which order, and whether an
//! error means "try the next node" or "this is the caller's answer".

use std::time::Duration;

use meridian_gossip::{MemberStatus, MeshNode, MeshView};

use super::ClientError;

/// A node a [`super::mesh::MeshClient`] may call, with the RTT the client measured to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub region: String,
    /// Base URL of its HTTP front end.
    pub http_url: String,
    /// `host:port` of its QUIC endpoint (HTTP/3 and the native protocol), when it has one.
    pub quic_addr: Option<String>,
    /// Whether every live model of its catalog was loaded and warm when it last gossiped.
    pub ready: bool,
    /// The best of the client's own probes (`GET /healthz`); `None` when none answered in time.
    pub rtt: Option<Duration>,
    /// Models whose live version it holds warm (from its info).
    pub warm: Vec<String>,
}

/// What to do after one node's attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the result to the caller: an answer, or an error that another node would repeat
    /// (a bad request, a missing model, a refused key, a rate limit).
    Return,
    /// The node could not answer (unreachable, too slow, draining or overloaded): try the next.
    NextNode,
}

/// The nodes of a mesh view worth calling, unmeasured (`rtt: None`) and in the view's order.
///
/// A node is out when it is not `alive`, has not published its info yet, or is draining. Of
/// the rest, the ready ones are the candidates. When none is ready (a deploy makes every node
/// load the new model at once) the alive ones that are not ready yet are, and when none is
/// alive the suspect ones are: a node that serves some models beats no node at all.
pub fn candidates(nodes: &[MeshNode]) -> Vec<Candidate> {
    let usable = |state: MemberStatus, ready_only: bool| -> Vec<Candidate> {
        nodes
            .iter()
            .filter(|n| n.state == state)
            .filter_map(|n| n.info.as_ref().map(|info| (n, info)))
            .filter(|(_, info)| !info.draining && (info.ready || !ready_only))
            .map(|(n, info)| Candidate {
                id: n.id.clone(),
                region: n.region.clone(),
                http_url: info.http_url.trim_end_matches('/').to_string(),
                quic_addr: info.quic_addr.clone(),
                ready: info.ready,
                rtt: None,
                warm: info.models.iter().filter(|m| m.live && m.warm).map(|m| m.name.clone()).collect(),
            })
            .collect()
    };
    let ready = usable(MemberStatus::Alive, true);
    if !ready.is_empty() {
        return ready;
    }
    let alive = usable(MemberStatus::Alive, false);
    if !alive.is_empty() {
        return alive;
    }
    usable(MemberStatus::Suspect, false)
}

/// The nodes of several views, each once as first listed: nodes without a mesh list only
/// themselves, so a client given several of them joins their views.
pub fn joined(views: &[MeshView]) -> Vec<MeshNode> {
    let mut nodes: Vec<MeshNode> = Vec::new();
    for node in views.iter().flat_map(|v| &v.nodes) {
        if !nodes.iter().any(|n| n.id == node.id) {
            nodes.push(node.clone());
        }
    }
    nodes
}

/// Nearest first: measured nodes by RTT, then the ones no probe reached (tried last, they may
/// only be slow); ties by id so the order is stable.
pub fn order(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by(|a, b| {
        let key = |c: &Candidate| (c.rtt.is_none(), c.rtt.unwrap_or_default());
        key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    });
    candidates
}

/// For a call on `model`: the nodes that hold it warm first (a node without it would forward
/// the call or refuse it), each group in its order.
pub fn holders_first(candidates: &[Candidate], model: &str) -> Vec<Candidate> {
    let (mut holders, others): (Vec<Candidate>, Vec<Candidate>) =
        candidates.iter().cloned().partition(|c| c.warm.iter().any(|m| m == model));
    holders.extend(others);
    holders
}

/// Move the node `id` behind every other after it failed, so calls go elsewhere until the next
/// refresh measures it again.
pub fn demote(candidates: &mut Vec<Candidate>, id: &str) {
    if let Some(at) = candidates.iter().position(|c| c.id == id) {
        let failed = candidates.remove(at);
        candidates.push(failed);
    }
}

/// The shortest time between two refreshes after failures, so a burst of failed calls makes
/// one refresh, not one each.
pub const MIN_REFRESH_GAP: Duration = Duration::from_millis(500);

/// Whether the node list is due to be fetched and measured again: `every` since the last
/// refresh, or sooner after a node failed (`stale`), but not within [`MIN_REFRESH_GAP`].
pub fn refresh_due(stale: bool, since_last: Duration, every: Duration) -> bool {
    since_last >= every || (stale && since_last >= MIN_REFRESH_GAP)
}

/// After an error from one node.
pub fn after_error(error: &ClientError) -> Verdict {
    match error {
        ClientError::Connect { .. }
        | ClientError::Timeout(_)
        | ClientError::Connection(_)
        | ClientError::Unavailable(_) => Verdict::NextNode,
        ClientError::Status { status, .. } => after_status(*status),
        ClientError::Setup(_) | ClientError::Protocol(_) => Verdict::Return,
    }
}

/// After an answered status: only 503 (draining, shutting down, overloaded past its deadline)
/// sends the call elsewhere. A 4xx is the caller's (429 included: the key's limit holds on
/// every node) and a 500 is the model's, which another node would repeat.
pub fn after_status(status: u16) -> Verdict {
    if status == 503 {
        Verdict::NextNode
    } else {
        Verdict::Return
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use meridian_gossip::{MeshNode, NodeInfo};

    use super::*;

    fn node(id: &str, state: MemberStatus, ready: bool, draining: bool) -> MeshNode {
        MeshNode {
            id: id.into(),
            region: "eu".into(),
            state,
            is_self: false,
            mesh_addr: None,
            rtt_ms: None,
            info: Some(NodeInfo {
                id: id.into(),
                http_url: format!("http://{id}:7071/"),
                quic_addr: Some(format!("{id}:7071")),
                ready,
                draining,
                ..NodeInfo::default()
            }),
        }
    }

    fn view(nodes: Vec<MeshNode>) -> MeshView {
        MeshView { node: "a".into(), mesh: true, catalog_epoch: 1, nodes }
    }

    fn ids(c: &[Candidate]) -> Vec<&str> {
        c.iter().map(|c| c.id.as_str()).collect()
    }

    fn measured(id: &str, rtt_ms: Option<u64>) -> Candidate {
        Candidate {
            id: id.into(),
            region: "eu".into(),
            http_url: String::new(),
            quic_addr: None,
            ready: true,
            rtt: rtt_ms.map(Duration::from_millis),
            warm: Vec::new(),
        }
    }

    #[test]
    fn a_call_on_a_model_tries_its_holders_first_in_order() {
        let mut nodes = vec![measured("a", Some(1)), measured("b", Some(2)), measured("c", Some(3))];
        nodes[1].warm = vec!["m".into()];
        nodes[2].warm = vec!["m".into(), "n".into()];
        assert_eq!(ids(&holders_first(&nodes, "m")), ["b", "c", "a"]);
        assert_eq!(ids(&holders_first(&nodes, "n")), ["c", "a", "b"]);
        assert_eq!(ids(&holders_first(&nodes, "x")), ["a", "b", "c"]);
    }

    #[test]
    fn candidates_are_alive_ready_and_not_draining() {
        let mut no_info = node("e", MemberStatus::Alive, true, false);
        no_info.info = None;
        let v = view(vec![
            node("a", MemberStatus::Alive, true, false),
            node("b", MemberStatus::Alive, true, true),
            node("c", MemberStatus::Suspect, true, false),
            node("d", MemberStatus::Down, true, false),
            no_info,
            node("f", MemberStatus::Alive, false, false),
            node("g", MemberStatus::Alive, true, false),
        ]);
        let c = candidates(&v.nodes);
        assert_eq!(ids(&c), ["a", "g"]);
        assert_eq!(c[0].http_url, "http://a:7071", "trailing slash trimmed");
        assert_eq!(c[0].quic_addr.as_deref(), Some("a:7071"));
    }

    #[test]
    fn without_a_ready_node_alive_ones_loading_a_deploy_are_candidates() {
        let v = view(vec![
            node("a", MemberStatus::Alive, false, false),
            node("b", MemberStatus::Alive, false, true),
            node("c", MemberStatus::Suspect, true, false),
        ]);
        assert_eq!(ids(&candidates(&v.nodes)), ["a"]);
    }

    #[test]
    fn without_an_alive_node_suspect_ones_are_candidates() {
        let v = view(vec![
            node("a", MemberStatus::Down, true, false),
            node("b", MemberStatus::Suspect, true, false),
            node("c", MemberStatus::Suspect, true, true),
        ]);
        assert_eq!(ids(&candidates(&v.nodes)), ["b"]);
        let v = view(vec![node("a", MemberStatus::Down, true, false)]);
        assert!(candidates(&v.nodes).is_empty());
    }

    #[test]
    fn views_of_standalone_nodes_join_each_node_once() {
        let solo = |id: &str, ready| MeshView {
            node: id.into(),
            mesh: false,
            catalog_epoch: 1,
            nodes: vec![node(id, MemberStatus::Alive, ready, false)],
        };
        let nodes = joined(&[solo("a", true), solo("b", false), solo("a", true), solo("c", true)]);
        assert_eq!(nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(ids(&candidates(&nodes)), ["a", "c"], "the ready ones, across views");
    }

    #[test]
    fn order_is_nearest_first_unmeasured_last_ties_by_id() {
        let c = order(vec![
            measured("far", Some(40)),
            measured("lost", None),
            measured("near", Some(2)),
            measured("b-mid", Some(10)),
            measured("a-mid", Some(10)),
            measured("a-lost", None),
        ]);
        assert_eq!(ids(&c), ["near", "a-mid", "b-mid", "far", "a-lost", "lost"]);
    }

    #[test]
    fn a_failed_node_goes_last() {
        let mut c = vec![measured("a", Some(1)), measured("b", Some(2)), measured("c", Some(3))];
        demote(&mut c, "a");
        assert_eq!(ids(&c), ["b", "c", "a"]);
        demote(&mut c, "unknown");
        assert_eq!(ids(&c), ["b", "c", "a"]);
    }

    #[test]
    fn a_refresh_is_due_every_period_or_soon_after_a_failure() {
        let every = Duration::from_secs(5);
        assert!(!refresh_due(false, Duration::from_secs(4), every));
        assert!(refresh_due(false, every, every));
        assert!(!refresh_due(true, Duration::from_millis(100), every), "not once per failed call");
        assert!(refresh_due(true, MIN_REFRESH_GAP, every));
    }

    #[test]
    fn unreachable_slow_or_draining_nodes_fail_over() {
        let status = |status| ClientError::Status { status, message: String::new(), retry_after_ms: None };
        let next = [
            ClientError::Connect { url: "x".into(), reason: "refused".into() },
            ClientError::Timeout(Duration::from_secs(1)),
            ClientError::Connection("reset".into()),
            ClientError::Unavailable("none".into()),
            status(503),
        ];
        for e in &next {
            assert_eq!(after_error(e), Verdict::NextNode, "{e}");
        }
        let back = [
            status(400),
            status(401),
            status(403),
            status(404),
            status(413),
            status(429),
            status(500),
            ClientError::Setup("f32 rows over HTTP".into()),
            ClientError::Protocol("bad frame".into()),
        ];
        for e in &back {
            assert_eq!(after_error(e), Verdict::Return, "{e}");
        }
        assert_eq!(after_status(200), Verdict::Return);
        assert_eq!(after_status(503), Verdict::NextNode);
    }
}
