//! One input row from request features and stored features: request values override stored
//! ones, then the spec's default applies; a value that is nowhere and has no default is an error
//! that names the feature.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::definition::Feature;
use super::transform::apply;
use super::value::FeatureValue;

#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    pub values: Vec<f32>,
    /// Features that took the spec's default, in spec order.
    pub defaulted: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AssembleError {
    /// Request features the model does not take.
    Unknown(Vec<String>),
    /// Features with no value anywhere and no default.
    Missing(Vec<String>),
    /// A value of the wrong type or out of range.
    Invalid(String),
}

/// Names for an error message, bounded: the first 20, each cut at 64 characters, then how
/// many more (a request with 100,000 unknown names must not get them all back).
pub fn short_list<S: AsRef<str>>(names: &[S]) -> String {
    const SHOWN: usize = 20;
    let cut = |s: &str| match s.char_indices().nth(64) {
        Some((at, _)) => format!("{:?}…", &s[..at]),
        None => format!("{s:?}"),
    };
    let mut out: Vec<String> = names.iter().take(SHOWN).map(|n| cut(n.as_ref())).collect();
    if names.len() > SHOWN {
        out.push(format!("… and {} more", names.len() - SHOWN));
    }
    format!("[{}]", out.join(", "))
}

impl std::fmt::Display for AssembleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssembleError::Unknown(names) => write!(f, "unknown features {}", short_list(names)),
            AssembleError::Missing(names) => {
                write!(f, "missing features {} (no value and no default)", short_list(names))
            }
            AssembleError::Invalid(msg) => f.write_str(msg),
        }
    }
}

/// Assemble one row of `width` columns. `stored(view, feature)` answers from the feature store.
pub fn assemble_row(
    features: &[Feature],
    width: usize,
    request: &Map<String, Value>,
    stored: impl Fn(&str, &str) -> Option<FeatureValue>,
) -> Result<Assembled, AssembleError> {
    if request.len() > features.len() || request.keys().any(|k| !features.iter().any(|f| &f.name == k)) {
        let known: HashSet<&str> = features.iter().map(|f| f.name.as_str()).collect();
        let unknown: Vec<String> = request.keys().filter(|k| !known.contains(k.as_str())).cloned().collect();
        if !unknown.is_empty() {
            return Err(AssembleError::Unknown(unknown));
        }
    }
    assemble(features, width, stored, |f: &Feature| match request.get(&f.name) {
        Some(v) => FeatureValue::from_json(v).map(Some).ok_or_else(|| {
            AssembleError::Invalid(format!(
                "feature {:?} must be a finite number or a category, got {v}",
                f.name
            ))
        }),
        None => Ok(None),
    })
}

/// Assemble one row from values given by position (`given[i]` is `features[i]`'s value, as a
/// file reader produces them): the same rules as [`assemble_row`] without a JSON map per row.
pub fn assemble_values(
    features: &[Feature],
    width: usize,
    given: &[Option<FeatureValue>],
    stored: impl Fn(&str, &str) -> Option<FeatureValue>,
) -> Result<Assembled, AssembleError> {
    let mut at = 0;
    assemble(features, width, stored, |_| {
        let v = given.get(at).cloned().flatten();
        at += 1;
        Ok(v)
    })
}

