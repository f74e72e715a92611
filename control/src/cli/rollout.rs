//! `meridian rollout start|status|pause|resume|promote|abort|rollback`.

use anyhow::Context;
use clap::Subcommand;

use super::client::Client;
use super::output::{table, Output};
use crate::api::rollouts::RolloutStatus;
use crate::rollout::{Phase, RolloutSpec};

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Roll a pushed version out in steps, judged per region against the live version.
    Start {
        model: String,
        #[arg(long)]
        version: u32,
        /// Canary share per step, in percent, ending at 100.
        #[arg(long, value_delimiter = ',', default_value = "1,5,25,50,100")]
        steps: Vec<u32>,
        /// Hold per step: 300s, 5m, 1h.
        #[arg(long, default_value = "5m")]
        hold: humantime::Duration,
        #[arg(long)]
        max_p99_ms: Option<f64>,
        /// The canary's p99 may not exceed the baseline's times this, per region.
        #[arg(long)]
        max_p99_ratio: Option<f64>,
        /// 0.01 = 1 %.
        #[arg(long)]
        max_error_rate: Option<f64>,
        /// Canary requests a region needs in a step before it is judged.
        #[arg(long, default_value_t = 100)]
        min_requests: u64,
        /// Steps and guards from a TOML file instead of the flags (see docs/experiments.md).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Steps, guards, per-region figures and the hold's progress.
    Status {
        model: String,
    },
    Pause {
        model: String,
    },
    Resume {
        model: String,
    },
    /// Make the canary live now.
    Promote {
        model: String,
    },
    /// Stop and send all traffic back to the baseline.
    Abort {
        model: String,
    },
    Rollback {
        model: String,
    },
}

/// Steps and guards, from flags or a file:
/// `steps = [1, 5, 25, 100]`, `hold = "5m"`, `max_p99_ms = 20.0`, `max_p99_ratio = 1.5`,
/// `max_error_rate = 0.01`, `min_requests = 100`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub steps: Vec<u32>,
    #[serde(deserialize_with = "human_duration")]
    pub hold: std::time::Duration,
    #[serde(default)]
    pub max_p99_ms: Option<f64>,
    #[serde(default)]
    pub max_p99_ratio: Option<f64>,
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn human_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

fn default_min_requests() -> u64 {
    100
}

fn draw(s: &RolloutStatus) {
    let r = &s.rollout;
    let current = match &r.phase {
        Phase::Holding { step, .. } | Phase::Paused { step, .. } => Some(*step),
        _ => None,
    };
    let steps: Vec<String> = r
        .spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, p)| match current {
            Some(c) if i < c => format!("{p}% ✓"),
            Some(c) if i == c => format!("[{p}%]"),
            None if r.phase == Phase::Promoted => format!("{p}% ✓"),
            _ => format!("{p}%"),
        })
        .collect();
    say!("rollout of {} v{} over v{}: {}", r.spec.model, r.spec.canary, r.spec.baseline, r.phase);
    say!("steps:  {}", steps.join(" → "));
    say!(
        "guards: p99 ≤ {} ms, p99 ≤ {} × baseline, error rate ≤ {}, judged after {} canary requests per region",
        r.spec.max_p99_ms.map_or("-".to_string(), |v| v.to_string()),
        r.spec.max_p99_ratio.map_or("-".to_string(), |v| v.to_string()),
        r.spec.max_error_rate.map_or("-".to_string(), |v| format!("{:.2}%", v * 100.0)),
        r.spec.min_requests
    );
    if let Some(left) = s.hold_left_ms {
        let total = r.spec.hold_ms.max(1);
        let done = ((total - left.min(total)) * 30 / total) as usize;
        say!("hold:   [{}{}] {:.0} s left", "=".repeat(done), " ".repeat(30 - done), left as f64 / 1e3);
    }
    let mut t =
        table(&["region", "canary req", "canary err", "canary p99 ms", "baseline req", "baseline p99 ms"]);
    for g in &s.regions {
        t.add_row(vec![
            g.region.clone(),
            g.canary.requests.to_string(),
            g.canary.errors.to_string(),
            format!("{:.2}", g.canary.p99_ms),
            g.baseline.requests.to_string(),
            format!("{:.2}", g.baseline.p99_ms),
        ]);
    }
    say!("{t}");
}

pub async fn run(client: &Client, cmd: RolloutCommand, out: &Output) -> anyhow::Result<()> {
    let status = match cmd {
        RolloutCommand::Start {
            model,
            version,
            steps,
            hold,
            max_p99_ms,
            max_p99_ratio,
            max_error_rate,
            min_requests,
            file,
        } => {
            let catalog = client.catalog().await?;
            let baseline =
                catalog.models.get(&model).map(|e| e.live.version).context("the model is not deployed")?;
            let plan = match file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    toml::from_str::<Plan>(&text).with_context(|| format!("in {}", path.display()))?
                }
                None => Plan { steps, hold: *hold, max_p99_ms, max_p99_ratio, max_error_rate, min_requests },
            };
            let spec = RolloutSpec {
                model,
                baseline,
                canary: version,
                steps: plan.steps,
                hold_ms: plan.hold.as_millis() as u64,
                max_p99_ms: plan.max_p99_ms,
                max_p99_ratio: plan.max_p99_ratio,
                max_error_rate: plan.max_error_rate,
                min_requests: plan.min_requests,
            };
            client.start_rollout(&spec).await?
        }
        RolloutCommand::Status { model } => client.rollout(&model).await?,
        RolloutCommand::Pause { model } => client.rollout_command(&model, "pause").await?,
        RolloutCommand::Resume { model } => client.rollout_command(&model, "resume").await?,
        RolloutCommand::Promote { model } => client.rollout_command(&model, "promote").await?,
        RolloutCommand::Abort { model } => client.rollout_command(&model, "abort").await?,
        RolloutCommand::Rollback { model } => client.rollout_command(&model, "rollback").await?,
    };
    if out.json {
        return out.show(&status, || table(&[]));
    }
    draw(&status);
    Ok(())
}
