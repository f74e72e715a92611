//! Canary rollouts. [`planner`] is the pure state machine (no I/O, time passed in) that the
//! simulations crate can drive too; [`driver`] feeds it control's merged figures every tick and
//! carries out its actions through the registry.

pub mod driver;
pub mod planner;

pub use planner::{Action, Command, Figures, Phase, RegionFigures, Rollout, RolloutSpec};
