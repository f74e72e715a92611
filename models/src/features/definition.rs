//! One input feature of a model, as its spec writes it: either just a name (a number the
//! request sends), or a table naming where it comes from, how it is transformed and its default.
//!
//! ```toml
//! features = [
//!   "mean_radius",
//!   { name = "age", view = "patients", transforms = [{ kind = "standardize", mean = 50.0, std = 12.0 }], default = 50.0 },
//!   { name = "country", view = "patients", transforms = [{ kind = "one_hot", categories = ["de", "fr"] }] },
//! ]
//! ```

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::transform::{width, Transform};
use super::value::FeatureValue;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feature {
    pub name: String,
    /// The feature view it is read from by entity; `None`: only the request supplies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
    /// Used when neither the request nor the store has the value (before transforms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<FeatureValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureTable {
    name: String,
    #[serde(default)]
    view: Option<String>,
    #[serde(default)]
    transforms: Vec<Transform>,
    #[serde(default)]
    default: Option<FeatureValue>,
}

impl Feature {
    pub fn plain(name: &str) -> Self {
        Feature { name: name.to_string(), view: None, transforms: Vec::new(), default: None }
    }

    /// Input columns this feature fills.
    pub fn width(&self) -> usize {
        width(&self.transforms)
    }

    /// Problems with the definition itself.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (i, t) in self.transforms.iter().enumerate() {
            if let Some(problem) = t.problems() {
                p.push(format!("feature {:?}: {problem}", self.name));
            }
            if t.is_encoding() && i + 1 != self.transforms.len() {
                p.push(format!("feature {:?}: one_hot and bucketize must be the last transform", self.name));
            }
        }
        p
    }
}

impl<'de> Deserialize<'de> for Feature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FeatureVisitor;
        impl<'de> Visitor<'de> for FeatureVisitor {
            type Value = Feature;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a feature name, or a table with `name` and optional `view`, `transforms`, `default`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Feature, E> {
                Ok(Feature::plain(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Feature, A::Error> {
                let t = FeatureTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Feature { name: t.name, view: t.view, transforms: t.transforms, default: t.default })
            }
        }
        d.deserialize_any(FeatureVisitor)
    }
}
