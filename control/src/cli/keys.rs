//! `meridian keys create|list|revoke`: API keys for nodes and control. The key is printed once,
//! at creation; control keeps only its hash.

use std::collections::BTreeSet;

use anyhow::Context;
use clap::Subcommand;
use meridian_gossip::keys::{KeyLimits, Scope, Scopes};

use super::client::Client;
use super::output::{table, Output};
use crate::registry::keys::{KeyRecord, KeySpec};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is shown this once.
    Create {
        /// What the key is for (shown in lists).
        #[arg(long)]
        name: String,
        /// predict, batch, features:write, admin or node; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Allow only this model; repeat for several (default: every model).
        #[arg(long = "model")]
        models: Vec<String>,
        /// This key's predictions per second per model (default: the node's; 0: no limit).
        #[arg(long)]
        predict_per_second: Option<u32>,
        /// This key's batch submissions per minute (default: the node's; 0: no limit).
        #[arg(long)]
        batch_per_minute: Option<u32>,
    },
    /// Every key, active and revoked.
    List,
    /// Revoke a key by id: every node refuses it once the catalog reaches it.
    Revoke { id: String },
}

fn parse_scopes(names: &[String]) -> anyhow::Result<Scopes> {
    names
        .iter()
        .flat_map(|n| n.split(','))
        .map(|n| {
            Scope::parse(n.trim()).with_context(|| {
                format!("unknown scope {n:?}; use predict, batch, features:write, admin or node")
            })
        })
        .collect()
}

fn row(k: &KeyRecord) -> Vec<String> {
    let models =
        k.models.as_ref().map_or("all".to_string(), |m| m.iter().cloned().collect::<Vec<_>>().join(", "));
    let limit = |v: Option<u32>| {
        v.map_or("default".to_string(), |n| if n == 0 { "none".into() } else { n.to_string() })
    };
    vec![
        k.id.clone(),
        k.name.clone(),
        k.scopes.to_string(),
        models,
        limit(k.limits.predict_per_second),
        limit(k.limits.batch_per_minute),
        k.created_at.clone(),
        k.revoked_at.clone().unwrap_or_else(|| "-".into()),
    ]
}

const HEADER: [&str; 8] = ["id", "name", "scopes", "models", "predict/s", "batch/min", "created", "revoked"];

pub async fn run(client: &Client, cmd: KeysCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { name, scopes, models, predict_per_second, batch_per_minute } => {
            let spec = KeySpec {
                name,
                scopes: parse_scopes(&scopes)?,
                models: (!models.is_empty()).then(|| models.into_iter().collect::<BTreeSet<_>>()),
                limits: KeyLimits { predict_per_second, batch_per_minute },
            };
            let created = client.create_key(&spec).await?;
            if out.json {
                return out.show(&created, || table(&[]));
            }
            say!("{}", created.key);
            eprintln!(
                "API key {} created; it is shown only now. Use it with\n  export MERIDIAN_API_KEY={}\n  curl -H \"authorization: Bearer $MERIDIAN_API_KEY\" ...",
                created.record.id, created.key
            );
            Ok(())
        }
        KeysCommand::List => {
            let keys = client.keys().await?;
            out.show(&keys, || {
                let mut t = table(&HEADER);
                for k in &keys {
                    t.add_row(row(k));
                }
                t
            })
        }
        KeysCommand::Revoke { id } => {
            let record = client.revoke_key(&id).await?;
            out.show(&record, || {
                let mut t = table(&HEADER);
                t.add_row(row(&record));
                t
            })
        }
    }
}
