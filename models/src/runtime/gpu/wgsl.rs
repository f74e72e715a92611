//! WGSL for each step. Every shader binds the batch's row count at 0 (uniform), its output at
//! 1 and its inputs from 2 in the order [`bindings`] lists them. Shapes other than the batch
//! are baked into the source, so each step compiles to a shader specialised for its model.

use std::fmt::Write;

use super::compile::Src;
use super::ops::{Activation, Count, StepKind};
use super::shape::strides_of;
use super::wgsl_matmul::MatmulKernel;

/// Workgroup size of the one-dimensional kernels.
pub(crate) const WG: u32 = 256;
/// Workgroups per dispatch row; larger dispatches spill into y.
pub(crate) const MAX_GROUPS_X: u32 = 65_535;

/// The buffers a step reads, in binding order (from 2).
pub(crate) fn bindings(kind: &StepKind) -> Vec<Src> {
    match kind {
        StepKind::MatMul { a, b, bias, .. } => {
            let mut v = vec![Src::Act(*a), Src::Const(*b)];
            v.extend(bias.map(|(c, _)| Src::Const(c)));
            v
        }
        StepKind::Map { inputs, .. } => inputs.iter().map(|(s, _)| *s).collect(),
        StepKind::Softmax { x, .. } | StepKind::ArgMax { x, .. } | StepKind::Reduce { x, .. } => {
            vec![Src::Act(*x)]
        }
        StepKind::Concat { parts, .. } => parts.iter().map(|(b, _)| Src::Act(*b)).collect(),
        StepKind::Gather { data, indices, .. } => vec![*data, *indices],
    }
}

pub(crate) const PRELUDE: &str = "
struct Params { n: u32, p1: u32, p2: u32, p3: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
fn sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
fn tanh_safe(x: f32) -> f32 { let e = exp(2.0 * clamp(x, -15.0, 15.0)); return (e - 1.0) / (e + 1.0); }
fn pow_onnx(x: f32, y: f32) -> f32 {
  if (y == 0.0) { return 1.0; }
  if (y == round(y)) { let m = pow(abs(x), y); if (x < 0.0 && (i32(y) & 1) == 1) { return -m; } return m; }
  return pow(x, y);
}
";

pub(crate) fn inputs(src: &mut String, count: usize) {
    for i in 0..count {
        let _ = writeln!(src, "@group(0) @binding({}) var<storage, read> in{i}: array<f32>;", i + 2);
    }
}

/// The element index of a one-dimensional kernel; returns from the shader past `total`.
fn flat_main(src: &mut String, total: &str) {
    let _ = write!(
        src,
        "@compute @workgroup_size({WG})\nfn main(@builtin(global_invocation_id) g: vec3<u32>) {{\n  \
         let i = g.x + g.y * {}u;\n  if (i >= {total}) {{ return; }}\n",
        MAX_GROUPS_X * WG
    );
}

pub(crate) fn shader(kind: &StepKind) -> String {
    let mut src = PRELUDE.to_string();
    let reads = bindings(kind).len();
    inputs(&mut src, reads);
    match kind {
        StepKind::MatMul { .. } => {
            return super::wgsl_matmul::shader(kind, MatmulKernel::Tiled).unwrap_or_default()
        }
        StepKind::Map { rest, inputs, expr } => map(&mut src, rest, inputs, expr),
        StepKind::Softmax { outer, len, inner, .. } => softmax(&mut src, *outer, *len, *inner),
        StepKind::ArgMax { outer, len, inner, last, .. } => argmax(&mut src, *outer, *len, *inner, *last),
        StepKind::Reduce { shape, reduced, mean, .. } => reduce(&mut src, shape, reduced, *mean),
        StepKind::Concat { parts, outer, inner } => concat(&mut src, parts, *outer, *inner),
        StepKind::Gather { outer, count, dim, inner, .. } => {
            let _ =
                writeln!(src, "@group(0) @binding({}) var<storage, read_write> err: atomic<u32>;", reads + 2);
            gather(&mut src, *outer, *count, *dim, *inner);
        }
    }
    src
}

pub(crate) fn epilogue(activation: Activation) -> String {
    match activation {
        Activation::None => "v".into(),
        Activation::Relu => "max(v, 0.0)".into(),
        Activation::LeakyRelu(a) => format!("select({a:?} * v, v, v >= 0.0)"),
        Activation::Sigmoid => "sigmoid(v)".into(),
        Activation::Tanh => "tanh_safe(v)".into(),
    }
}

fn map(src: &mut String, rest: &[usize], inputs: &[(Src, Vec<usize>)], expr: &str) {
    let per_row: usize = rest.iter().product();
    flat_main(src, &format!("p.n * {per_row}u"));
    src.push_str("  var r = i;\n");
    for (d, size) in rest.iter().enumerate().rev() {
        let _ = writeln!(src, "  let c{} = r % {size}u; r = r / {size}u;", d + 1);
    }
    src.push_str("  let c0 = r;\n");
    for (i, (_, strides)) in inputs.iter().enumerate() {
        let terms: Vec<String> = strides
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != 0)
            .map(|(d, s)| format!("c{d} * {s}u"))
            .collect();
        let at = if terms.is_empty() { "0u".to_string() } else { terms.join(" + ") };
        let _ = writeln!(src, "  let x{i} = in{i}[{at}];");
    }
    let _ = writeln!(src, "  out[i] = {expr};\n}}");
}

