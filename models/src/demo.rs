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
