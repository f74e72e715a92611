//! The tables of `meridian nodes`: the mesh view by region, and control's directory.

use comfy_table::Table;
use meridian_gossip::{LoadedModel, MeshNode, MeshView};

use super::super::client::Client;
use super::super::output::{table, Output};

/// The mesh view, grouped by region (the region named on its first row): state (`self` for
/// the answering node), RTT from it, catalog epoch, live models, queue, GPU, draining.
pub fn mesh(view: &MeshView) -> Table {
    let mut t = table(&[
        "region",
        "node",
        "state",
        "rtt ms",
        "catalog epoch",
        "live models",
        "queued",
        "gpu",
        "draining",
    ]);
    let mut nodes: Vec<&MeshNode> = view.nodes.iter().collect();
    nodes.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
    let mut region = None;
    for n in nodes {
        let first_of_region = region != Some(&n.region);
        region = Some(&n.region);
        t.add_row(mesh_row(n, first_of_region));
    }
    t
}

fn mesh_row(n: &MeshNode, first_of_region: bool) -> Vec<String> {
    let state = if n.is_self { "self" } else { n.state.as_str() };
    let dash = || "-".to_string();
    let info = n.info.as_ref();
    vec![
        if first_of_region { n.region.clone() } else { String::new() },
        n.id.clone(),
        state.to_string(),
        n.rtt_ms.map_or_else(dash, |ms| format!("{ms:.1}")),
        info.map_or_else(dash, |i| i.catalog_epoch.to_string()),
        info.map_or_else(dash, |i| live_models(&i.models)),
        info.map_or_else(dash, |i| i.queued.to_string()),
        info.map_or_else(dash, |i| yes_no(i.gpu)),
        info.map_or_else(dash, |i| if i.draining { "yes".to_string() } else { String::new() }),
    ]
}

/// `name vN` of each live model, `(cold)` after one not warmed up yet.
fn live_models(models: &[LoadedModel]) -> String {
    let live: Vec<String> = models
        .iter()
        .filter(|m| m.live)
        .map(|m| format!("{} v{}{}", m.name, m.version, if m.warm { "" } else { " (cold)" }))
        .collect();
    live.join(", ")
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// `meridian nodes directory`: the nodes reporting to control, by region.
pub async fn directory(client: &Client, out: &Output) -> anyhow::Result<()> {
    let mut nodes = client.nodes().await?;
    nodes.sort_by(|a, b| (&a.info.region, &a.info.id).cmp(&(&b.info.region, &b.info.id)));
    out.show(&nodes, || {
        let mut t = table(&[
            "region",
            "node",
            "state",
            "ready",
            "url",
            "catalog epoch",
            "models (live)",
            "queued",
            "last seen",
        ]);
        for n in &nodes {
            t.add_row(vec![
                n.info.region.clone(),
                n.info.id.clone(),
                if n.info.draining { format!("{} (draining)", n.state) } else { n.state.clone() },
                yes_no(n.info.ready),
                n.info.http_url.clone(),
                n.info.catalog_epoch.to_string(),
                live_models(&n.info.models),
                n.info.queued.to_string(),
                format!("{:.1}s ago", n.last_seen_ms_ago as f64 / 1000.0),
            ]);
        }
        t
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use meridian_gossip::{MemberStatus, NodeInfo};

    use super::*;

    fn node(id: &str, region: &str, state: MemberStatus, is_self: bool) -> MeshNode {
        let model = |name: &str, version, live, warm| LoadedModel {
            name: name.into(),
            version,
            runtime: "tract-cpu".into(),
            runtime_reason: String::new(),
            live,
            warm,
        };
        MeshNode {
            id: id.into(),
            region: region.into(),
            state,
            is_self,
            mesh_addr: Some("127.0.0.1:7000".into()),
            rtt_ms: (!is_self).then_some(1.5),
            info: Some(NodeInfo {
                id: id.into(),
                region: region.into(),
                catalog_epoch: 7,
                queued: 3,
                draining: id == "b",
                models: vec![
                    model("mlp", 2, true, true),
                    model("mlp", 1, false, true),
                    model("ridge", 1, true, false),
                ],
                ..NodeInfo::default()
            }),
        }
    }

    #[test]
    fn the_mesh_table_groups_by_region_and_marks_self() {
        let view = MeshView {
            node: "a".into(),
            mesh: true,
            catalog_epoch: 7,
            nodes: vec![
                node("c", "us", MemberStatus::Down, false),
                node("b", "eu", MemberStatus::Suspect, false),
                node("a", "eu", MemberStatus::Alive, true),
            ],
        };
        let text = mesh(&view).to_string();
        let rows: Vec<&str> =
            text.lines().filter(|l| l.contains(" a ") || l.contains(" b ") || l.contains(" c ")).collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(rows[0].contains("eu") && rows[0].contains("self") && rows[0].contains(" - "), "{}", rows[0]);
        assert!(
            !rows[1].contains("eu") && rows[1].contains("suspect") && rows[1].contains("1.5"),
            "{}",
            rows[1]
        );
        assert!(rows[1].contains("yes"), "b is draining: {}", rows[1]);
        assert!(rows[2].contains("us") && rows[2].contains("down"), "{}", rows[2]);
        assert!(rows[0].contains("mlp v2, ridge v1 (cold)") && !rows[0].contains("mlp v1"), "{}", rows[0]);
    }

    #[test]
    fn a_node_without_info_shows_dashes() {
        let mut n = node("z", "eu", MemberStatus::Alive, false);
        n.info = None;
        let row = mesh_row(&n, true);
        assert_eq!(row[..3], ["eu", "z", "alive"]);
        assert!(row[4..].iter().all(|c| c == "-"), "{row:?}");
    }
}