fn softmax(src: &mut String, outer: usize, len: usize, inner: usize) {
    flat_main(src, &format!("p.n * {}u", outer * inner));
    let _ = write!(
        src,
        "  let o = i / {inner}u;
  let r = i % {inner}u;
  let base = o * {len}u * {inner}u + r;
  var m = in0[base];
  for (var j = 1u; j < {len}u; j = j + 1u) {{ m = max(m, in0[base + j * {inner}u]); }}
  var s = 0.0;
  for (var j = 0u; j < {len}u; j = j + 1u) {{ s = s + exp(in0[base + j * {inner}u] - m); }}
  for (var j = 0u; j < {len}u; j = j + 1u) {{ out[base + j * {inner}u] = exp(in0[base + j * {inner}u] - m) / s; }}
}}
"
    );
}

fn argmax(src: &mut String, outer: usize, len: usize, inner: usize, last: bool) {
    let cmp = if last { ">=" } else { ">" };
    flat_main(src, &format!("p.n * {}u", outer * inner));
    let _ = write!(
        src,
        "  let o = i / {inner}u;
  let r = i % {inner}u;
  let base = o * {len}u * {inner}u + r;
  var best = in0[base];
  var at = 0u;
  for (var j = 1u; j < {len}u; j = j + 1u) {{
    let v = in0[base + j * {inner}u];
    if (v {cmp} best) {{ best = v; at = j; }}
  }}
  out[i] = f32(at);
}}
"
    );
}

fn reduce(src: &mut String, shape: &[usize], reduced: &[usize], mean: bool) {
    let strides = strides_of(shape);
    let in_row: usize = shape.iter().product();
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !reduced.contains(d)).collect();
    let out_row: usize = kept.iter().map(|&d| shape[d]).product();
    let count: usize = reduced.iter().map(|&d| shape[d]).product();
    flat_main(src, &format!("p.n * {out_row}u"));
    let _ = writeln!(
        src,
        "  let row = i / {out_row}u;\n  var r = i % {out_row}u;\n  var base = row * {in_row}u;"
    );
    for &d in kept.iter().rev() {
        let _ =
            writeln!(src, "  base = base + (r % {}u) * {}u; r = r / {}u;", shape[d], strides[d], shape[d]);
    }
    let _ = writeln!(
        src,
        "  var s = 0.0;\n  for (var t = 0u; t < {count}u; t = t + 1u) {{\n    var q = t;\n    var at = base;"
    );
    for &d in reduced.iter().rev() {
        let _ = writeln!(src, "    at = at + (q % {}u) * {}u; q = q / {}u;", shape[d], strides[d], shape[d]);
    }
    let result = if mean { format!("s / {count}.0") } else { "s".to_string() };
    let _ = writeln!(src, "    s = s + in0[at];\n  }}\n  out[i] = {result};\n}}");
}

fn concat(src: &mut String, parts: &[(usize, usize)], outer: usize, inner: usize) {
    let total: usize = parts.iter().map(|(_, l)| l).sum();
    flat_main(src, &format!("p.n * {}u", outer * total * inner));
    let _ = writeln!(
        src,
        "  let r = i % {inner}u;\n  let c = (i / {inner}u) % {total}u;\n  let o = i / ({inner}u * {total}u);"
    );
    let mut start = 0;
    for (k, (_, len)) in parts.iter().enumerate() {
        let _ = writeln!(
            src,
            "  if (c >= {start}u && c < {end}u) {{ out[i] = in{k}[(o * {len}u + c - {start}u) * {inner}u + r]; }}",
            end = start + len
        );
        start += len;
    }
    src.push_str("}\n");
}

fn count_expr(c: Count) -> String {
    match c {
        Count::Fixed(n) => format!("{n}u"),
        Count::PerRow(n) => format!("(p.n * {n}u)"),
    }
}

fn gather(src: &mut String, outer: Count, count: Count, dim: usize, inner: usize) {
    let (o, c) = (count_expr(outer), count_expr(count));
    flat_main(src, &format!("{o} * {c} * {inner}u"));
    let _ = write!(
        src,
        "  let r = i % {inner}u;
  let j = (i / {inner}u) % {c};
  let o = i / ({inner}u * {c});
  var k = in1[j];
  if (k < 0.0) {{ k = k + {dim}.0; }}
  if (!(k >= 0.0 && k < {dim}.0)) {{ atomicStore(&err, 1u); out[i] = 0.0; return; }}
  out[i] = in0[(o * {dim}u + u32(k)) * {inner}u + r];
}}
"
    );
}
