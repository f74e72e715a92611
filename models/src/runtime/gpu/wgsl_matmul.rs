//! WGSL of the matmul step's three kernels, chosen per batch by the executor: skinny for
//! products of at most [`SKINNY_ROWS`] rows, tiled (64×64) or wide (128×128) above that.
//! They share the bindings of the step (row count, output, `a`, `b`, the bias) and so one
//! bind group layout.

use std::fmt::Write;

use super::ops::StepKind;
use super::wgsl::{bindings, epilogue, inputs, PRELUDE};

/// Output tile of the tiled kernel (rows and columns); each of its 16×16 threads computes 4×4,
/// rows and columns 16 apart, so a warp reads consecutive words of the shared tile (no bank
/// conflicts) and writes consecutive words of the output.
pub(crate) const TILE: u32 = 64;
/// Output tile of the wide kernel; each of its 16×16 threads computes 8×8, again 16 apart.
/// Twice the multiply-adds per shared-memory read of the 64 tile, a quarter of the
/// workgroups: for products large enough to fill the device.
pub(crate) const WIDE_TILE: u32 = 128;
/// Most rows (`M`) the skinny kernel takes; taller products use a tiled kernel.
pub(crate) const SKINNY_ROWS: usize = 8;
/// Output columns per workgroup of the skinny kernel; its 256 threads split `K` in 8 slices.
pub(crate) const SKINNY_COLS: u32 = 32;

/// The kernels of a matmul step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatmulKernel {
    Tiled,
    Skinny,
    Wide,
}

/// What every kernel's source is specialised on besides `K` and `N`.
struct Matmul {
    m_per_row: usize,
    /// The bias term (WGSL, may read `gn`, the output column).
    bias: String,
    /// The epilogue (WGSL of `v`).
    act: String,
}

/// The WGSL of `kernel` for a matmul step; `None` for other steps.
pub(crate) fn shader(kind: &StepKind, kernel: MatmulKernel) -> Option<String> {
    let StepKind::MatMul { m_per_row, k, n, bias, activation, .. } = kind else { return None };
    let mut src = PRELUDE.to_string();
    inputs(&mut src, bindings(kind).len());
    let _ = write!(src, "\nconst K: u32 = {k}u;\nconst NO: u32 = {n}u;");
    let mm = Matmul { m_per_row: *m_per_row, bias: bias_term(*bias), act: epilogue(*activation) };
    match kernel {
        MatmulKernel::Tiled => tiled(&mut src, &mm),
        MatmulKernel::Skinny => skinny(&mut src, &mm),
        MatmulKernel::Wide => wide(&mut src, &mm),
    }
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
fn skinny(src: &mut String, mm: &Matmul) {
    let cols = SKINNY_COLS;
    let rows = SKINNY_ROWS;
    let _ = write!(
        src,
        "
var<workgroup> part: array<f32, {parts}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
  let M = min(p.n * {m}u, {rows}u);
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
        m = mm.m_per_row,
        bias = mm.bias,
        act = mm.act
    );
}

/// `out[M, n] = act(a[M, k] · b[k, n] + bias)` in 64×64 tiles, `k` in steps of 16 through
/// shared memory, 4×4 sums per thread.
fn tiled(src: &mut String, mm: &Matmul) {
    let _ = write!(
        src,
        "
const BM: u32 = {TILE}u;
const BN: u32 = {TILE}u;
const BK: u32 = 16u;
var<workgroup> As: array<f32, 1024>;
var<workgroup> Bs: array<f32, 1024>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {{
  let M = p.n * {m}u;
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
        m = mm.m_per_row,
        bias = mm.bias,
        act = mm.act
    );
}

/// `out[M, n] = act(a[M, k] · b[k, n] + bias)` in 128×128 tiles, `k` in steps of 8 through
/// shared memory; each thread keeps its 8×8 sums in 64 scalar variables (written out, so no
/// compiler has to keep an indexed array in registers) and reads 16 shared words per 64
/// multiply-adds.
fn wide(src: &mut String, mm: &Matmul) {
    let t = WIDE_TILE;
    let _ = write!(
        src,
        "
var<workgroup> As: array<f32, {shared}>;
var<workgroup> Bs: array<f32, {shared}>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {{
  let M = p.n * {m}u;
  let row0 = wg.y * {t}u;
  let col0 = wg.x * {t}u;
  let tid = l.y * 16u + l.x;
",
        shared = 8 * t,
        m = mm.m_per_row
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
    let (bias, act) = (&mm.bias, &mm.act);
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
