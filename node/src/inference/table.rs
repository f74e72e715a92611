//! The serving table: for each model name, the live loaded version and the previous one.
//! Built whole by the sync task and swapped in atomically, so a request sees one catalog.

use std::collections::BTreeMap;
use std::sync::Arc;

use meridian_gossip::Catalog;

use super::loaded::LoadedModel;

#[derive(Debug, Clone)]
pub struct Slot {
    pub live: Arc<LoadedModel>,
    pub previous: Option<Arc<LoadedModel>>,
    /// Versions a running experiment needs (arms, shadow) besides live and previous.
    pub extra: Vec<Arc<LoadedModel>>,
}

impl Slot {
    /// Every loaded version of the model, live first.
    pub fn versions(&self) -> impl Iterator<Item = &Arc<LoadedModel>> {
        std::iter::once(&self.live).chain(self.previous.as_ref()).chain(&self.extra)
    }
}

#[derive(Debug, Default)]
pub struct ServingTable {
    /// The catalog this table serves (possibly partly: see `missing`).
    pub catalog: Arc<Catalog>,
    pub models: BTreeMap<String, Slot>,
    /// Whether a catalog was adopted (from control or from disk), even an empty one.
    pub has_catalog: bool,
    /// Live models of the catalog that could not be loaded yet, with the reason.
    pub missing: BTreeMap<String, String>,
}

/// What resolving a model name and optional version found.
#[derive(Debug)]
pub enum Resolved {
    Model(Arc<LoadedModel>),
    /// The node has no catalog yet.
    NoCatalog,
    /// In the catalog, not (yet) loaded here.
    NotLoaded(String),
    UnknownModel,
    /// The model is served, but not at this version.
    UnknownVersion {
        live: u32,
    },
}

impl ServingTable {
    pub fn resolve(&self, name: &str, version: Option<u32>) -> Resolved {
        if let Some(slot) = self.models.get(name) {
            let Some(version) = version else {
                return Resolved::Model(slot.live.clone());
            };
            return slot
                .versions()
                .find(|m| m.manifest.version == version)
                .map_or(Resolved::UnknownVersion { live: slot.live.manifest.version }, |m| {
                    Resolved::Model(m.clone())
                });
        }
        if let Some(reason) = self.missing.get(name) {
            return Resolved::NotLoaded(reason.clone());
        }
        if self.catalog.models.contains_key(name) {
            let placement = self.catalog.placement(name).describe();
            return Resolved::NotLoaded(format!("placed in {placement}; no live peer holds it warm"));
        }
        if !self.has_catalog {
            Resolved::NoCatalog
        } else {
            Resolved::UnknownModel
        }
    }

    /// Every live model of the catalog is loaded.
    pub fn ready(&self) -> bool {
        self.has_catalog && self.missing.is_empty()
    }

    /// Every loaded version, live first within each model.
    pub fn loaded(&self) -> impl Iterator<Item = (&Arc<LoadedModel>, bool)> {
        self.models.values().flat_map(|s| s.versions().map(move |m| (m, Arc::ptr_eq(m, &s.live))))
    }

    /// A loaded model matching `manifest` exactly, to reuse across catalogs.
    pub fn find(&self, manifest: &meridian_models::ModelManifest) -> Option<Arc<LoadedModel>> {
        self.loaded().map(|(m, _)| m).find(|m| m.is(manifest)).cloned()
    }
}
