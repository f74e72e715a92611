//! The bundled demo models load in tract and reproduce onnxruntime's reference outputs.
#![allow(clippy::unwrap_used)]

use meridian_models::demo::DEMO_MODELS;
use meridian_models::runtime::tract::TractRuntime;
use meridian_models::{InputBatch, ModelSpec, Runtime, TensorData};
use serde_json::Value;

fn reference_rows(spec: &ModelSpec, reference: &Value) -> (usize, Vec<f32>) {
    let rows = reference["rows"].as_array().unwrap();
    let mut values = Vec::new();
    for row in rows {
        for f in &spec.features {
            values.push(row[&f.name].as_f64().unwrap() as f32);
        }
    }
    (rows.len(), values)
}

#[test]
fn demo_models_match_onnxruntime_reference_outputs() {
    for demo in DEMO_MODELS {
        let spec = ModelSpec::parse(demo.spec).unwrap();
        let runtime = TractRuntime::load(demo.onnx).unwrap();
        spec.validate(runtime.signature()).unwrap();
        let reference: Value = serde_json::from_str(demo.reference).unwrap();
        let (rows, values) = reference_rows(&spec, &reference);
        let out = runtime.run(&InputBatch::new(rows, spec.width(), values).unwrap()).unwrap();
        for (name, expected) in reference["outputs"].as_object().unwrap() {
            let tensor = out.tensor(name).unwrap_or_else(|| panic!("{}: no output {name}", demo.name));
            let expected: Vec<f64> = expected
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|v| match v {
                    Value::Array(inner) => inner.iter().map(|x| x.as_f64().unwrap()).collect(),
                    x => vec![x.as_f64().unwrap()],
                })
                .collect();
            let got: Vec<f64> = match &tensor.data {
                TensorData::F32(v) => v.iter().map(|x| f64::from(*x)).collect(),
                TensorData::I64(v) => v.iter().map(|x| *x as f64).collect(),
                other => panic!("unexpected output type {other:?}"),
            };
            assert_eq!(got.len(), expected.len(), "{}: {name}", demo.name);
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() <= 1e-5 * e.abs().max(1.0), "{}: {name}: {g} vs {e}", demo.name);
            }
        }
    }
}

#[test]
fn corrupt_bytes_are_refused_with_the_loader_message() {
    let err = TractRuntime::load(b"definitely not onnx").unwrap_err();
    assert!(err.to_string().starts_with("the artifact does not load as ONNX"), "{err}");
    let mut truncated = DEMO_MODELS[1].onnx.to_vec();
    truncated.truncate(truncated.len() / 2);
    assert!(TractRuntime::load(&truncated).is_err());
}

#[test]
fn any_batch_size_runs_and_wrong_width_is_refused() {
    let runtime = TractRuntime::load(DEMO_MODELS[1].onnx).unwrap();
    for rows in [1, 7, 64, 1000] {
        let out = runtime.run(&InputBatch::new(rows, 30, vec![0.5; rows * 30]).unwrap()).unwrap();
        assert_eq!(out.tensor("probabilities").unwrap().shape, vec![rows, 2]);
    }
    let err = runtime.run(&InputBatch::new(1, 29, vec![0.0; 29]).unwrap()).unwrap_err();
    assert!(err.to_string().contains("29 columns"), "{err}");
}
