//! Shape arithmetic shared by the compiler and the constant folder: row sizes, axes, strides,
//! numpy broadcasting.

/// Why a graph cannot run on the GPU; it names the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) type Res<T> = Result<T, Unsupported>;

pub(crate) fn no<T>(msg: impl Into<String>) -> Res<T> {
    Err(Unsupported(msg.into()))
}

pub(crate) fn per_row(rest: &[usize]) -> usize {
    rest.iter().product()
}

/// A possibly negative axis of a rank-`rank` tensor.
pub(crate) fn axis(a: i64, rank: usize) -> Res<usize> {
    let r = rank as i64;
    if a < -r || a >= r {
        return no(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// `rest` split at `ax` into (elements before, the axis, elements after).
pub(crate) fn split(rest: &[usize], ax: usize) -> (usize, usize, usize) {
    (per_row(&rest[..ax]), rest[ax], per_row(&rest[ax + 1..]))
}

pub(crate) fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The numpy broadcast of two shapes.
pub(crate) fn broadcast(x: &[usize], y: &[usize]) -> Res<Vec<usize>> {
    let rank = x.len().max(y.len());
    let pad =
        |s: &[usize]| std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect::<Vec<_>>();
    let (px, py) = (pad(x), pad(y));
    px.iter()
        .zip(&py)
        .map(|(p, q)| match (p, q) {
            (p, q) if p == q => Ok(*p),
            (1, q) => Ok(*q),
            (p, 1) => Ok(*p),
            _ => no(format!("shapes {x:?} and {y:?} do not broadcast")),
        })
        .collect()
}

/// Strides that read a tensor of `shape` broadcast to `full` (batch first); a batched tensor's
/// leading stride steps whole rows, a constant's is 0 (its leading dimension, if any, is 1).
pub(crate) fn broadcast_strides(shape: &[usize], full: &[usize], batched: bool) -> Res<Vec<usize>> {
    if shape.len() > full.len() {
        return no(format!("shape {shape:?} has more dimensions than the result"));
    }
    let pad = full.len() - shape.len();
    if batched && pad > 0 {
        return no("a constant with more dimensions than the activation would move the batch dimension");
    }
    let padded: Vec<usize> = std::iter::repeat_n(1, pad).chain(shape.iter().copied()).collect();
    let own = strides_of(&padded);
    let mut s = vec![0; full.len()];
    for i in 0..full.len() {
        if i == 0 {
            if batched {
                s[0] = per_row(&padded[1..]);
            } else if padded[0] != 1 {
                return no(format!("a constant of shape {shape:?} would broadcast against the batch"));
            }
        } else if padded[i] == full[i] {
            s[i] = own[i];
        } else if padded[i] != 1 {
            return no(format!("shapes {shape:?} and {full:?} do not broadcast"));
        }
    }
    Ok(s)
}
