//! The steps a compiled program runs, one compute pipeline each.

use super::compile::Src;

/// An activation fused into a matmul's epilogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Activation {
    None,
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
}

/// A count that is either fixed or a multiple of the batch's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Fixed(usize),
    PerRow(usize),
}

impl Count {
    pub fn at(self, rows: usize) -> usize {
        match self {
            Count::Fixed(n) => n,
            Count::PerRow(n) => n * rows,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// The activation buffer written.
    pub out: usize,
    pub kind: StepKind,
}

#[derive(Debug, Clone)]
pub(crate) enum StepKind {
    /// `out[M, n] = act(a[M, k] · b[k, n] + bias)`, `M = rows · m_per_row`; `bias` is a
    /// constant of `n` or 1 element.
    MatMul {
        a: usize,
        b: usize,
        bias: Option<(usize, usize)>,
        m_per_row: usize,
        k: usize,
        n: usize,
        activation: Activation,
    },
    /// Elementwise over `[rows, rest..]`: input `i` is read at the dot product of the output
    /// coordinates with its strides (0 where it broadcasts) and named `x{i}` in `expr`.
    Map { rest: Vec<usize>, inputs: Vec<(Src, Vec<usize>)>, expr: String },
    /// Softmax over the middle axis of `[rows · outer, len, inner]`.
    Softmax { x: usize, outer: usize, len: usize, inner: usize },
    /// Index of the largest value along the middle axis of `[rows · outer, len, inner]`.
    ArgMax { x: usize, outer: usize, len: usize, inner: usize, last: bool },
    /// Sum or mean of a row of `shape` over the `reduced` axes (of the row).
    Reduce { x: usize, shape: Vec<usize>, reduced: Vec<usize>, mean: bool },
    /// Concatenation along the middle axis of `[rows · outer, Σ len, inner]`.
    Concat { parts: Vec<(usize, usize)>, outer: usize, inner: usize },
    /// `out[o, i, r] = data[o, indices[i], r]` with `data` of `[outer, dim, inner]`; indices
    /// out of `[-dim, dim)` raise the error flag and write 0.
    Gather { data: Src, indices: Src, outer: Count, count: Count, dim: usize, inner: usize },
}
