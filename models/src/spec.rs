//! The feature spec: the file (`model.toml` or JSON) pushed beside the ONNX artifact that says
//! which named features make the input columns, in order, and what the outputs mean.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::features::Feature;
use crate::signature::{DType, Signature};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model name; must match the name it is pushed under when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The input columns, in order: each feature fills one column (or several, one-hot).
    pub features: Vec<Feature>,
    pub output: OutputSpec,
    /// Offline metrics measured by whoever trained the model (e.g. `accuracy`, `r2`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// What the model's outputs mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputSpec {
    /// An output of class probabilities `[batch, classes]`. `prediction` is the probability of
    /// `positive_class` for a binary model, else the most likely class index; `confidence` is
    /// the largest probability.
    Classifier {
        probabilities: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        classes: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        positive_class: Option<usize>,
    },
    /// A real-valued output `[batch]` or `[batch, 1]`; `prediction` is the value.
    Regressor { value: String },
}

/// Names are used in URLs, file names and metric labels.
/// Whether `name` is safe as a URL path segment, a file name and a metric label: 1 to `max`
/// letters, digits, '-', '_' or '.', not starting with '.' (`.` and `..` cannot be path
/// segments). Models, views, experiments, regions and certificate names all follow it.
pub fn is_safe_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub fn validate_model_name(name: &str) -> Result<(), ModelError> {
    if is_safe_name(name, 128) {
        Ok(())
    } else {
        Err(ModelError::Spec(format!(
            "model name {name:?} must be 1-128 characters of a-z, A-Z, 0-9, '-', '_', '.' and not start with '.'"
        )))
    }
}

impl ModelSpec {
    /// Parse a spec from TOML, or JSON when the text starts with `{`.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| ModelError::Spec(e.to_string()))
        } else {
            toml::from_str(text).map_err(|e| ModelError::Spec(e.to_string()))
        }
    }

    /// Input columns the features fill.
    pub fn width(&self) -> usize {
        self.features.iter().map(Feature::width).sum()
    }

    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }

    /// The feature views the spec reads from.
    pub fn views(&self) -> std::collections::BTreeSet<&str> {
        self.features.iter().filter_map(|f| f.view.as_deref()).collect()
    }

    /// Check the spec against itself and against the graph's signature; report every problem.
    pub fn validate(&self, signature: &Signature) -> Result<(), ModelError> {
        let mut problems = Vec::new();
        let width = signature.input_width();
        if self.width() != width {
            problems.push(format!(
                "the spec's {} features fill {} columns but the model input has {width} columns",
                self.features.len(),
                self.width()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.features {
            if f.name.is_empty() {
                problems.push("a feature name is empty".to_string());
            } else if !seen.insert(f.name.as_str()) {
                problems.push(format!("feature {:?} is listed twice", f.name));
            }
            problems.extend(f.problems());
        }
        self.validate_output(signature, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Spec(problems.join("; ")))
        }
    }

    fn validate_output(&self, signature: &Signature, problems: &mut Vec<String>) {
        let (name, what) = match &self.output {
            OutputSpec::Classifier { probabilities, .. } => (probabilities, "probabilities"),
            OutputSpec::Regressor { value } => (value, "value"),
        };
        let Some(out) = signature.output(name) else {
            let names: Vec<_> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
            problems.push(format!(
                "output.{what} names {name:?}, which the model does not have (outputs: {names:?})"
            ));
            return;
        };
        if out.dtype != DType::Fp32 {
            problems.push(format!("output {name:?} must be FP32, the model makes {:?}", out.dtype));
        }
        if let OutputSpec::Classifier { classes, positive_class, .. } = &self.output {
            let n = out.shape.get(1).copied().flatten();
            if out.shape.len() != 2 {
                problems.push(format!("probabilities output {name:?} must be [batch, classes]"));
            }
            if let (Some(n), false) = (n, classes.is_empty()) {
                if n != classes.len() {
                    problems.push(format!("{} class names for {n} probability columns", classes.len()));
                }
            }
            if let (Some(n), Some(p)) = (n, positive_class) {
                if *p >= n {
                    problems.push(format!("positive_class {p} is not below the {n} classes"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::TensorInfo;

    fn sig(width: usize) -> Signature {
        Signature {
            inputs: vec![TensorInfo {
                name: "input".into(),
                dtype: DType::Fp32,
                shape: vec![None, Some(width)],
            }],
            outputs: vec![TensorInfo {
                name: "probabilities".into(),
                dtype: DType::Fp32,
                shape: vec![None, Some(2)],
            }],
        }
    }

    #[test]
    fn spec_reports_every_problem_at_once() {
        let spec = ModelSpec::parse(
            r#"features = ["a", "a"]
               [output]
               kind = "classifier"
               probabilities = "probs"
            "#,
        )
        .unwrap();
        let err = spec.validate(&sig(3)).unwrap_err().to_string();
        assert!(err.contains("fill 2 columns but the model input has 3"), "{err}");
        assert!(err.contains("listed twice"), "{err}");
        assert!(err.contains("\"probs\""), "{err}");
    }

    #[test]
    fn json_and_toml_specs_parse_alike() {
        let toml =
            ModelSpec::parse("features=[\"x\",\"y\"]\n[output]\nkind=\"regressor\"\nvalue=\"v\"\n").unwrap();
        let json =
            ModelSpec::parse(r#"{"features":["x","y"],"output":{"kind":"regressor","value":"v"}}"#).unwrap();
        assert_eq!(toml, json);
    }

    #[test]
    fn unknown_spec_fields_are_refused() {
        let err = ModelSpec::parse("features=[]\nfeatrues=[]\n[output]\nkind=\"regressor\"\nvalue=\"v\"\n");
        assert!(err.unwrap_err().to_string().contains("featrues"));
    }

    #[test]
    fn model_names_are_path_safe() {
        assert!(validate_model_name("breast-cancer-mlp").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(validate_model_name(bad).is_err(), "{bad}");
        }
    }
}
