//! Push validation: a model is stored only if tract loads it, its spec fits its graph, and it
//! runs on a sample row. CPU-heavy: callers run it off the async executor.

use meridian_models::interpret::predictions;
use meridian_models::runtime::tract::TractRuntime;
use meridian_models::spec::validate_model_name;
use meridian_models::{InputBatch, ModelSpec, Runtime, Signature};

use super::RegistryError;

/// What validation learned about a pushed artifact.
#[derive(Debug)]
pub struct Validated {
    pub spec: ModelSpec,
    pub signature: Signature,
}

pub fn validate_push(name: &str, spec_text: &str, artifact: &[u8]) -> Result<Validated, RegistryError> {
    let invalid = |e: meridian_models::ModelError| RegistryError::Invalid(e.to_string());
    validate_model_name(name).map_err(invalid)?;
    let spec = ModelSpec::parse(spec_text).map_err(invalid)?;
    if let Some(spec_name) = &spec.name {
        if spec_name != name {
            return Err(RegistryError::Invalid(format!(
                "the spec is for model {spec_name:?} but it is pushed as {name:?}"
            )));
        }
    }
    if artifact.is_empty() {
        return Err(RegistryError::Invalid("the artifact is empty".to_string()));
    }
    let runtime = TractRuntime::load(artifact).map_err(invalid)?;
    spec.validate(runtime.signature()).map_err(invalid)?;
    // A sample row of zeros (the standardized mean for most tabular models) must run and
    // produce something the spec can read.
    let width = spec.width();
    let sample = InputBatch::new(1, width, vec![0.0; width]).map_err(invalid)?;
    let out = runtime
        .run(&sample)
        .map_err(|e| RegistryError::Invalid(format!("the model fails on a sample row: {e}")))?;
    predictions(&spec.output, &out)
        .map_err(|e| RegistryError::Invalid(format!("the model's outputs do not fit its spec: {e}")))?;
    Ok(Validated { spec, signature: runtime.signature().clone() })
}