/// `given(feature)` is called once per feature, in spec order.
fn assemble(
    features: &[Feature],
    width: usize,
    stored: impl Fn(&str, &str) -> Option<FeatureValue>,
    mut given: impl FnMut(&Feature) -> Result<Option<FeatureValue>, AssembleError>,
) -> Result<Assembled, AssembleError> {
    let mut values = vec![0.0f32; width];
    let mut defaulted = Vec::new();
    let mut missing = Vec::new();
    let mut at = 0;
    for f in features {
        let w = f.width();
        let value = match given(f)? {
            Some(v) => Some(v),
            None => f.view.as_deref().and_then(|view| stored(view, &f.name)),
        };
        let value = match (value, &f.default) {
            (Some(v), _) => v,
            (None, Some(d)) => {
                defaulted.push(f.name.clone());
                d.clone()
            }
            (None, None) => {
                missing.push(f.name.clone());
                at += w;
                continue;
            }
        };
        let out = values
            .get_mut(at..at + w)
            .ok_or_else(|| AssembleError::Invalid("spec wider than input".into()))?;
        apply(&f.transforms, &value, out)
            .map_err(|e| AssembleError::Invalid(format!("feature {:?} {e}", f.name)))?;
        at += w;
    }
    if missing.is_empty() {
        Ok(Assembled { values, defaulted })
    } else {
        Err(AssembleError::Missing(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Transform;
    use serde_json::json;

    fn spec() -> Vec<Feature> {
        vec![
            Feature::plain("x"),
            Feature {
                name: "age".into(),
                view: Some("users".into()),
                transforms: vec![Transform::Standardize { mean: 40.0, std: 10.0 }],
                default: Some(FeatureValue::Number(40.0)),
            },
            Feature {
                name: "country".into(),
                view: Some("users".into()),
                transforms: vec![Transform::OneHot { categories: vec!["de".into(), "fr".into()] }],
                default: None,
            },
        ]
    }

    #[test]
    fn request_overrides_store_then_default_applies() {
        let store = |_: &str, f: &str| match f {
            "age" => Some(FeatureValue::Number(60.0)),
            "country" => Some(FeatureValue::Text("fr".into())),
            _ => None,
        };
        let req = json!({"x": 1.5}).as_object().unwrap().clone();
        let row = assemble_row(&spec(), 4, &req, store).unwrap();
        assert_eq!(row.values, vec![1.5, 2.0, 0.0, 1.0]);
        assert!(row.defaulted.is_empty());
        let req = json!({"x": 1.5, "age": 30}).as_object().unwrap().clone();
        assert_eq!(assemble_row(&spec(), 4, &req, store).unwrap().values[1], -1.0);
        let only_country = |_: &str, f: &str| (f == "country").then(|| FeatureValue::Text("de".into()));
        let row =
            assemble_row(&spec(), 4, &json!({"x": 0}).as_object().unwrap().clone(), only_country).unwrap();
        assert_eq!(row.values, vec![0.0, 0.0, 1.0, 0.0]);
        assert_eq!(row.defaulted, vec!["age"]);
    }

    #[test]
    fn error_lists_are_bounded() {
        let many: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
        let text = AssembleError::Unknown(many).to_string();
        assert!(text.contains("\"f19\", … and 980 more") && !text.contains("f20"), "{text}");
        let long = ["x".repeat(10_000)];
        assert!(short_list(&long).len() < 80);
    }

    #[test]
    fn unknown_missing_and_invalid_are_named() {
        let none = |_: &str, _: &str| None;
        let req = json!({"x": 1, "y": 2}).as_object().unwrap().clone();
        assert_eq!(assemble_row(&spec(), 4, &req, none), Err(AssembleError::Unknown(vec!["y".into()])));
        let req = json!({}).as_object().unwrap().clone();
        assert_eq!(
            assemble_row(&spec(), 4, &req, none),
            Err(AssembleError::Missing(vec!["x".into(), "country".into()]))
        );
        let req = json!({"x": "big", "country": "de"}).as_object().unwrap().clone();
        assert!(
            matches!(assemble_row(&spec(), 4, &req, none), Err(AssembleError::Invalid(m)) if m.contains("\"x\""))
        );
    }

    #[test]
    fn values_by_position_assemble_like_the_json_form() {
        let none = |_: &str, _: &str| None;
        let given = [Some(FeatureValue::Number(1.5)), None, Some(FeatureValue::Text("fr".into()))];
        let by_position = assemble_values(&spec(), 4, &given, none).unwrap();
        let req = json!({"x": 1.5, "country": "fr"}).as_object().unwrap().clone();
        assert_eq!(by_position, assemble_row(&spec(), 4, &req, none).unwrap());
        assert_eq!(by_position.defaulted, vec!["age"]);
        assert_eq!(
            assemble_values(&spec(), 4, &[None, None, None], none),
            Err(AssembleError::Missing(vec!["x".into(), "country".into()]))
        );
    }
}
