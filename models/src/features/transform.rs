//! Transforms applied to a feature before it enters the model, in the order listed. Numeric
//! transforms map a number to a number; `one_hot` and `bucketize` end the chain and decide how
//! many input columns the feature fills.

use serde::{Deserialize, Serialize};

use super::value::FeatureValue;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// (x - mean) / std
    Standardize { mean: f64, std: f64 },
    /// (x - min) / (max - min)
    MinMax { min: f64, max: f64 },
    /// ln(1 + x); x must be > -1
    Log1p,
    /// min(max(x, min), max)
    Clip { min: f64, max: f64 },
    /// One column per category: 1 for the value's category, 0 elsewhere (all 0 if unlisted).
    OneHot { categories: Vec<String> },
    /// The index of the bucket: the number of boundaries <= x (boundaries ascending).
    Bucketize { boundaries: Vec<f64> },
}

impl Transform {
    /// Problems with the transform's own parameters.
    pub fn problems(&self) -> Option<String> {
        match self {
            Transform::Standardize { std, .. } if !(std.is_finite() && *std > 0.0) => {
                Some(format!("standardize needs std > 0, got {std}"))
            }
            Transform::MinMax { min, max } | Transform::Clip { min, max }
                if min.partial_cmp(max) != Some(std::cmp::Ordering::Less) =>
            {
                Some(format!("needs min < max, got min {min}, max {max}"))
            }
            Transform::OneHot { categories } if categories.is_empty() => {
                Some("one_hot needs at least one category".to_string())
            }
            Transform::Bucketize { boundaries } if boundaries.windows(2).any(|w| w[0] >= w[1]) => {
                Some("bucketize boundaries must be strictly ascending".to_string())
            }
            _ => None,
        }
    }

    /// Whether the transform ends a chain (it encodes rather than maps a number).
    pub fn is_encoding(&self) -> bool {
        matches!(self, Transform::OneHot { .. } | Transform::Bucketize { .. })
    }
}

/// Columns a chain fills.
pub fn width(chain: &[Transform]) -> usize {
    match chain.last() {
        Some(Transform::OneHot { categories }) => categories.len(),
        _ => 1,
    }
}

/// Apply `chain` to `value`, writing `width(chain)` columns into `out`.
pub fn apply(chain: &[Transform], value: &FeatureValue, out: &mut [f32]) -> Result<(), String> {
    if let Some(Transform::OneHot { categories }) = chain.last() {
        let category = value.category();
        for (slot, c) in out.iter_mut().zip(categories) {
            *slot = if *c == category { 1.0 } else { 0.0 };
        }
        return Ok(());
    }
    let mut x = value.as_number().ok_or_else(|| format!("must be a number, got {value}"))?;
    for t in chain {
        x = match t {
            Transform::Standardize { mean, std } => (x - mean) / std,
            Transform::MinMax { min, max } => (x - min) / (max - min),
            Transform::Log1p if x > -1.0 => x.ln_1p(),
            Transform::Log1p => return Err(format!("log1p needs a value above -1, got {x}")),
            Transform::Clip { min, max } => x.clamp(*min, *max),
            Transform::Bucketize { boundaries } => boundaries.iter().filter(|b| **b <= x).count() as f64,
            Transform::OneHot { .. } => return Err("one_hot must be the last transform".to_string()),
        };
    }
    let x32 = x as f32;
    if !x32.is_finite() {
        return Err(format!("becomes {x}, which is not a finite 32-bit float"));
    }
    out[0] = x32;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chain: &[Transform], v: FeatureValue) -> Vec<f32> {
        let mut out = vec![f32::NAN; width(chain)];
        apply(chain, &v, &mut out).unwrap();
        out
    }

    #[test]
    fn transforms_match_values_computed_by_hand() {
        use FeatureValue::Number as N;
        assert_eq!(run(&[Transform::Standardize { mean: 10.0, std: 4.0 }], N(18.0)), vec![2.0]);
        assert_eq!(run(&[Transform::MinMax { min: 0.0, max: 200.0 }], N(50.0)), vec![0.25]);
        assert_eq!(run(&[Transform::Log1p], N(std::f64::consts::E - 1.0)), vec![1.0]);
        assert_eq!(run(&[Transform::Clip { min: 0.0, max: 1.0 }], N(7.0)), vec![1.0]);
        let buckets = Transform::Bucketize { boundaries: vec![18.0, 35.0, 65.0] };
        assert_eq!(run(std::slice::from_ref(&buckets), N(17.0)), vec![0.0]);
        assert_eq!(run(std::slice::from_ref(&buckets), N(35.0)), vec![2.0]);
        assert_eq!(run(std::slice::from_ref(&buckets), N(90.0)), vec![3.0]);
        let one_hot = Transform::OneHot { categories: vec!["de".into(), "fr".into(), "us".into()] };
        assert_eq!(run(std::slice::from_ref(&one_hot), FeatureValue::Text("fr".into())), vec![0.0, 1.0, 0.0]);
        assert_eq!(run(std::slice::from_ref(&one_hot), FeatureValue::Text("jp".into())), vec![0.0, 0.0, 0.0]);
        // Chains apply in order: clip, then log1p, then standardize.
        let chain = [
            Transform::Clip { min: 0.0, max: 99.0 },
            Transform::Log1p,
            Transform::Standardize { mean: 1.0, std: 2.0 },
        ];
        let expected = ((1.0f64 + 99.0).ln() - 1.0) / 2.0;
        assert!((run(&chain, N(1e6))[0] as f64 - expected).abs() < 1e-6);
    }

    #[test]
    fn invalid_values_and_parameters_are_reported() {
        let mut out = [0.0];
        assert!(apply(&[Transform::Log1p], &FeatureValue::Number(-2.0), &mut out).is_err());
        assert!(apply(&[], &FeatureValue::Text("x".into()), &mut out).unwrap_err().contains("number"));
        assert!(Transform::Standardize { mean: 0.0, std: 0.0 }.problems().is_some());
        assert!(Transform::Bucketize { boundaries: vec![2.0, 1.0] }.problems().is_some());
        assert!(Transform::Clip { min: 1.0, max: 1.0 }.problems().is_some());
    }
}
