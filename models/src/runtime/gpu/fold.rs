//! Constant folding and shape arithmetic for the layout operators, done once at compile time.

use tract_onnx::pb;

use super::compile::Const;
use super::shape::{axis, broadcast, per_row, strides_of, Unsupported};

type Res<T> = Result<T, Unsupported>;

fn no<T>(msg: impl Into<String>) -> Res<T> {
    Err(Unsupported(msg.into()))
}

fn with_data(shape: Vec<usize>, data: Vec<f32>, int: bool) -> Const {
    let ints = int.then(|| data.iter().map(|v| *v as i64).collect());
    Const { shape, ints, data }
}

/// Elementwise arithmetic on two constants, with numpy broadcasting.
pub(crate) fn binary(op: &str, a: &Const, b: &Const) -> Res<Const> {
    let shape = broadcast(&a.shape, &b.shape)?;
    let rank = shape.len();
    let pad =
        |s: &[usize]| std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect::<Vec<_>>();
    let (sa, sb) = (pad(&a.shape), pad(&b.shape));
    let (ta, tb, to) = (strides_of(&sa), strides_of(&sb), strides_of(&shape));
    let int = a.ints.is_some() && b.ints.is_some();
    let mut data = Vec::with_capacity(per_row(&shape));
    for i in 0..per_row(&shape) {
        let (mut ia, mut ib) = (0, 0);
        for d in 0..rank {
            let c = (i / to[d]) % shape[d];
            ia += if sa[d] == 1 { 0 } else { c * ta[d] };
            ib += if sb[d] == 1 { 0 } else { c * tb[d] };
        }
        let (x, y) = (a.data[ia], b.data[ib]);
        data.push(match op {
            "Add" => x + y,
            "Sub" => x - y,
            "Mul" => x * y,
            "Div" if int => (x / y).trunc(),
            "Div" => x / y,
            "Pow" => x.powf(y),
            "Max" => x.max(y),
            _ => x.min(y),
        });
    }
    Ok(with_data(shape, data, int))
}

pub(crate) fn concat(parts: &[Const], ax: i64) -> Res<Const> {
    let Some(first) = parts.first() else { return no("nothing to concatenate") };
    let ax = axis(ax, first.shape.len())?;
    let outer = per_row(&first.shape[..ax]);
    let mut shape = first.shape.clone();
    shape[ax] = parts.iter().map(|p| p.shape.get(ax).copied().unwrap_or(0)).sum();
    let mut data = Vec::with_capacity(per_row(&shape));
    for o in 0..outer {
        for p in parts {
            let chunk = per_row(&p.shape[ax..]);
            data.extend_from_slice(&p.data[o * chunk..(o + 1) * chunk]);
        }
    }
    let int = parts.iter().all(|p| p.ints.is_some());
    Ok(with_data(shape, data, int))
}

pub(crate) fn transpose(c: &Const, perm: &[usize]) -> Res<Const> {
    if perm.len() != c.shape.len() {
        return no("perm does not match the rank");
    }
    let shape: Vec<usize> = perm.iter().map(|&p| c.shape[p]).collect();
    let (from, to) = (strides_of(&c.shape), strides_of(&shape));
    let data = (0..c.data.len())
        .map(|i| {
            let src: usize = (0..shape.len()).map(|d| ((i / to[d]) % shape[d]) * from[perm[d]]).sum();
            c.data[src]
        })
        .collect();
    Ok(with_data(shape, data, c.ints.is_some()))
}

pub(crate) fn gather(d: &Const, i: &Const, ax: i64) -> Res<Const> {
    let ax = axis(ax, d.shape.len())?;
    let Some(idx) = &i.ints else { return no("indices must be integers") };
    let dim = d.shape[ax] as i64;
    let (outer, inner) = (per_row(&d.shape[..ax]), per_row(&d.shape[ax + 1..]));
    let mut data = Vec::new();
    for o in 0..outer {
        for &k in idx {
            if k < -dim || k >= dim {
                return no(format!("index {k} is out of range for a dimension of {dim}"));
            }
            let k = if k < 0 { k + dim } else { k } as usize;
            let start = (o * d.shape[ax] + k) * inner;
            data.extend_from_slice(&d.data[start..start + inner]);
        }
    }
    let shape = d.shape[..ax].iter().chain(&i.shape).chain(&d.shape[ax + 1..]).copied().collect();
    Ok(with_data(shape, data, d.ints.is_some()))
}

/// The output shape of Reshape, Flatten, Squeeze or Unsqueeze on a tensor of shape `full`
/// (for an activation, `full[0]` is the batch, written 1).
pub(crate) fn reshape_target(
    node: &pb::NodeProto,
    full: &[usize],
    opset: i64,
    ints_input: impl Fn(usize) -> Res<Option<Vec<i64>>>,
) -> Res<Vec<usize>> {
    let attr_ints = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone());
    let attr_i = |name: &str, d: i64| node.attribute.iter().find(|a| a.name == name).map_or(d, |a| a.i);
    let axes = |out_rank: usize| -> Res<Option<Vec<usize>>> {
        let raw = if opset >= 13 { ints_input(1)? } else { attr_ints("axes") };
        raw.map(|a| a.iter().map(|&x| axis(x, out_rank)).collect()).transpose()
    };
    match node.op_type.as_str() {
        "Reshape" => {
            let Some(spec) = ints_input(1)? else { return no("Reshape needs a shape") };
            let allow_zero = attr_i("allowzero", 0) != 0;
            let mut out = Vec::with_capacity(spec.len());
            let mut infer = None;
            for (i, &d) in spec.iter().enumerate() {
                match d {
                    0 if !allow_zero => {
                        out.push(*full.get(i).ok_or_else(|| Unsupported("0 past the rank".into()))?)
                    }
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        out.push(1);
                    }
                    d if d >= 0 => out.push(d as usize),
                    d => return no(format!("bad dimension {d} in the target shape")),
                }
            }
            let total = per_row(full);
            if let Some(i) = infer {
                let known = per_row(&out);
                if known == 0 || total % known != 0 {
                    return no(format!("cannot infer -1 in {spec:?} for {full:?}"));
                }
                out[i] = total / known;
            }
            if per_row(&out) != total {
                return no(format!("cannot reshape {full:?} to {spec:?}"));
            }
            Ok(out)
        }
        "Flatten" => {
            let ax = attr_i("axis", 1);
            let ax = if ax == full.len() as i64 { full.len() } else { axis(ax, full.len())? };
            Ok(vec![per_row(&full[..ax]), per_row(&full[ax..])])
        }
        "Squeeze" => match axes(full.len())? {
            Some(axes) => {
                if axes.iter().any(|&a| full[a] != 1) {
                    return no("squeezing a dimension that is not 1");
                }
                Ok(full.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| *d).collect())
            }
            // Without axes every 1 goes, but never the batch (dimension 0).
            None => {
                Ok(full.iter().enumerate().filter(|(i, d)| *i == 0 || **d != 1).map(|(_, d)| *d).collect())
            }
        },
        _ => {
            let rank = full.len() + axes(usize::MAX / 2)?.map_or(0, |a| a.len());
            let Some(axes) = axes(rank)? else { return no("Unsqueeze needs axes") };
            let mut rest = full.iter().copied();
            Ok((0..rank).map(|i| if axes.contains(&i) { 1 } else { rest.next().unwrap_or(1) }).collect())
        }
    }
}
