//! The GPU runtime against tract: every bundled model and randomised graphs of the covered
//! operators, on fresh random inputs of 1, 7, 8, 9, 64 and 1,000 rows, with every activation buffer
//! poisoned with NaN before each batch so an element a kernel fails to write shows.
//!
//! These run on whatever adapter there is, software ones included (Mesa's lavapipe in CI).
//! Without any adapter they print that they were skipped, unless `MERIDIAN_REQUIRE_GPU` is set
//! (as `deploy/test.sh` sets it), and then they fail.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use meridian_models::onnx_build::{Attr, GraphBuilder, FLOAT, INT64};
use meridian_models::runtime::gpu::{GpuContext, GpuModelOptions, GpuOptions, GpuRuntime, MatmulTile};
use meridian_models::runtime::select::{compare, select, RuntimeMode};
use meridian_models::runtime::tract::TractRuntime;
use meridian_models::{demo, InputBatch, ModelError, ModelSpec, Runtime};

/// The sizes, and 8 and 9, which straddle the switch from the skinny matmul kernel
/// (products of at most 8 rows) to the tiled one.
const BATCHES: [usize; 6] = [1, 7, 8, 9, 64, 1000];

fn context() -> Option<Arc<GpuContext>> {
    let ctx = GpuContext::open(GpuOptions { allow_software: true }).unwrap();
    if ctx.is_none() {
        assert!(
            std::env::var_os("MERIDIAN_REQUIRE_GPU").is_none(),
            "MERIDIAN_REQUIRE_GPU is set but there is no GPU adapter (install mesa-vulkan-drivers for lavapipe)"
        );
        eprintln!(
            "SKIPPED: no GPU adapter (not even a software one); install mesa-vulkan-drivers to run this"
        );
    }
    if let Some(ctx) = &ctx {
        eprintln!("adapter: {}", ctx.describe());
    }
    ctx
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
}

const POISON: GpuModelOptions = GpuModelOptions { max_rows: 8192, poison: true, matmul: MatmulTile::Auto };

/// Load `onnx` on tract and on the GPU, once with each tiled matmul kernel (products of more
/// than 8 rows), and compare them on random batches of every size; column `c` of an input is
/// uniform in `±scales[c]` (one scale for every column when `scales` has one).
fn check(ctx: &Arc<GpuContext>, onnx: &[u8], rng: &mut Rng, scales: &[f32], what: &str) {
    let cpu = TractRuntime::load(onnx).unwrap_or_else(|e| panic!("{what}: tract refused it: {e}"));
    let width = cpu.signature().input_width();
    let scale = |i: usize| scales[if scales.len() == 1 { 0 } else { i % width }];
    for matmul in [MatmulTile::T64, MatmulTile::T128] {
        let gpu = GpuRuntime::load(ctx, onnx, cpu.signature(), GpuModelOptions { matmul, ..POISON })
            .unwrap_or_else(|e| panic!("{what}: the GPU runtime refused it: {e}"));
        for rows in BATCHES {
            let values = (0..rows * width).map(|i| rng.f() * scale(i)).collect();
            let input = InputBatch::new(rows, width, values).unwrap();
            let (a, b) = (gpu.run(&input).unwrap(), cpu.run(&input).unwrap());
            compare(&a, &b).unwrap_or_else(|e| panic!("{what}, {matmul:?} tiles, {rows} rows: {e}"));
        }
    }
}

/// Twice the largest magnitude of each feature in a demo model's reference rows: raw values run
/// from 0.005 (the diabetes features, pre-scaled) to 2,500 (a tumour's area), and one scale for
/// all would feed a model inputs thousands of its standard deviations out, where f32 sums cancel
/// to noise on any runtime.
fn feature_scales(model: &demo::DemoModel) -> Vec<f32> {
    let spec = ModelSpec::parse(model.spec).unwrap();
    let reference: serde_json::Value = serde_json::from_str(model.reference).unwrap();
    let rows = reference["rows"].as_array().unwrap();
    spec.features
        .iter()
        .map(|f| 2.0 * rows.iter().map(|r| r[&f.name].as_f64().unwrap().abs() as f32).fold(0.0, f32::max))
        .collect()
}

