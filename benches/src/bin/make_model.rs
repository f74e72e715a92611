//! Write a larger model for load tests, ready to push: a dense MLP 784-1024-1024-10 (random
//! weights, seeded) as `<dir>/model.onnx` and its feature spec `f0` … `f783` as
//! `<dir>/model.toml` (a 10-class classifier).
//!
//!   cargo run --release -p meridian-benches --bin make_model -- /tmp/large
//!   meridian models push /tmp/large/model.onnx --name mlp-large --deploy

use std::fmt::Write;

use meridian_models::runtime::tract::TractRuntime;
use meridian_models::runtime::Runtime;

const WIDTH: usize = 784;

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "large-model".into()));
    std::fs::create_dir_all(&dir)?;
    let mut state = 42u64;
    let mut rng = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let onnx = meridian_models::onnx_build::mlp(WIDTH, &[1024, 1024], 10, &mut rng);
    let output = TractRuntime::load(&onnx)?
        .signature()
        .outputs
        .first()
        .map(|o| o.name.clone())
        .ok_or_else(|| anyhow::anyhow!("the model has no output"))?;
    let mut spec = String::from(
        "# MLP 784-1024-1024-10 with random weights (benches/src/bin/make_model.rs): a model whose\n\
         # compute, not the front end, sets the rate.\nname = \"mlp-large\"\n\
         description = \"MLP 784-1024-1024-10, random weights, for load tests\"\nfeatures = [\n",
    );
    for i in 0..WIDTH {
        writeln!(spec, "  \"f{i}\",")?;
    }
    writeln!(spec, "]\n\n[output]\nkind = \"classifier\"\nprobabilities = \"{output}\"")?;
    std::fs::write(dir.join("model.onnx"), &onnx)?;
    std::fs::write(dir.join("model.toml"), spec)?;
    println!("{}", dir.join("model.onnx").display());
    Ok(())
}
