//! Feature values: numbers, or categories for one-hot encoding.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureValue {
    Number(f64),
    Text(String),
}

impl FeatureValue {
    /// A value from JSON: a finite number, a string or a bool (as 0/1); else `None`.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::Number(n) => n.as_f64().filter(|x| x.is_finite()).map(FeatureValue::Number),
            serde_json::Value::String(s) => Some(FeatureValue::Text(s.clone())),
            serde_json::Value::Bool(b) => Some(FeatureValue::Number(f64::from(u8::from(*b)))),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            FeatureValue::Number(x) => Some(*x),
            FeatureValue::Text(_) => None,
        }
    }

    /// The category a one-hot encoding compares: the string, or the number's shortest form.
    pub fn category(&self) -> String {
        match self {
            FeatureValue::Number(x) => x.to_string(),
            FeatureValue::Text(s) => s.clone(),
        }
    }
}

impl std::fmt::Display for FeatureValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeatureValue::Number(x) => write!(f, "{x}"),
            FeatureValue::Text(s) => write!(f, "{s:?}"),
        }
    }
}
