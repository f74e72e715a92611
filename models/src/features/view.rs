//! Feature views, in Feast's vocabulary: features of one entity (looked up by its join key,
//! e.g. `patient_id`), with types and a time to live.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::value::FeatureValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureType {
    Float,
    Int,
    Bool,
    String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureView {
    pub name: String,
    /// The entity's join key: the field of a predict request's `entity` that selects the row.
    pub entity: String,
    pub features: BTreeMap<String, FeatureType>,
    /// A stored row older than this is treated as absent.
    pub ttl_secs: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn name_ok(s: &str) -> bool {
    crate::spec::is_safe_name(s, 128)
}

impl FeatureView {
    /// Every problem with the definition.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !name_ok(&self.name) {
            p.push(format!(
                "view name {:?} must be 1-128 letters, digits, '-', '_' or '.', not starting with '.'",
                self.name
            ));
        }
        if !name_ok(&self.entity) {
            p.push(format!("entity key {:?} must be 1-128 letters, digits, '-', '_' or '.'", self.entity));
        }
        if self.features.is_empty() {
            p.push("a view needs at least one feature".to_string());
        }
        if self.ttl_secs == 0 {
            p.push("ttl_secs must be positive".to_string());
        }
        p
    }

    /// Check and normalise one written value against the view's types.
    pub fn check(&self, feature: &str, value: &serde_json::Value) -> Result<FeatureValue, String> {
        let ty = self
            .features
            .get(feature)
            .ok_or_else(|| format!("view {:?} has no feature {feature:?}", self.name))?;
        let bad = || format!("feature {feature:?} must be {}, got {value}", format!("{ty:?}").to_lowercase());
        match (ty, value) {
            // Models take f32: a value beyond its range would break every prediction that
            // reads it, so it is refused at the write.
            (FeatureType::Float, serde_json::Value::Number(n)) => match n.as_f64() {
                Some(x) if x.is_finite() && (x as f32).is_finite() => Ok(FeatureValue::Number(x)),
                Some(x) if x.is_finite() => {
                    Err(format!("feature {feature:?} is {x}, beyond the range of a 32-bit float (±3.4e38)"))
                }
                _ => Err(bad()),
            },
            (FeatureType::Int, serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => {
                Ok(FeatureValue::Number(n.as_f64().unwrap_or_default()))
            }
            (FeatureType::Bool, serde_json::Value::Bool(b)) => {
                Ok(FeatureValue::Number(f64::from(u8::from(*b))))
            }
            (FeatureType::String, serde_json::Value::String(s)) => Ok(FeatureValue::Text(s.clone())),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn written_values_are_checked_against_the_view_types() {
        let view = FeatureView {
            name: "users".into(),
            entity: "user_id".into(),
            features: [("age".to_string(), FeatureType::Int), ("score".to_string(), FeatureType::Float)]
                .into_iter()
                .collect(),
            ttl_secs: 60,
            description: String::new(),
        };
        assert_eq!(view.check("age", &json!(30)).unwrap(), FeatureValue::Number(30.0));
        assert!(view.check("age", &json!(30.5)).is_err());
        assert!(view.check("score", &json!("x")).unwrap_err().contains("must be float"));
        // The value is quoted as sent.
        assert!(view.check("score", &json!("NaN")).unwrap_err().contains("got \"NaN\""));
        assert!(
            view.check("score", &json!(1e300)).unwrap_err().contains("32-bit float"),
            "it broke predictions"
        );
        assert_eq!(view.check("score", &json!(-3e38)).unwrap(), FeatureValue::Number(-3e38));
        assert!(view.check("height", &json!(1)).unwrap_err().contains("no feature \"height\""));
        assert!(view.problems().is_empty());
    }
}
