//! Rollout state in sled (it survives a control restart) and the catalog changes a rollout
//! makes: the traffic split between baseline and canary is an experiment named
//! `rollout-{model}` with arms `baseline` and `canary`; promotion deploys the canary.

use meridian_gossip::{Arm, Catalog, Experiment};

use super::store::Registry;
use super::RegistryError;
use crate::rollout::{Action, Rollout, RolloutSpec};

fn split(spec: &RolloutSpec, canary_bp: u32) -> Experiment {
    Experiment {
        name: format!("rollout-{}", spec.model),
        model: spec.model.clone(),
        arms: vec![
            Arm {
                name: "baseline".into(),
                version: spec.baseline,
                weight_bp: 10_000 - canary_bp.min(10_000),
            },
            Arm { name: "canary".into(), version: spec.canary, weight_bp: canary_bp.min(10_000) },
        ],
        shadow: None,
        unit_key: "user_id".into(),
        salt: format!("rollout-{}-v{}", spec.model, spec.canary),
    }
}

impl Registry {
    pub fn rollout(&self, model: &str) -> Result<Option<Rollout>, RegistryError> {
        Ok(match self.rollouts.get(model)? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    /// Every rollout not yet over.
    pub fn active_rollouts(&self) -> Result<Vec<Rollout>, RegistryError> {
        let mut out = Vec::new();
        for v in self.rollouts.iter().values() {
            let r: Rollout = serde_json::from_slice(&v?)?;
            if !r.phase.is_done() {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub fn save_rollout(&self, rollout: &Rollout) -> Result<(), RegistryError> {
        self.rollouts.insert(rollout.spec.model.as_bytes(), serde_json::to_vec(rollout)?)?;
        self.rollouts.flush()?;
        Ok(())
    }

    /// Check that a rollout can start: both versions pushed and usable, the baseline live, no
    /// other experiment or rollout on the model.
    pub fn check_rollout(&self, spec: &RolloutSpec) -> Result<(), RegistryError> {
        let catalog = self.catalog()?;
        let live = catalog.models.get(&spec.model).map(|e| e.live.version);
        if live != Some(spec.baseline) {
            return Err(RegistryError::Conflict(format!(
                "the baseline must be the live version of {:?} ({live:?})",
                spec.model
            )));
        }
        let canary =
            self.version(&spec.model, spec.canary).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        if canary.status == super::Status::Archived {
            return Err(RegistryError::Conflict(format!("version {} is archived", spec.canary)));
        }
        if let Some(e) = catalog.experiments.get(&spec.model) {
            return Err(RegistryError::Conflict(format!(
                "model {:?} runs experiment {:?}",
                spec.model, e.name
            )));
        }
        if self.rollout(&spec.model)?.is_some_and(|r| !r.phase.is_done()) {
            return Err(RegistryError::Conflict(format!("a rollout of {:?} is in progress", spec.model)));
        }
        Ok(())
    }

    /// Carry out a planner action in the catalog.
    pub fn apply_rollout_action(
        &self,
        spec: &RolloutSpec,
        action: &Action,
    ) -> Result<Catalog, RegistryError> {
        match action {
            Action::SetCanaryShare { canary_bp } => {
                let experiment = split(spec, *canary_bp);
                let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
                self.change(&spec.model, |_, catalog| {
                    catalog.experiments.insert(spec.model.clone(), experiment.clone());
                    Ok(())
                })
            }
            Action::Promote => {
                self.end_split(spec)?;
                self.deploy(&spec.model, Some(spec.canary))
            }
            Action::RollBack { .. } => self.end_split(spec),
        }
    }

    fn end_split(&self, spec: &RolloutSpec) -> Result<Catalog, RegistryError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let name = format!("rollout-{}", spec.model);
        self.change(&spec.model, |_, catalog| {
            if catalog.experiments.get(&spec.model).is_some_and(|e| e.name == name) {
                catalog.experiments.remove(&spec.model);
            }
            Ok(())
        })
    }
}
