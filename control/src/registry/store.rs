//! The registry's state changes. Each change is one sled transaction over the `versions` and
//! `catalog` trees, so a crash leaves either the old state or the new one. Changes are
//! serialised by a mutex: pushes and deploys are rare, and versions must be monotonic.

use std::path::Path;
use std::sync::Mutex;

use meridian_gossip::{Catalog, CatalogEntry, Experiment};
use meridian_models::digest::sha256_hex;
use meridian_models::features::FeatureView;
use meridian_models::ModelSpec;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::artifacts::ArtifactStore;
use super::record::{ModelRecord, Status};
use super::validate::validate_push;
use super::RegistryError;

pub(super) const CATALOG_KEY: &[u8] = b"catalog";

/// Deploy history of one model, oldest first: what `rollback` walks back through.
fn history_key(name: &str) -> Vec<u8> {
    format!("history/{name}").into_bytes()
}

fn version_key(name: &str, version: u32) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn name_prefix(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.push(0);
    key
}

/// What a push carries besides the artifact bytes.
#[derive(Debug, Clone)]
pub struct PushRequest<'a> {
    pub name: &'a str,
    pub spec: &'a str,
    pub artifact: &'a [u8],
    pub pushed_by: &'a str,
    pub created_at: String,
}

/// The catalog entry a deploy history makes: the last version live, the one before it kept
/// loaded for rollback, and whatever else a running experiment needs.
fn catalog_entry(
    history: &[u32],
    experiment: Option<&Experiment>,
    load: impl Fn(u32) -> TxResult<ModelRecord>,
) -> TxResult<Option<CatalogEntry>> {
    let Some(&live) = history.last() else { return Ok(None) };
    let previous = match history.len() {
        n if n >= 2 => Some(history[n - 2]),
        _ => None,
    };
    let mut extra = Vec::new();
    for v in experiment.map(Experiment::versions).unwrap_or_default() {
        if v != live && Some(v) != previous {
            extra.push(load(v)?.manifest());
        }
    }
    let previous = previous.map(&load).transpose()?.map(|r| r.manifest());
    Ok(Some(CatalogEntry { live: load(live)?.manifest(), previous, extra }))
}

/// Every feature the spec reads from a view must exist in that view.
fn check_views(spec: &ModelSpec, catalog: &Catalog) -> Result<(), RegistryError> {
    let mut problems = Vec::new();
    for f in &spec.features {
        let Some(view_name) = &f.view else { continue };
        match catalog.views.get(view_name) {
            None => {
                problems.push(format!("feature {:?} reads view {view_name:?}, which is not defined", f.name))
            }
            Some(view) if !view.features.contains_key(&f.name) => {
                problems.push(format!("feature view {view_name:?} has no feature {:?}", f.name));
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!("invalid feature spec: {}", problems.join("; "))))
    }
}

pub struct Registry {
    pub(super) db: sled::Db,
    versions: sled::Tree,
    pub(super) catalog: sled::Tree,
    /// API keys by id (see `keys.rs`).
    pub(super) keys: sled::Tree,
    /// Canary rollouts by model (see `rollouts.rs`).
    pub(super) rollouts: sled::Tree,
    /// Stopped experiments by name, so their results stay readable.
    stopped: sled::Tree,
    artifacts: ArtifactStore,
    pub(super) write_lock: Mutex<()>,
}

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<RegistryError>>;

pub(super) fn abort<T>(e: RegistryError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

pub(super) fn unwrap_tx<T>(r: Result<T, TransactionError<RegistryError>>) -> Result<T, RegistryError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    })
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(
    tree: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(v) => serde_json::from_slice(&v).map(Some).or_else(|e| abort(e.into())),
        None => Ok(None),
    }
}

pub(super) fn write_json<T: serde::Serialize>(
    tree: &TransactionalTree,
    key: &[u8],
    value: &T,
) -> TxResult<()> {
    let bytes = serde_json::to_vec(value).or_else(|e| abort(e.into()))?;
    tree.insert(key, bytes)?;
    Ok(())
}

