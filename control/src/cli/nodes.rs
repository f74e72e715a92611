//! `meridian nodes`: the nodes reporting to control, by region.

use super::client::Client;
use super::output::{table, Output};

pub async fn run(client: &Client, out: &Output) -> anyhow::Result<()> {
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
            let live: Vec<String> = n
                .info
                .models
                .iter()
                .filter(|m| m.live)
                .map(|m| format!("{} v{}", m.name, m.version))
                .collect();
            t.add_row(vec![
                n.info.region.clone(),
                n.info.id.clone(),
                n.state.clone(),
                if n.info.ready { "yes" } else { "no" }.to_string(),
                n.info.http_url.clone(),
                n.info.catalog_epoch.to_string(),
                live.join(", "),
                n.info.queued.to_string(),
                format!("{:.1}s ago", n.last_seen_ms_ago as f64 / 1000.0),
            ]);
        }
        t
    })
}
