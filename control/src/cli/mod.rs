//! The `meridian` command line: run control or a node, drive the registry, predict, look at
//! nodes, and `up` (a local mesh with the demo models).
//!
//! - [`client`]: the control API client the commands share.
//! - [`models`], [`rollout`], [`experiments`], [`features`], [`predict`], [`nodes`]: operator commands; tables for people, `--json` for scripts.
//!   `predict` fails over between nodes with `--mesh`; `nodes` shows the mesh and drains nodes.
//! - [`keys`]: API keys: create (shown once), list, revoke.
//! - [`batch`]: batch jobs on a node: submit a file, follow it, download the output.
//! - [`daemons`]: `meridian control` and `meridian node` (config file, env, flags).
//! - [`up`]: control + three nodes in three regions on loopback.

/// `println!` for the CLI: a closed stdout (`meridian ... | head`) ends the program quietly
/// instead of panicking.
macro_rules! say {
    ($($t:tt)*) => { $crate::cli::output::line(&format!($($t)*)) };
}

pub mod batch;
pub mod certs;
pub mod client;
pub mod daemons;
pub mod experiments;
pub mod features;
pub mod keys;
pub mod models;
pub mod nodes;
pub mod output;
pub mod predict;
pub mod rollout;
pub mod top;
pub mod up;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "meridian", version, about = "meridian: a regional ML inference serving mesh")]
pub struct Cli {
    /// Control's base URL.
    #[arg(long, global = true, env = "MERIDIAN_CONTROL", default_value = "http://127.0.0.1:7070")]
    pub control: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// The API key sent to control (needs `admin`) and to nodes, as `Authorization: Bearer`.
    #[arg(long, global = true, env = "MERIDIAN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start control and three nodes in three regions on loopback, with the demo models deployed.
    Up(up::UpArgs),
    /// Run the control service.
    Control(daemons::ControlArgs),
    /// Run a serving node.
    Node(daemons::NodeArgs),
    /// Make a development CA and a node certificate for TLS and QUIC.
    Certs(certs::CertsArgs),
    /// Push, list, show, deploy, roll back and archive models.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Canary rollouts with automatic rollback.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Start, list, show and stop A/B experiments.
    #[command(subcommand)]
    Experiments(experiments::ExperimentsCommand),
    /// Define feature views; write, ingest and read features.
    #[command(subcommand)]
    Features(features::FeaturesCommand),
    /// Predict with a model on a node.
    Predict(predict::PredictArgs),
    /// Batch jobs: submit a file of rows, follow progress, download predictions.
    #[command(subcommand)]
    Batch(batch::BatchCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The mesh as a node sees it, by region; `nodes drain ID` takes a node out; `nodes
    /// directory` lists the nodes reporting to control.
    Nodes(nodes::NodesArgs),
    /// Latency percentiles and traffic per model, version, arm and region, refreshed live.
    Top(top::TopArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = output::Output { json: cli.json };
    let key = cli.api_key.as_deref();
    let control = || client::Client::with_key(&cli.control, key);
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Control(args) => daemons::control(args).await,
        Command::Node(args) => daemons::node(args).await,
        Command::Certs(args) => certs::run(&args),
        Command::Models(cmd) => models::run(&control()?, cmd, &out).await,
        Command::Rollout(cmd) => rollout::run(&control()?, cmd, &out).await,
        Command::Experiments(cmd) => experiments::run(&control()?, cmd, &out).await,
        Command::Features(cmd) => features::run(&control()?, cmd, &out).await,
        Command::Predict(args) => predict::run(args, key, &out).await,
        Command::Batch(cmd) => batch::run(cmd, key, &out).await,
        Command::Keys(cmd) => keys::run(&control()?, cmd, &out).await,
        Command::Top(args) => top::run(&control()?, args, &out).await,
        Command::Nodes(args) => nodes::run(&control()?, args, &out).await,
    }
}