impl Registry {
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        let db = sled::open(dir.join("registry.sled"))?;
        Ok(Self {
            versions: db.open_tree("versions")?,
            catalog: db.open_tree("catalog")?,
            keys: db.open_tree("keys")?,
            rollouts: db.open_tree("rollouts")?,
            stopped: db.open_tree("stopped_experiments")?,
            artifacts: ArtifactStore::open(&dir.join("artifacts"))?,
            db,
            write_lock: Mutex::new(()),
        })
    }

    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    pub fn catalog(&self) -> Result<Catalog, RegistryError> {
        match self.catalog.get(CATALOG_KEY)? {
            Some(v) => Ok(serde_json::from_slice(&v)?),
            None => Ok(Catalog::default()),
        }
    }

    /// Every version of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<ModelRecord>, RegistryError> {
        self.versions
            .scan_prefix(name_prefix(name))
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    pub fn version(&self, name: &str, version: u32) -> Result<ModelRecord, RegistryError> {
        match self.versions.get(version_key(name, version))? {
            Some(v) => Ok(serde_json::from_slice(&v)?),
            None => Err(self.not_found(name, Some(version))),
        }
    }

    /// Latest record of every model name.
    pub fn models(&self) -> Result<Vec<Vec<ModelRecord>>, RegistryError> {
        let mut out: Vec<Vec<ModelRecord>> = Vec::new();
        for v in self.versions.iter().values() {
            let record: ModelRecord = serde_json::from_slice(&v?)?;
            match out.last_mut() {
                Some(group) if group[0].name == record.name => group.push(record),
                _ => out.push(vec![record]),
            }
        }
        Ok(out)
    }

    fn not_found(&self, name: &str, version: Option<u32>) -> RegistryError {
        let known = self.versions.scan_prefix(name_prefix(name)).next().is_some();
        match (known, version) {
            (false, _) => RegistryError::NotFound(format!("no model named {name:?}")),
            (true, Some(v)) => RegistryError::NotFound(format!("model {name:?} has no version {v}")),
            (true, None) => RegistryError::NotFound(format!("model {name:?} has no such version")),
        }
    }

    /// Start an experiment on a deployed model: its arm and shadow versions get loaded on every
    /// node with the catalog.
    pub fn start_experiment(&self, experiment: Experiment) -> Result<Catalog, RegistryError> {
        let problems = experiment.problems();
        if !problems.is_empty() {
            return Err(RegistryError::Invalid(format!(
                "experiment {:?}: {}",
                experiment.name,
                problems.join("; ")
            )));
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let model = experiment.model.clone();
        for v in experiment.versions() {
            let record = self.version(&model, v).map_err(|e| RegistryError::Invalid(e.to_string()))?;
            if record.status == Status::Archived {
                return Err(RegistryError::Conflict(format!("version {v} of {model:?} is archived")));
            }
        }
        let catalog = self.catalog()?;
        if !catalog.models.contains_key(&model) {
            return Err(RegistryError::Conflict(format!("model {model:?} is not deployed; deploy it first")));
        }
        if let Some(running) = catalog.experiments.get(&model) {
            return Err(RegistryError::Conflict(format!(
                "model {model:?} already runs experiment {:?}; stop it first",
                running.name
            )));
        }
        if catalog.experiments.values().any(|e| e.name == experiment.name) {
            return Err(RegistryError::Conflict(format!(
                "an experiment named {:?} is running",
                experiment.name
            )));
        }
        self.change(&model, |_, catalog| {
            catalog.experiments.insert(model.clone(), experiment.clone());
            Ok(())
        })
    }

    /// Stop a running experiment: all traffic goes to the live version again.
    pub fn stop_experiment(&self, name: &str) -> Result<Catalog, RegistryError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let catalog = self.catalog()?;
        let model = catalog
            .experiments
            .values()
            .find(|e| e.name == name)
            .map(|e| e.model.clone())
            .ok_or_else(|| RegistryError::NotFound(format!("no running experiment named {name:?}")))?;
        if let Some(experiment) = catalog.experiments.get(&model) {
            self.stopped.insert(name.as_bytes(), serde_json::to_vec(experiment)?)?;
        }
        self.change(&model, |_, catalog| {
            catalog.experiments.remove(&model);
            Ok(())
        })
    }

    /// An experiment stopped earlier, by name (the newest of that name).
    pub fn stopped_experiment(&self, name: &str) -> Result<Option<Experiment>, RegistryError> {
        match self.stopped.get(name.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Define or replace a feature view; it reaches nodes in the catalog.
    pub fn put_view(&self, view: FeatureView) -> Result<Catalog, RegistryError> {
        let problems = view.problems();
        if !problems.is_empty() {
            return Err(RegistryError::Invalid(format!(
                "feature view {:?}: {}",
                view.name,
                problems.join("; ")
            )));
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.catalog.transaction(|tree| {
            let mut catalog: Catalog = read_json(tree, CATALOG_KEY)?.unwrap_or_default();
            if catalog.views.get(&view.name) != Some(&view) {
                catalog.views.insert(view.name.clone(), view.clone());
                // Every model version nodes keep loaded must still find its features.
                let broken: Vec<String> = catalog
                    .models
                    .values()
                    .flat_map(|e| std::iter::once(&e.live).chain(&e.previous).chain(&e.extra))
                    .filter_map(|m| {
                        check_views(&m.spec, &catalog)
                            .err()
                            .map(|e| format!("{} v{}: {e}", m.name, m.version))
                    })
                    .collect();
                if !broken.is_empty() {
                    return abort(RegistryError::Conflict(format!(
                        "feature view {:?} would break models that read it: {}",
                        view.name,
                        broken.join("; ")
                    )));
                }
                catalog.epoch += 1;
                write_json(tree, CATALOG_KEY, &catalog)?;
            }
            Ok(catalog)
        });
        let catalog = unwrap_tx(result)?;
        self.db.flush()?;
        Ok(catalog)
    }

    /// Validate and store a new version (status `staged`). Nothing is written unless the
    /// artifact loads, fits its spec and runs.
    pub fn push(&self, req: PushRequest<'_>) -> Result<ModelRecord, RegistryError> {
        let validated = validate_push(req.name, req.spec, req.artifact)?;
        check_views(&validated.spec, &self.catalog()?)?;
        let digest = sha256_hex(req.artifact);
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let version = self.versions(req.name)?.last().map_or(1, |r| r.version + 1);
        self.artifacts.put(&digest, req.artifact)?;
        let accuracy = validated.spec.metrics.get("accuracy").copied();
        let record = ModelRecord {
            id: self.db.generate_id()?,
            name: req.name.to_string(),
            version,
            digest,
            format: "onnx".to_string(),
            status: Status::Staged,
            accuracy,
            signature: validated.signature,
            spec: validated.spec,
            size_bytes: req.artifact.len() as u64,
            created_at: req.created_at,
            pushed_by: req.pushed_by.to_string(),
        };
        self.versions.insert(version_key(req.name, version), serde_json::to_vec(&record)?)?;
        self.versions.flush()?;
        Ok(record)
    }

    /// Make `version` (default: the latest non-archived) live; the live one becomes `previous`.
    pub fn deploy(&self, name: &str, version: Option<u32>) -> Result<Catalog, RegistryError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let version = match version {
            Some(v) => v,
            None => self
                .versions(name)?
                .iter()
                .rev()
                .find(|r| r.status != Status::Archived)
                .map(|r| r.version)
                .ok_or_else(|| self.not_found(name, None))?,
        };
        let record = self.version(name, version)?;
        if record.status == Status::Archived {
            return Err(RegistryError::Conflict(format!(
                "version {version} of {name:?} is archived and cannot be deployed"
            )));
        }
        self.change(name, |history, _| {
            if history.last() != Some(&version) {
                history.push(version);
            }
            Ok(())
        })
    }

    /// Make the version deployed before the live one live again.
    pub fn rollback(&self, name: &str) -> Result<Catalog, RegistryError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.versions(name)?.is_empty() {
            return Err(self.not_found(name, None));
        }
        self.change(name, |history, _| {
            if history.len() < 2 {
                return Err(RegistryError::Conflict(format!(
                    "model {name:?} has no earlier deployed version to roll back to"
                )));
            }
            history.pop();
            Ok(())
        })
    }

    /// Where `name` is loaded (`Placement::All` clears the setting).
    pub fn place(&self, name: &str, placement: meridian_gossip::Placement) -> Result<Catalog, RegistryError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.versions(name)?.is_empty() {
            return Err(self.not_found(name, None));
        }
        if let meridian_gossip::Placement::Regions { regions } = &placement {
            if regions.is_empty() {
                return Err(RegistryError::Invalid(
                    "placement: regions must list at least one region".into(),
                ));
            }
        }
        self.change(name, |_, catalog| {
            match &placement {
                meridian_gossip::Placement::All => catalog.placements.remove(name),
                other => catalog.placements.insert(name.to_string(), other.clone()),
            };
            Ok(())
        })
    }

    /// Retire a version that is not live.
    pub fn archive(&self, name: &str, version: u32) -> Result<Catalog, RegistryError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let record = self.version(name, version)?;
        let live = self.catalog()?.models.get(name).map(|e| e.live.version);
        if live == Some(version) {
            return Err(RegistryError::Conflict(format!(
                "version {version} of {name:?} is live; deploy or roll back to another version first"
            )));
        }
        if record.status == Status::Archived {
            return self.catalog();
        }
        if self.catalog()?.experiments.get(name).is_some_and(|e| e.versions().contains(&version)) {
            return Err(RegistryError::Conflict(format!(
                "version {version} of {name:?} is in a running experiment; stop it first"
            )));
        }
        self.change(name, |history, _| {
            history.retain(|v| *v != version);
            Ok(())
        })?;
        let key = version_key(name, version);
        let archived = ModelRecord { status: Status::Archived, ..record };
        self.versions.insert(key, serde_json::to_vec(&archived)?)?;
        self.versions.flush()?;
        self.catalog()
    }

    /// Apply `edit` to the deploy history of `name` and the catalog, then rewrite the model's
    /// catalog entry and statuses from the new history, bumping the epoch when the catalog
    /// changed. One sled transaction. Callers hold the write lock.
    pub(super) fn change(
        &self,
        name: &str,
        edit: impl Fn(&mut Vec<u32>, &mut Catalog) -> Result<(), RegistryError>,
    ) -> Result<Catalog, RegistryError> {
        let result = (&self.versions, &self.catalog).transaction(|(versions, catalog_tree)| {
            let mut history: Vec<u32> = read_json(catalog_tree, &history_key(name))?.unwrap_or_default();
            let before_live = history.last().copied();
            let mut catalog: Catalog = read_json(catalog_tree, CATALOG_KEY)?.unwrap_or_default();
            let before = catalog.clone();
            if let Err(e) = edit(&mut history, &mut catalog) {
                return abort(e);
            }
            let load = |v: u32| -> TxResult<ModelRecord> {
                match read_json(versions, &version_key(name, v))? {
                    Some(r) => Ok(r),
                    None => abort(RegistryError::Storage(format!("{name} has no version {v}"))),
                }
            };
            let new_live = history.last().copied();
            if before_live != new_live {
                for (v, status) in [(before_live, Status::Staged), (new_live, Status::Deployed)] {
                    if let Some(v) = v {
                        let record = ModelRecord { status, ..load(v)? };
                        write_json(versions, &version_key(name, v), &record)?;
                    }
                }
            }
            match catalog_entry(&history, catalog.experiments.get(name), load)? {
                Some(e) => catalog.models.insert(name.to_string(), e),
                None => catalog.models.remove(name),
            };
            if catalog != before {
                catalog.epoch += 1;
                write_json(catalog_tree, CATALOG_KEY, &catalog)?;
            }
            write_json(catalog_tree, &history_key(name), &history)?;
            Ok(catalog)
        });
        let catalog = unwrap_tx(result)?;
        self.db.flush()?;
        Ok(catalog)
    }
}
