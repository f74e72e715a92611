//! The catalog: what should be live, everywhere. Control is its only writer; every change
//! bumps `epoch`, and a node adopts a catalog only when its epoch is newer than the one it has.

use std::collections::{BTreeMap, BTreeSet};

use meridian_models::features::FeatureView;
use meridian_models::ModelManifest;

use crate::experiment::Experiment;
use crate::keys::KeyEntry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Incremented by control on every change; 0 is the empty catalog nobody published.
    pub epoch: u64,
    /// Live models by name.
    pub models: BTreeMap<String, CatalogEntry>,
    /// Feature views by name: what nodes read from the feature store by entity.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub views: BTreeMap<String, FeatureView>,
    /// Running experiments by model name (at most one per model).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub experiments: BTreeMap<String, Experiment>,
    /// Active API keys by id (hashes only): nodes authenticate requests against them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, KeyEntry>,
    /// Ids of revoked keys: refused as revoked rather than merely unknown.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub revoked_keys: BTreeSet<String>,
    /// Where each model is loaded, by model name; a model not listed is loaded everywhere.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placements: BTreeMap<String, Placement>,
}

/// Which nodes load a model. A node that does not load it forwards its requests to the nearest
/// live node that does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Placement {
    /// Every node (the default).
    #[default]
    All,
    /// Nodes in these regions only.
    Regions { regions: BTreeSet<String> },
    /// No node preloads it; a node loads it at its first request that no peer can serve.
    OnDemand,
}

impl Placement {
    /// Whether a node in `region` loads the model when it adopts the catalog.
    pub fn preloads(&self, region: &str) -> bool {
        match self {
            Placement::All => true,
            Placement::Regions { regions } => regions.contains(region),
            Placement::OnDemand => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Placement::All => "all regions".into(),
            Placement::Regions { regions } => {
                format!("regions {}", regions.iter().cloned().collect::<Vec<_>>().join(", "))
            }
            Placement::OnDemand => "on demand".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The version that answers requests.
    pub live: ModelManifest,
    /// The version deployed before `live`: nodes keep it loaded so a rollback is instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ModelManifest>,
    /// Other versions a running experiment needs loaded (its arms and shadow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ModelManifest>,
}

impl CatalogEntry {
    /// The manifests a node should hold for this entry, live first.
    pub fn manifests(&self) -> impl Iterator<Item = &ModelManifest> {
        std::iter::once(&self.live).chain(self.previous.as_ref()).chain(&self.extra)
    }

    /// The manifest of `version` if this entry holds it.
    pub fn version(&self, version: u32) -> Option<&ModelManifest> {
        self.manifests().find(|m| m.version == version)
    }
}

impl Catalog {
    /// Where `model` is loaded.
    pub fn placement(&self, model: &str) -> Placement {
        self.placements.get(model).cloned().unwrap_or_default()
    }

    /// Whether a node holding `self` should adopt `other`.
    pub fn is_superseded_by(&self, other: &Catalog) -> bool {
        other.epoch > self.epoch
    }

    /// sha256 of the canonical JSON encoding (maps are ordered): two nodes agree on the
    /// catalog exactly when their digests are equal.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }

    /// Every artifact digest the catalog references, deduplicated.
    pub fn artifact_digests(&self) -> std::collections::BTreeSet<&str> {
        self.models.values().flat_map(CatalogEntry::manifests).map(|m| m.digest.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_models::{ModelSpec, OutputSpec, Signature};

    fn manifest(version: u32, digest: &str) -> ModelManifest {
        ModelManifest {
            name: "m".into(),
            version,
            digest: digest.into(),
            format: "onnx".into(),
            signature: Signature { inputs: vec![], outputs: vec![] },
            spec: ModelSpec {
                name: None,
                description: String::new(),
                features: vec![meridian_models::features::Feature::plain("x")],
                output: OutputSpec::Regressor { value: "v".into() },
                metrics: Default::default(),
            },
        }
    }

    #[test]
    fn newer_epoch_supersedes_and_digest_tracks_content() {
        let mut a = Catalog::default();
        a.models.insert(
            "m".into(),
            CatalogEntry { live: manifest(2, "d2"), previous: Some(manifest(1, "d1")), extra: vec![] },
        );
        a.epoch = 3;
        let mut b = a.clone();
        assert_eq!(a.digest(), b.digest());
        assert!(!a.is_superseded_by(&b));
        b.epoch = 4;
        assert!(a.is_superseded_by(&b));
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.artifact_digests().into_iter().collect::<Vec<_>>(), vec!["d1", "d2"]);
        assert_eq!(a.models["m"].version(1).map(|m| m.digest.as_str()), Some("d1"));
    }
}
