//! From output tensors to what the seed API answers: `prediction` and `confidence` per row.

use serde::Serialize;

use crate::error::ModelError;
use crate::runtime::{OutputBatch, TensorData};
use crate::spec::OutputSpec;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    pub prediction: f64,
    /// The largest class probability; absent for regressors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The most likely class index (classifiers), for scoring labelled feedback.
    #[serde(skip)]
    pub class: Option<usize>,
}

fn f32_output<'a>(batch: &'a OutputBatch, name: &str) -> Result<(&'a [f32], usize), ModelError> {
    let t =
        batch.tensor(name).ok_or_else(|| ModelError::Run(format!("the model made no output {name:?}")))?;
    let TensorData::F32(data) = &t.data else {
        return Err(ModelError::Run(format!("output {name:?} is not FP32")));
    };
    let per_row: usize = t.shape.iter().skip(1).product();
    if per_row == 0 || data.len() != per_row * batch.rows {
        return Err(ModelError::Run(format!("output {name:?} has shape {:?}", t.shape)));
    }
    Ok((data, per_row))
}

/// One [`Prediction`] per row of `batch`, read as `spec` says.
pub fn predictions(spec: &OutputSpec, batch: &OutputBatch) -> Result<Vec<Prediction>, ModelError> {
    match spec {
        OutputSpec::Regressor { value } => {
            let (data, per_row) = f32_output(batch, value)?;
            Ok(data
                .chunks(per_row)
                .map(|row| Prediction { prediction: f64::from(row[0]), confidence: None, class: None })
                .collect())
        }
        OutputSpec::Classifier { probabilities, positive_class, .. } => {
            let (data, classes) = f32_output(batch, probabilities)?;
            Ok(data.chunks(classes).map(|row| classify(row, *positive_class)).collect())
        }
    }
}

fn classify(probs: &[f32], positive_class: Option<usize>) -> Prediction {
    let (best, max) =
        probs
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc });
    let prediction = match (positive_class, probs.len()) {
        (Some(p), _) => f64::from(probs[p]),
        (None, 2) => f64::from(probs[1]),
        (None, _) => best as f64,
    };
    Prediction { prediction, confidence: Some(f64::from(max)), class: Some(best) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::OutputTensor;

    fn probs(rows: Vec<f32>) -> OutputBatch {
        OutputBatch {
            rows: rows.len() / 2,
            tensors: vec![OutputTensor {
                name: "p".into(),
                shape: vec![rows.len() / 2, 2],
                data: TensorData::F32(rows),
            }],
        }
    }

    #[test]
    fn binary_classifier_predicts_positive_probability_with_max_confidence() {
        let spec =
            OutputSpec::Classifier { probabilities: "p".into(), classes: vec![], positive_class: Some(1) };
        let out = predictions(&spec, &probs(vec![0.2, 0.8, 0.9, 0.1])).unwrap();
        assert!((out[0].prediction - 0.8).abs() < 1e-6 && (out[0].confidence.unwrap() - 0.8).abs() < 1e-6);
        assert!((out[1].prediction - 0.1).abs() < 1e-6 && (out[1].confidence.unwrap() - 0.9).abs() < 1e-6);
    }

    #[test]
    fn missing_output_is_an_error_not_a_panic() {
        let spec = OutputSpec::Regressor { value: "v".into() };
        assert!(predictions(&spec, &probs(vec![0.5, 0.5])).is_err());
    }
}
