//! The demo models bundled in the binary (built by `models/demo/generate.py`), so that
//! `meridian up` works from any directory and tests share one set of fixtures.

/// One bundled model: its ONNX bytes, its feature spec and onnxruntime's reference outputs.
#[derive(Debug, Clone, Copy)]
pub struct DemoModel {
    pub name: &'static str,
    pub onnx: &'static [u8],
    pub spec: &'static str,
    pub reference: &'static str,
}

macro_rules! demo {
    ($name:literal) => {
        DemoModel {
            name: $name,
            onnx: include_bytes!(concat!("../demo/", $name, "/model.onnx")),
            spec: include_str!(concat!("../demo/", $name, "/model.toml")),
            reference: include_str!(concat!("../demo/", $name, "/reference.json")),
        }
    };
}

pub const DEMO_MODELS: &[DemoModel] =
    &[demo!("breast-cancer-logreg"), demo!("breast-cancer-mlp"), demo!("diabetes-ridge")];

/// A bundled model by name.
pub fn demo_model(name: &str) -> Option<&'static DemoModel> {
    DEMO_MODELS.iter().find(|m| m.name == name)
}

/// Every breast-cancer row as an entity (`patient_id` p0..p568), in CSV with a header row.
pub const PATIENTS_CSV: &str = include_str!("../demo/patients.csv");

/// The feature view of the demo patients: every breast-cancer feature, by `patient_id`.
pub fn patients_view() -> crate::features::FeatureView {
    let header = PATIENTS_CSV.lines().next().unwrap_or_default();
    crate::features::FeatureView {
        name: "patients".to_string(),
        entity: "patient_id".to_string(),
        features: header
            .split(',')
            .skip(1)
            .map(|f| (f.to_string(), crate::features::FeatureType::Float))
            .collect(),
        ttl_secs: 30 * 24 * 3600,
        description: "Wisconsin breast cancer measurements per patient (demo)".to_string(),
    }
}

/// A demo spec whose features are read from the `patients` view (requests may still send
/// them, and then override the stored values).
pub fn reading_patients(spec: &crate::ModelSpec) -> crate::ModelSpec {
    let mut spec = spec.clone();
    for f in &mut spec.features {
        f.view = Some("patients".to_string());
    }
    spec
}
