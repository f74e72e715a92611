//! Canary rollouts. [`planner`] is the pure state machine (no I/O, time passed in) that the
//! simulations crate can drive too; the control-side driver that feeds it merged figures and
//! applies its actions comes next (see the issue notes).

pub mod planner;

pub use planner::{Action, Command, Figures, Phase, RegionFigures, Rollout, RolloutSpec};
