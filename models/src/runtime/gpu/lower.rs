//! Lowering of the operators that become their own kernels or fold at load: Gemm, MatMul,
//! Softmax, ArgMax, reductions, Concat, the reshapes, Transpose, Gather.

use tract_onnx::pb;

use super::compile::{attr_f, attr_i, attr_ints, Act, Compiler, Const, Src, Value};
use super::ops::{Activation, Count, StepKind};
use super::shape::{axis, no, per_row, split, strides_of, Res, Unsupported};

impl<'g> Compiler<'g> {
    pub(super) fn gemm(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let a = self.act(node, 0)?;
        let b = self.constant(node, 1)?;
        if attr_i(node, "transA", 0) != 0 {
            return no("transA=1 on a batched input would move the batch dimension");
        }
        if a.rest.len() != 1 || b.shape.len() != 2 {
            return no("Gemm takes 2-D operands");
        }
        let alpha = attr_f(node, "alpha", 1.0);
        let beta = attr_f(node, "beta", 1.0);
        let trans_b = attr_i(node, "transB", 0) != 0;
        let (k, n) = if trans_b { (b.shape[1], b.shape[0]) } else { (b.shape[0], b.shape[1]) };
        if k != a.rest[0] {
            return no(format!("inner dimensions differ: {} and {k}", a.rest[0]));
        }
        let mut weights = vec![0.0f32; k * n];
        for kk in 0..k {
            for nn in 0..n {
                let v = if trans_b { b.data[nn * k + kk] } else { b.data[kk * n + nn] };
                weights[kk * n + nn] = alpha * v;
            }
        }
        let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
            None => None,
            Some(_) => {
                let c = self.constant(node, 2)?;
                let len = per_row(&c.shape);
                let fits = len == 1 || (len == n && c.shape.last() == Some(&n));
                if !fits {
                    return no(format!("bias of shape {:?} is not covered (use [N] or a scalar)", c.shape));
                }
                Some((self.new_const(c.data.iter().map(|v| v * beta).collect()), len))
            }
        };
        let b = self.new_const(weights);
        let kind = StepKind::MatMul { a: a.buf, b, bias, m_per_row: 1, k, n, activation: Activation::None };
        self.emit(node, kind, vec![n], false)
    }

    pub(super) fn matmul(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let a = self.act(node, 0)?;
        let b = self.constant(node, 1)?;
        let k = *a.rest.last().unwrap_or(&0);
        let (bk, n, mut rest) = match b.shape.as_slice() {
            [bk, n] => (*bk, *n, a.rest.clone()),
            [bk] => (*bk, 1, a.rest.clone()),
            _ => return no("MatMul with a batched or 3-D+ right operand is not covered"),
        };
        if bk != k || a.rest.is_empty() {
            return no(format!("inner dimensions differ: {k} and {bk}"));
        }
        if b.shape.len() == 2 {
            if let Some(last) = rest.last_mut() {
                *last = n;
            }
        } else {
            rest.pop();
        }
        let m_per_row = per_row(&a.rest[..a.rest.len() - 1]);
        let b = self.new_const(b.data);
        let kind =
            StepKind::MatMul { a: a.buf, b, bias: None, m_per_row, k, n, activation: Activation::None };
        self.emit(node, kind, rest, false)
    }

    pub(super) fn softmax(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let x = self.act(node, 0)?;
        let rank = x.rest.len() + 1;
        let default = if self.opset >= 13 { -1 } else { 1 };
        let ax = axis(attr_i(node, "axis", default), rank)?;
        if ax == 0 {
            return no("softmax over the batch dimension");
        }
        if self.opset < 13 && ax != rank - 1 {
            return no("opset < 13 softmax over other than the last axis");
        }
        let (outer, len, inner) = split(&x.rest, ax - 1);
        let kind = StepKind::Softmax { x: x.buf, outer, len, inner };
        self.emit(node, kind, x.rest.clone(), false)
    }

    pub(super) fn argmax(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let x = self.act(node, 0)?;
        let ax = axis(attr_i(node, "axis", 0), x.rest.len() + 1)?;
        if ax == 0 {
            return no("argmax over the batch dimension");
        }
        let (outer, len, inner) = split(&x.rest, ax - 1);
        let mut rest = x.rest.clone();
        if attr_i(node, "keepdims", 1) != 0 {
            rest[ax - 1] = 1;
        } else {
            rest.remove(ax - 1);
        }
        let last = attr_i(node, "select_last_index", 0) != 0;
        self.emit(node, StepKind::ArgMax { x: x.buf, outer, len, inner, last }, rest, true)
    }

    pub(super) fn reduce(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let x = self.act(node, 0)?;
        let rank = x.rest.len() + 1;
        // ReduceSum takes its axes as an input from opset 13, ReduceMean from 18.
        let axes = match attr_ints(node, "axes") {
            Some(a) => Some(a),
            None => self.ints_input(node, 1)?,
        };
        let axes: Vec<usize> = match axes {
            Some(a) if !a.is_empty() => a.iter().map(|&a| axis(a, rank)).collect::<Res<_>>()?,
            _ if attr_i(node, "noop_with_empty_axes", 0) != 0 => return self.identity(node),
            _ => (0..rank).collect(),
        };
        if axes.contains(&0) {
            return no("reducing over the batch dimension");
        }
        let keep = attr_i(node, "keepdims", 1) != 0;
        let mut rest = Vec::new();
        for (i, d) in x.rest.iter().enumerate() {
            if !axes.contains(&(i + 1)) {
                rest.push(*d);
            } else if keep {
                rest.push(1);
            }
        }
        let reduced: Vec<usize> = axes.iter().map(|a| a - 1).collect();
        let mean = node.op_type == "ReduceMean";
        self.emit(node, StepKind::Reduce { x: x.buf, shape: x.rest.clone(), reduced, mean }, rest, x.int)
    }

    pub(super) fn concat(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let values: Vec<Value> = (0..node.input.len()).map(|i| self.input(node, i)).collect::<Res<_>>()?;
        if values.iter().all(|v| matches!(v, Value::Const(_))) {
            let consts: Vec<Const> = values
                .into_iter()
                .filter_map(|v| if let Value::Const(c) = v { Some(c) } else { None })
                .collect();
            let c = super::fold::concat(&consts, attr_i(node, "axis", 0))?;
            return self.set(node, Value::Const(c));
        }
        let mut acts = Vec::new();
        for v in values {
            match v {
                Value::Act(a) => acts.push(a),
                Value::Const(_) => return no("concatenating constants with activations is not covered"),
            }
        }
        let rank = acts[0].rest.len() + 1;
        let ax = axis(attr_i(node, "axis", 0), rank)?;
        if ax == 0 {
            return no("concatenating along the batch dimension");
        }
        let mut rest = acts[0].rest.clone();
        rest[ax - 1] = 0;
        for a in &acts {
            let same = a.rest.len() == rest.len()
                && a.rest.iter().zip(&acts[0].rest).enumerate().all(|(i, (x, y))| i == ax - 1 || x == y);
            if !same {
                return no("inputs differ in shape outside the concatenation axis");
            }
            rest[ax - 1] += a.rest[ax - 1];
        }
        let (outer, _, inner) = split(&rest, ax - 1);
        let parts = acts.iter().map(|a| (a.buf, a.rest[ax - 1])).collect();
        let int = acts.iter().all(|a| a.int);
        self.emit(node, StepKind::Concat { parts, outer, inner }, rest, int)
    }

    pub(super) fn reshape(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let value = self.input(node, 0)?;
        let full: Vec<usize> = match &value {
            Value::Const(c) => c.shape.clone(),
            Value::Act(a) => std::iter::once(1).chain(a.rest.iter().copied()).collect(),
        };
        let target = super::fold::reshape_target(node, &full, self.opset, |i| self.ints_input(node, i))?;
        match value {
            Value::Const(mut c) => {
                c.shape = target;
                self.set(node, Value::Const(c))
            }
            Value::Act(a) => {
                // The batch must stay the leading dimension, alone: a per-row shape of 1 × rest.
                match target.split_first() {
                    Some((1, rest)) if per_row(rest) == per_row(&a.rest) => {
                        self.set(node, Value::Act(Act { rest: rest.to_vec(), ..a }))
                    }
                    _ => no(format!(
                        "reshaping [N, {:?}] to {target:?} would fold the batch dimension",
                        a.rest
                    )),
                }
            }
        }
    }

    pub(super) fn transpose(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let value = self.input(node, 0)?;
        let rank = match &value {
            Value::Const(c) => c.shape.len(),
            Value::Act(a) => a.rest.len() + 1,
        };
        let perm: Vec<usize> = match attr_ints(node, "perm") {
            Some(p) => p.iter().map(|&p| axis(p, rank)).collect::<Res<_>>()?,
            None => (0..rank).rev().collect(),
        };
        let x = match value {
            Value::Const(c) => return self.set(node, Value::Const(super::fold::transpose(&c, &perm)?)),
            Value::Act(a) => a,
        };
        if perm.first() != Some(&0) {
            return no("a transpose that moves the batch dimension");
        }
        let full: Vec<usize> = std::iter::once(1).chain(x.rest.iter().copied()).collect();
        let strides = strides_of(&full);
        let rest: Vec<usize> = perm[1..].iter().map(|&p| full[p]).collect();
        let mut s: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
        s[0] = per_row(&x.rest);
        let kind =
            StepKind::Map { rest: rest.clone(), inputs: vec![(Src::Act(x.buf), s)], expr: "x0".into() };
        self.emit(node, kind, rest, x.int)
    }

    pub(super) fn gather(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let data = self.input(node, 0)?;
        let indices = self.input(node, 1)?;
        match (&data, &indices) {
            (Value::Const(d), Value::Const(i)) => {
                let c = super::fold::gather(d, i, attr_i(node, "axis", 0))?;
                self.set(node, Value::Const(c))
            }
            // An embedding table looked up by computed indices.
            (Value::Const(d), Value::Act(i)) => {
                let ax = axis(attr_i(node, "axis", 0), d.shape.len())?;
                if ax != 0 {
                    return no("gathering a constant along other than axis 0 by computed indices");
                }
                let inner = per_row(&d.shape[1..]);
                let rest: Vec<usize> = i.rest.iter().chain(&d.shape[1..]).copied().collect();
                let table = self.new_const(d.data.clone());
                self.program.checks_indices = true;
                let kind = StepKind::Gather {
                    data: Src::Const(table),
                    indices: Src::Act(i.buf),
                    outer: Count::Fixed(1),
                    count: Count::PerRow(per_row(&i.rest)),
                    dim: d.shape[0],
                    inner,
                };
                self.emit(node, kind, rest, d.ints.is_some())
            }
            // Columns picked from an activation by constant indices.
            (Value::Act(d), Value::Const(i)) => {
                let ax = axis(attr_i(node, "axis", 0), d.rest.len() + 1)?;
                if ax == 0 {
                    return no("gathering rows of the batch");
                }
                let dim = d.rest[ax - 1];
                let idx = i.ints.clone().ok_or_else(|| Unsupported("indices must be integers".into()))?;
                if let Some(bad) = idx.iter().find(|&&v| v < -(dim as i64) || v >= dim as i64) {
                    return no(format!("index {bad} is out of range for a dimension of {dim}"));
                }
                let (outer, _, inner) = split(&d.rest, ax - 1);
                let rest: Vec<usize> =
                    d.rest[..ax - 1].iter().chain(&i.shape).chain(&d.rest[ax..]).copied().collect();
                let indices = self.new_const(idx.iter().map(|&v| v as f32).collect());
                let kind = StepKind::Gather {
                    data: Src::Act(d.buf),
                    indices: Src::Const(indices),
                    outer: Count::PerRow(outer),
                    count: Count::Fixed(idx.len()),
                    dim,
                    inner,
                };
                self.emit(node, kind, rest, d.int)
            }
            (Value::Act(_), Value::Act(_)) => no("gathering an activation by computed indices"),
        }
    }
}
