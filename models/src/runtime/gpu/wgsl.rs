//! WGSL for each step. Every shader binds the batch's row count at 0 (uniform), its output at
//! 1 and its inputs from 2 in the order [`bindings`] lists them. Shapes other than the batch
//! are baked into the source, so each step compiles to a shader specialised for its model.

use std::fmt::Write;

use super::compile::Src;
use super::ops::{Activation, Count, StepKind};
use super::shape::strides_of;

/// Workgroup size of the one-dimensional kernels.
pub(crate) const WG: u32 = 256;
/// Workgroups per dispatch row; larger dispatches spill into y.
pub(crate) const MAX_GROUPS_X: u32 = 65_535;
/// Output tile of the matmul kernel (rows and columns); each of its 16×16 threads computes 4×4,
/// rows and columns 16 apart, so a warp reads consecutive words of the shared tile (no bank
/// conflicts) and writes consecutive words of the output.
pub(crate) const TILE: u32 = 64;
/// Output tile of the wide matmul kernel; each of its 16×16 threads computes 8×8, again 16
/// apart. Twice the multiply-adds per shared-memory read of the 64 tile, a quarter of the
/// workgroups: for products large enough to fill the device.
pub(crate) const WIDE_TILE: u32 = 128;
/// Most rows (`M`) the skinny matmul kernel takes; taller products use the tiled kernel.
pub(crate) const SKINNY_ROWS: usize = 8;
/// Output columns per workgroup of the skinny kernel; its 256 threads split `K` in 8 slices.
pub(crate) const SKINNY_COLS: u32 = 32;

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

const PRELUDE: &str = "
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