#[test]
fn every_bundled_model_matches_tract() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for model in demo::DEMO_MODELS {
        check(&ctx, model.onnx, &mut rng, &feature_scales(model), model.name);
    }
}

/// One random layer on `x` of `d` columns; returns the new tensor and its columns.
#[allow(clippy::too_many_lines)] // one arm per family of operators reads best as one match
fn layer(g: &mut GraphBuilder, rng: &mut Rng, x: &str, d: usize) -> (String, usize) {
    match rng.below(11) {
        0 => {
            let n = 1 + rng.below(70);
            let trans = rng.below(2) == 1;
            let shape = if trans { [n, d] } else { [d, n] };
            let w = g.constant(&shape, rng.vec(n * d, 1.0 / (d as f32).sqrt()));
            let b = g.constant(&[n], rng.vec(n, 0.5));
            let attrs = [("transB", Attr::Int(i64::from(trans))), ("alpha", Attr::Float(0.75))];
            let y = g.node("Gemm", &[x, &w, &b], &attrs);
            let act = ["Relu", "LeakyRelu", "Sigmoid", "Tanh", "Identity"][rng.below(5)];
            (g.node(act, &[&y], &[]), n)
        }
        1 => {
            let n = 1 + rng.below(40);
            let w = g.constant(&[d, n], rng.vec(n * d, 1.0 / (d as f32).sqrt()));
            let shape = if rng.below(2) == 0 { vec![n] } else { vec![1, n] };
            let b = g.constant(&shape, rng.vec(n, 0.5));
            let y = g.node("MatMul", &[x, &w], &[]);
            (g.node("Add", &[&y, &b], &[]), n)
        }
        2 => {
            let op = ["Add", "Sub", "Mul", "Max", "Min", "Div"][rng.below(6)];
            let c = match rng.below(3) {
                0 => g.constant(&[d], rng.vec(d, 1.0).iter().map(|v| v.signum() * (0.5 + v.abs())).collect()),
                1 => g.constant(
                    &[1, d],
                    rng.vec(d, 1.0).iter().map(|v| v.signum() * (0.5 + v.abs())).collect(),
                ),
                _ => g.constant(&[], vec![1.25]),
            };
            (g.node(op, &[x, &c], &[]), d)
        }
        3 => {
            let t = g.node("Tanh", &[x], &[]);
            let op = ["Add", "Mul", "Sub"][rng.below(3)];
            (g.node(op, &[x, &t], &[]), d)
        }
        4 => {
            let t = g.node("Tanh", &[x], &[]);
            match rng.below(4) {
                0 => (g.node("Exp", &[&t], &[]), d),
                1 => {
                    let a = g.node("Abs", &[x], &[]);
                    let one = g.constant(&[], vec![1.0]);
                    let s = g.node("Add", &[&a, &one], &[]);
                    let l = g.node(if rng.below(2) == 0 { "Log" } else { "Reciprocal" }, &[&s], &[]);
                    (g.node("Sqrt", &[&l], &[]), d)
                }
                2 => (g.node("Neg", &[&t], &[]), d),
                _ => (g.node("Sigmoid", &[x], &[]), d),
            }
        }
        5 if d % 2 == 0 && d >= 4 => {
            // A 3-D detour: [N, d] → [N, d/k, k] → transpose → softmax or mean → back to 2-D.
            let k = if d % 4 == 0 { 4 } else { 2 };
            let shape = g.ints(&[3], vec![0, (d / k) as i64, k as i64]);
            let r = g.node("Reshape", &[x, &shape], &[]);
            let t = g.node("Transpose", &[&r], &[("perm", Attr::Ints(vec![0, 2, 1]))]);
            if rng.below(2) == 0 {
                let s = g.node("Softmax", &[&t], &[("axis", Attr::Int(2))]);
                (g.node("Flatten", &[&s], &[]), d)
            } else {
                let axes = g.ints(&[1], vec![1]);
                (g.node("ReduceSum", &[&t, &axes], &[("keepdims", Attr::Int(0))]), d / k)
            }
        }
        6 if d <= 64 => {
            let s = g.node("Sigmoid", &[x], &[]);
            (g.node("Concat", &[x, &s], &[("axis", Attr::Int(1))]), 2 * d)
        }
        7 => {
            let m = 1 + rng.below(12);
            let idx: Vec<i64> = (0..m).map(|_| rng.below(2 * d) as i64 - d as i64).collect();
            let i = g.ints(&[m], idx);
            (g.node("Gather", &[x, &i], &[("axis", Attr::Int(1))]), m)
        }
        8 => {
            let s = g.node("ReduceMean", &[x], &[("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))]);
            (g.node("Sub", &[x, &s], &[]), d)
        }
        9 => {
            // An embedding looked up by a computed index.
            let e = 1 + rng.below(8);
            let am = g.node("ArgMax", &[x], &[("axis", Attr::Int(1)), ("keepdims", Attr::Int(1))]);
            let table = g.constant(&[d, e], rng.vec(d * e, 1.0));
            let emb = g.node("Gather", &[&table, &am], &[("axis", Attr::Int(0))]);
            (g.node("Flatten", &[&emb], &[]), e)
        }
        _ => (g.node("Softmax", &[x], &[("axis", Attr::Int(-1))]), d),
    }
}

#[test]
fn random_graphs_of_the_covered_operators_match_tract() {
    let Some(ctx) = context() else { return };
    for seed in 1..=24u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let width = 1 + rng.below(48);
        let mut g = GraphBuilder::new(width);
        let (mut x, mut d) = ("input".to_string(), width);
        let mut ops = Vec::new();
        for _ in 0..2 + rng.below(5) {
            (x, d) = layer(&mut g, &mut rng, &x, d);
            ops.push(x.clone());
        }
        g.output(&x, FLOAT);
        if rng.below(2) == 0 {
            let label = g.node("ArgMax", &[&x], &[("axis", Attr::Int(1)), ("keepdims", Attr::Int(0))]);
            g.output(&label, INT64);
        }
        check(&ctx, &g.finish(), &mut rng, &[2.0], &format!("random graph seed {seed} (width {width})"));
    }
}

#[test]
fn a_large_mlp_matches_tract_and_batches_past_the_submission_size_split() {
    let Some(ctx) = context() else { return };
    let mut rng = Rng(7);
    let onnx = meridian_models::onnx_build::mlp(784, &[256, 128], 10, &mut || rng.f());
    let cpu = TractRuntime::load(&onnx).unwrap();
    let input = InputBatch::new(1000, 784, rng.vec(784_000, 1.0)).unwrap();
    let expected = cpu.run(&input).unwrap();
    // Several row and column tiles of either kernel, and 98 steps of k for the 128² one.
    for matmul in [MatmulTile::T64, MatmulTile::T128] {
        let small = GpuModelOptions { max_rows: 300, matmul, ..POISON };
        let gpu = GpuRuntime::load(&ctx, &onnx, cpu.signature(), small).unwrap();
        assert_eq!(gpu.steps(), 4, "three Gemm (bias and Relu fused) and a Softmax");
        compare(&gpu.run(&input).unwrap(), &expected).unwrap_or_else(|e| panic!("{matmul:?} tiles: {e}"));
    }
}

#[test]
fn bad_inputs_get_clear_errors_not_wrong_answers() {
    let Some(ctx) = context() else { return };
    let model = demo::demo_model("breast-cancer-mlp").unwrap();
    let cpu = TractRuntime::load(model.onnx).unwrap();
    let gpu = GpuRuntime::load(&ctx, model.onnx, cpu.signature(), POISON).unwrap();
    let mut values = vec![1.0; 60];
    values[37] = f32::NAN;
    let err = gpu.run(&InputBatch::new(2, 30, values).unwrap()).unwrap_err();
    assert!(matches!(&err, ModelError::Input(m) if m.contains("row 1 column 7")), "{err}");
    let err = gpu.run(&InputBatch::new(1, 29, vec![0.0; 29]).unwrap()).unwrap_err();
    assert!(matches!(err, ModelError::Input(_)), "{err}");

    // A computed Gather index out of range: the input picks row 5 of a 3-row table.
    let mut g = GraphBuilder::new(1);
    let idx = g.node("Cast", &["input"], &[("to", Attr::Int(7))]);
    let table = g.constant(&[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = g.node("Gather", &[&table, &idx], &[("axis", Attr::Int(0))]);
    g.output(&out, FLOAT);
    let onnx = g.finish();
    let cpu = TractRuntime::load(&onnx).unwrap();
    let gpu = GpuRuntime::load(&ctx, &onnx, cpu.signature(), POISON).unwrap();
    let ok = gpu.run(&InputBatch::new(2, 1, vec![2.0, -1.0]).unwrap()).unwrap();
    assert_eq!(ok.tensors[0].data, meridian_models::TensorData::F32(vec![5.0, 6.0, 5.0, 6.0]));
    let err = gpu.run(&InputBatch::new(2, 1, vec![0.0, 5.0]).unwrap()).unwrap_err();
    assert!(matches!(&err, ModelError::Input(m) if m.contains("out of range")), "{err}");
    // The device is fine afterwards.
    assert!(gpu.run(&InputBatch::new(1, 1, vec![1.0]).unwrap()).is_ok());
}

#[test]
fn models_the_gpu_cannot_cover_stay_on_tract_and_say_why() {
    let ctx = context();
    // Folding the batch into the features is a dynamic shape the GPU path does not cover.
    let mut g = GraphBuilder::new(4);
    let flat = g.ints(&[1], vec![-1]);
    let r = g.node("Reshape", &["input", &flat], &[]);
    let s = g.node("Softmax", &[&r], &[("axis", Attr::Int(0))]);
    g.output(&s, FLOAT);
    let onnx = g.finish();
    let chosen = select(&onnx, RuntimeMode::Auto, ctx.as_ref(), GpuModelOptions::default()).unwrap();
    assert_eq!(chosen.runtime.name(), "tract-cpu");
    if ctx.is_some() {
        assert!(chosen.reason.contains("Reshape") && chosen.reason.contains("batch"), "{}", chosen.reason);
    }
    // An operator outside the covered set.
    let mut g = GraphBuilder::new(3);
    let s = g.node("Sin", &["input"], &[]);
    g.output(&s, FLOAT);
    let chosen = select(&g.finish(), RuntimeMode::Gpu, ctx.as_ref(), GpuModelOptions::default()).unwrap();
    assert_eq!(chosen.runtime.name(), "tract-cpu");
    if ctx.is_some() {
        assert!(chosen.reason.contains("Sin"), "{}", chosen.reason);
    }
    let chosen =
        select(demo::DEMO_MODELS[1].onnx, RuntimeMode::Cpu, ctx.as_ref(), Default::default()).unwrap();
    assert_eq!(chosen.runtime.name(), "tract-cpu");
}

#[test]
fn a_lost_adapter_falls_back_to_tract_without_failing_requests() {
    // A device of its own: losing it must not disturb the other tests.
    let Some(ctx) = context() else { return };
    let model = demo::demo_model("breast-cancer-mlp").unwrap();
    let chosen = select(model.onnx, RuntimeMode::Auto, Some(&ctx), GpuModelOptions::default()).unwrap();
    assert!(chosen.runtime.name().starts_with("wgpu:"), "{}: {}", chosen.runtime.name(), chosen.reason);
    let cpu = TractRuntime::load(model.onnx).unwrap();
    let input = InputBatch::new(3, 30, Rng(3).vec(90, 100.0)).unwrap();
    let before = chosen.runtime.run(&input).unwrap();
    ctx.mark_lost();
    let after = chosen.runtime.run(&input).unwrap();
    assert!(
        chosen.runtime.name().starts_with("tract-cpu (fell back from wgpu:"),
        "{}",
        chosen.runtime.name()
    );
    assert_eq!(after, cpu.run(&input).unwrap());
    compare(&before, &after).unwrap();
}
