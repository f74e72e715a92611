//! `meridian experiments create|list|show|stop`.

use anyhow::Context;
use clap::Subcommand;
use meridian_gossip::experiment::BUCKETS;
use meridian_gossip::{Arm, Experiment};

use super::client::Client;
use super::output::{table, Output};
use crate::api::experiments::ExperimentResults;

#[derive(Debug, Subcommand)]
pub enum ExperimentsCommand {
    /// Split a deployed model's traffic between versions by a sticky hash of a unit.
    Create {
        name: String,
        #[arg(long)]
        model: String,
        /// An arm as NAME=VERSION:WEIGHT_BP (weights in basis points, summing to 10000);
        /// repeat for each arm, e.g. --arm control=1:5000 --arm treatment=2:5000.
        #[arg(long = "arm", required = true)]
        arms: Vec<String>,
        /// A version that gets a copy of every request and never answers.
        #[arg(long)]
        shadow: Option<u32>,
        /// The request field or header whose value is hashed.
        #[arg(long, default_value = "user_id")]
        unit_key: String,
        /// Default: the experiment's name.
        #[arg(long)]
        salt: Option<String>,
    },
    List,
    Show {
        name: String,
    },
    /// Stop an experiment: all traffic goes to the live version.
    Stop {
        name: String,
    },
}

fn parse_arm(text: &str) -> anyhow::Result<Arm> {
    let (name, rest) = text.split_once('=').context("an arm is NAME=VERSION:WEIGHT_BP")?;
    let (version, weight) = rest.split_once(':').context("an arm is NAME=VERSION:WEIGHT_BP")?;
    Ok(Arm {
        name: name.trim().to_string(),
        version: version.trim().parse().with_context(|| format!("version {version:?} in {text:?}"))?,
        weight_bp: weight.trim().parse().with_context(|| format!("weight {weight:?} in {text:?}"))?,
    })
}

fn experiments_table(list: &[Experiment]) -> comfy_table::Table {
    let mut t = table(&["experiment", "model", "arms (version, share)", "shadow", "unit key", "salt"]);
    for e in list {
        let arms: Vec<String> = e
            .arms
            .iter()
            .map(|a| {
                format!(
                    "{} v{} {:.1}%",
                    a.name,
                    a.version,
                    f64::from(a.weight_bp) * 100.0 / f64::from(BUCKETS)
                )
            })
            .collect();
        let shadow = e.shadow.map_or("-".to_string(), |v| format!("v{v}"));
        t.add_row(vec![
            e.name.clone(),
            e.model.clone(),
            arms.join(", "),
            shadow,
            e.unit_key.clone(),
            e.salt.clone(),
        ]);
    }
    t
}

fn results_table(r: &ExperimentResults) -> comfy_table::Table {
    let mut t = table(&[
        "arm",
        "version",
        "requests",
        "errors",
        "p50 ms",
        "p99 ms",
        "outcomes",
        "mean [95% CI]",
        "vs first",
        "p (always valid)",
    ]);
    let num = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
    for a in &r.arms {
        let ci = match (a.outcome_mean, a.outcome_ci95) {
            (Some(m), Some((lo, hi))) => format!("{m:.4} [{lo:.4}, {hi:.4}]"),
            (Some(m), None) => format!("{m:.4}"),
            _ => "-".to_string(),
        };
        t.add_row(vec![
            a.arm.clone(),
            format!("v{}", a.version),
            a.requests.to_string(),
            format!("{:.2}%", a.error_rate * 100.0),
            format!("{:.2}", a.p50_ms),
            format!("{:.2}", a.p99_ms),
            a.outcome.n.to_string(),
            ci,
            num(a.difference),
            num(a.p_value),
        ]);
    }
    t
}

pub async fn run(client: &Client, cmd: ExperimentsCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        ExperimentsCommand::Create { name, model, arms, shadow, unit_key, salt } => {
            let arms = arms.iter().map(|a| parse_arm(a)).collect::<anyhow::Result<Vec<_>>>()?;
            let salt = salt.unwrap_or_else(|| name.clone());
            let experiment = Experiment { name, model, arms, shadow, unit_key, salt };
            let catalog = client.start_experiment(&experiment).await?;
            out.show(&experiment, || experiments_table(std::slice::from_ref(&experiment)))?;
            eprintln!("started (catalog epoch {})", catalog.epoch);
            Ok(())
        }
        ExperimentsCommand::List => {
            let list = client.experiments().await?;
            out.show(&list, || experiments_table(&list))
        }
        ExperimentsCommand::Show { name } => {
            let results = client.experiment_results(&name).await?;
            out.show(&results, || experiments_table(std::slice::from_ref(&results.experiment)))?;
            if !out.json {
                say!("{}", results_table(&results));
                say!("test: {}", results.test);
                if results.stopped {
                    say!(
                        "stopped: no traffic is split any more; the figures cover the last {} s",
                        results.window_s
                    );
                }
            }
            Ok(())
        }
        ExperimentsCommand::Stop { name } => {
            let catalog = client.stop_experiment(&name).await?;
            eprintln!("stopped {name} (catalog epoch {})", catalog.epoch);
            Ok(())
        }
    }
}