fn inputs(src: &mut String, count: usize) {
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
        StepKind::MatMul { m_per_row, k, n, bias, activation, .. } => {
            matmul(&mut src, *m_per_row, *k, *n, *bias, *activation);
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

/// The wide variant of a matmul step (see [`wide_matmul`]), `None` for other steps.
pub(crate) fn wide_shader(kind: &StepKind) -> Option<String> {
    let StepKind::MatMul { m_per_row, k, n, bias, activation, .. } = kind else { return None };
    let mut src = PRELUDE.to_string();
    inputs(&mut src, bindings(kind).len());
    wide_matmul(&mut src, *m_per_row, *k, *n, *bias, *activation);
    Some(src)
}

/// `out[M, n] = act(a[M, k] · b[k, n] + bias)` in 128×128 tiles, `k` in steps of 8 through
/// shared memory; each thread keeps its 8×8 sums in 64 scalar variables (written out, so no
/// compiler has to keep an indexed array in registers) and reads 16 shared words per 64
/// multiply-adds.
fn wide_matmul(
    src: &mut String,
    m_per_row: usize,
    k: usize,
    n: usize,
    bias: Option<(usize, usize)>,
    act: Activation,
) {
    let t = WIDE_TILE;
    let _ = write!(
        src,
        "
const K: u32 = {k}u;
const NO: u32 = {n}u;
var<workgroup> As: array<f32, {shared}>;
var<workgroup> Bs: array<f32, {shared}>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {{
  let M = p.n * {m_per_row}u;
  let row0 = wg.y * {t}u;
  let col0 = wg.x * {t}u;
  let tid = l.y * 16u + l.x;
",
        shared = 8 * t
    );
    for i in 0..8 {
        let _ = writeln!(
            src,
            "  {}",
            (0..8).map(|j| format!("var c{i}{j} = 0.0;")).collect::<Vec<_>>().join(" ")
        );
    }
    let _ = write!(
        src,
        "  for (var k0 = 0u; k0 < K; k0 = k0 + 8u) {{
    for (var e = 0u; e < 4u; e = e + 1u) {{
      let idx = tid + e * 256u;
      let m = idx / 8u;
      let kk = idx % 8u;
      var v = 0.0;
      if (row0 + m < M && k0 + kk < K) {{ v = in0[(row0 + m) * K + k0 + kk]; }}
      As[kk * {t}u + m] = v;
      let kb = idx / {t}u;
      let nb = idx % {t}u;
      var w = 0.0;
      if (k0 + kb < K && col0 + nb < NO) {{ w = in1[(k0 + kb) * NO + col0 + nb]; }}
      Bs[kb * {t}u + nb] = w;
    }}
    workgroupBarrier();
    for (var kk = 0u; kk < 8u; kk = kk + 1u) {{
"
    );
    for i in 0..8 {
        let _ = writeln!(src, "      let a{i} = As[kk * {t}u + l.y + {}u];", 16 * i);
    }
    for j in 0..8 {
        let _ = writeln!(src, "      let b{j} = Bs[kk * {t}u + l.x + {}u];", 16 * j);
    }
    for i in 0..8 {
        for j in 0..8 {
            let _ = writeln!(src, "      c{i}{j} = fma(a{i}, b{j}, c{i}{j});");
        }
    }
    src.push_str(
        "    }
    workgroupBarrier();
  }
",
    );
    let (bias, act) = (bias_term(bias), epilogue(act));
    for i in 0..8 {
        for j in 0..8 {
            let _ = writeln!(
                src,
                "  {{ let gm = row0 + l.y + {}u; let gn = col0 + l.x + {}u; \
                 if (gm < M && gn < NO) {{ let v = c{i}{j} + {bias}; out[gm * NO + gn] = {act}; }} }}",
                16 * i,
                16 * j
            );
        }
    }
    src.push_str(
        "}
",
    );
}

/// The skinny variant of a matmul step (see [`skinny_matmul`]), `None` for other steps.
pub(crate) fn skinny_shader(kind: &StepKind) -> Option<String> {
    let StepKind::MatMul { m_per_row, k, n, bias, activation, .. } = kind else { return None };
    let mut src = PRELUDE.to_string();
    inputs(&mut src, bindings(kind).len());
    skinny_matmul(&mut src, *m_per_row, *k, *n, *bias, *activation);
    Some(src)
}

fn bias_term(bias: Option<(usize, usize)>) -> String {
    match bias {
        None => "0.0".to_string(),
        Some((_, 1)) => "in2[0]".to_string(),
        Some(_) => "in2[gn]".to_string(),
    }
}

/// `out[M, n] = act(a[M, k] · b[k, n] + bias)` for `M ≤ SKINNY_ROWS`, the shape of small
/// batches. The tiled kernel would compute a whole 64-row tile for them and run one
/// workgroup per 64 columns; here each workgroup takes 32 columns with 256 threads, thread
/// `(c, s)` summing every 8th `k` from `s` for all rows (reads of `b` coalesce across `c`, reads
/// of `a` are the same for the whole workgroup), and the 8 partial sums meet in shared memory.
fn skinny_matmul(
    src: &mut String,
    m_per_row: usize,
    k: usize,
    n: usize,
    bias: Option<(usize, usize)>,
    act: Activation,
) {
    let cols = SKINNY_COLS;
    let rows = SKINNY_ROWS;
    let _ = write!(
        src,
        "
const K: u32 = {k}u;
const NO: u32 = {n}u;
var<workgroup> part: array<f32, {parts}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let M = min(p.n * {m_per_row}u, {rows}u);
  let c = li % {cols}u;
  let s = li / {cols}u;
  let gn = wg.x * {cols}u + c;
  var acc: array<f32, {rows}>;
  if (gn < NO) {{
    for (var kk = s; kk < K; kk = kk + 8u) {{
      let w = in1[kk * NO + gn];
      for (var r = 0u; r < M; r = r + 1u) {{ acc[r] = fma(in0[r * K + kk], w, acc[r]); }}
    }}
  }}
  for (var r = 0u; r < {rows}u; r = r + 1u) {{ part[(s * {rows}u + r) * {cols}u + c] = acc[r]; }}
  workgroupBarrier();
  if (s == 0u && gn < NO) {{
    for (var r = 0u; r < M; r = r + 1u) {{
      var v = 0.0;
      for (var t = 0u; t < 8u; t = t + 1u) {{ v = v + part[(t * {rows}u + r) * {cols}u + c]; }}
      v = v + {bias};
      out[r * NO + gn] = {act};
    }}
  }}
}}
",
        parts = 8 * rows * cols as usize,
        bias = bias_term(bias),
        act = epilogue(act)
    );
}

fn epilogue(activation: Activation) -> String {
    match activation {
        Activation::None => "v".into(),
        Activation::Relu => "max(v, 0.0)".into(),
        Activation::LeakyRelu(a) => format!("select({a:?} * v, v, v >= 0.0)"),
        Activation::Sigmoid => "sigmoid(v)".into(),
        Activation::Tanh => "tanh_safe(v)".into(),
    }
}

fn matmul(
    src: &mut String,
    m_per_row: usize,
    k: usize,
    n: usize,
    bias: Option<(usize, usize)>,
    act: Activation,
) {
    let bias = bias_term(bias);
    let _ = write!(
        src,
        "
const K: u32 = {k}u;
const NO: u32 = {n}u;
const BM: u32 = {TILE}u;
const BN: u32 = {TILE}u;
const BK: u32 = 16u;
var<workgroup> As: array<f32, 1024>;
var<workgroup> Bs: array<f32, 1024>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {{
  let M = p.n * {m_per_row}u;
  let row0 = wg.y * BM;
  let col0 = wg.x * BN;
  let tid = l.y * 16u + l.x;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < K; k0 = k0 + BK) {{
    for (var e = 0u; e < 4u; e = e + 1u) {{
      let idx = tid + e * 256u;
      let m = idx / BK;
      let kk = idx % BK;
      let gm = row0 + m;
      let gk = k0 + kk;
      var v = 0.0;
      if (gm < M && gk < K) {{ v = in0[gm * K + gk]; }}
      As[kk * BM + m] = v;
      let kb = idx / BN;
      let nb = idx % BN;
      let gkb = k0 + kb;
      let gnb = col0 + nb;
      var w = 0.0;
      if (gkb < K && gnb < NO) {{ w = in1[gkb * NO + gnb]; }}
      Bs[kb * BN + nb] = w;
    }}
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk = kk + 1u) {{
      let a0 = As[kk * BM + l.y];
      let a1 = As[kk * BM + l.y + 16u];
      let a2 = As[kk * BM + l.y + 32u];
      let a3 = As[kk * BM + l.y + 48u];
      for (var j = 0u; j < 4u; j = j + 1u) {{
        let b = Bs[kk * BN + l.x + j * 16u];
        acc[j] = fma(a0, b, acc[j]);
        acc[4u + j] = fma(a1, b, acc[4u + j]);
        acc[8u + j] = fma(a2, b, acc[8u + j]);
        acc[12u + j] = fma(a3, b, acc[12u + j]);
      }}
    }}
    workgroupBarrier();
  }}
  for (var i = 0u; i < 4u; i = i + 1u) {{
    for (var j = 0u; j < 4u; j = j + 1u) {{
      let gm = row0 + l.y + i * 16u;
      let gn = col0 + l.x + j * 16u;
      if (gm < M && gn < NO) {{
        let v = acc[i * 4u + j] + {bias};
        out[gm * NO + gn] = {act};
      }}
    }}
  }}
}}
",
        act = epilogue(act)
    );
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
