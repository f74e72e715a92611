//! ONNX graph → a GPU program: a list of [`Step`]s over activation buffers whose shape is
//! `[N, rest..]` with a static `rest` and the batch `N` known only at run time.
//!
//! Nodes whose inputs are all constants are folded here (layout ops only); layout ops on
//! activations (Reshape, Flatten, Squeeze, Unsqueeze, Identity, float casts) alias their input's
//! buffer. Anything outside the covered operators, or a shape that would move or fold the batch
//! dimension, is [`Unsupported`] with the node's name, and the model stays on tract.

use std::collections::HashMap;

use tract_onnx::pb;
use tract_onnx::prelude::{DatumType, Tensor};

use super::ops::{Activation, Count, Step, StepKind};

/// Why a graph cannot run on the GPU; it names the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Res<T> = Result<T, Unsupported>;

fn no<T>(msg: impl Into<String>) -> Res<T> {
    Err(Unsupported(msg.into()))
}

#[derive(Debug, Clone)]
pub(crate) struct Const {
    pub shape: Vec<usize>,
    /// Integer constants are kept exactly (shapes, axes, indices) beside their f32 values.
    pub ints: Option<Vec<i64>>,
    pub data: Vec<f32>,
}

/// An activation: a buffer and the shape of one row of it.
#[derive(Debug, Clone)]
pub(crate) struct Act {
    pub buf: usize,
    pub rest: Vec<usize>,
    /// Holds integer values (ArgMax, integer casts), stored as f32.
    pub int: bool,
}

#[derive(Debug, Clone)]
enum Value {
    Const(Const),
    Act(Act),
}

/// One graph output: the buffer it is read from and how to hand it back.
#[derive(Debug, Clone)]
pub(crate) struct OutputRef {
    pub name: String,
    pub buf: usize,
    pub rest: Vec<usize>,
    pub int: bool,
}

/// The compiled program, device-independent.
#[derive(Debug)]
pub(crate) struct Program {
    /// Elements per row of each activation buffer; buffer 0 is the input.
    pub buffers: Vec<usize>,
    pub consts: Vec<Vec<f32>>,
    pub steps: Vec<Step>,
    pub outputs: Vec<OutputRef>,
    /// Whether any step can raise the out-of-range flag (Gather on runtime indices).
    pub checks_indices: bool,
}

pub(crate) fn per_row(rest: &[usize]) -> usize {
    rest.iter().product()
}

struct Compiler<'g> {
    values: HashMap<&'g str, Value>,
    uses: HashMap<&'g str, usize>,
    graph_outputs: Vec<&'g str>,
    opset: i64,
    program: Program,
}

/// Compile a model's graph for an input of `width` columns.
pub(crate) fn compile(model: &pb::ModelProto, width: usize) -> Res<Program> {
    let Some(graph) = model.graph.as_ref() else { return no("the model has no graph") };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(13, |o| o.version);
    let mut c = Compiler {
        values: HashMap::new(),
        uses: HashMap::new(),
        graph_outputs: graph.output.iter().map(|o| o.name.as_str()).collect(),
        opset,
        program: Program {
            buffers: vec![width],
            consts: vec![],
            steps: vec![],
            outputs: vec![],
            checks_indices: false,
        },
    };
    for init in &graph.initializer {
        c.values.insert(init.name.as_str(), Value::Const(load_const(init)?));
    }
    let inputs: Vec<_> = graph.input.iter().filter(|i| !c.values.contains_key(i.name.as_str())).collect();
    let [input] = inputs.as_slice() else { return no("the graph must have exactly one input") };
    c.values.insert(input.name.as_str(), Value::Act(Act { buf: 0, rest: vec![width], int: false }));
    for node in &graph.node {
        for i in node.input.iter().filter(|i| !i.is_empty()) {
            *c.uses.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &c.graph_outputs {
        *c.uses.entry(o).or_default() += 1;
    }
    for node in &graph.node {
        c.node(node).map_err(|Unsupported(why)| {
            Unsupported(format!("{} node {:?}: {why}", node.op_type, node.name))
        })?;
    }
    for name in c.graph_outputs.clone() {
        match c.values.get(name) {
            Some(Value::Act(a)) => c.program.outputs.push(OutputRef {
                name: name.to_string(),
                buf: a.buf,
                rest: a.rest.clone(),
                int: a.int,
            }),
            Some(Value::Const(_)) => return no(format!("output {name:?} is a constant")),
            None => return no(format!("output {name:?} is never computed")),
        }
    }
    Ok(c.program)
}

fn load_const(t: &pb::TensorProto) -> Res<Const> {
    let tensor = tract_onnx::tensor::load_tensor(&tract_onnx::data_resolver::FopenDataResolver, t, None)
        .map_err(|e| Unsupported(format!("constant {:?}: {e}", t.name)))?;
    from_tensor(&tensor)
}

fn from_tensor(tensor: &Tensor) -> Res<Const> {
    let shape = tensor.shape().to_vec();
    let int = matches!(
        tensor.datum_type(),
        DatumType::I64 | DatumType::I32 | DatumType::I16 | DatumType::I8 | DatumType::U8 | DatumType::Bool
    );
    let cast = |dt| tensor.cast_to_dt(dt).map_err(|e| Unsupported(format!("constant: {e}")));
    let f = cast(DatumType::F32)?;
    let data =
        f.to_plain_array_view::<f32>().map_err(|e| Unsupported(format!("{e}")))?.iter().copied().collect();
    let ints = if int {
        let i = cast(DatumType::I64)?;
        Some(
            i.to_plain_array_view::<i64>()
                .map_err(|e| Unsupported(format!("{e}")))?
                .iter()
                .copied()
                .collect(),
        )
    } else {
        None
    };
    Ok(Const { shape, ints, data })
}

fn attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// A possibly negative axis of a rank-`rank` tensor.
pub(crate) fn axis(a: i64, rank: usize) -> Res<usize> {
    let r = rank as i64;
    if a < -r || a >= r {
        return no(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

impl<'g> Compiler<'g> {
    fn get(&self, name: &str) -> Res<Value> {
        self.values.get(name).cloned().ok_or_else(|| Unsupported(format!("input {name:?} is not known")))
    }

    fn input(&self, node: &pb::NodeProto, i: usize) -> Res<Value> {
        match node.input.get(i).filter(|n| !n.is_empty()) {
            Some(name) => self.get(name),
            None => no(format!("input {i} is missing")),
        }
    }

    fn act(&self, node: &pb::NodeProto, i: usize) -> Res<Act> {
        match self.input(node, i)? {
            Value::Act(a) => Ok(a),
            Value::Const(_) => no(format!("input {i} must be computed from the model's input")),
        }
    }

    fn constant(&self, node: &pb::NodeProto, i: usize) -> Res<Const> {
        match self.input(node, i)? {
            Value::Const(c) => Ok(c),
            Value::Act(_) => no(format!("input {i} must be a constant")),
        }
    }

    fn ints_input(&self, node: &pb::NodeProto, i: usize) -> Res<Option<Vec<i64>>> {
        if node.input.get(i).is_none_or(|n| n.is_empty()) {
            return Ok(None);
        }
        match self.constant(node, i)?.ints {
            Some(v) => Ok(Some(v)),
            None => no(format!("input {i} must be an integer constant")),
        }
    }

    fn set(&mut self, node: &'g pb::NodeProto, value: Value) -> Res<()> {
        let Some(out) = node.output.first() else { return no("the node has no output") };
        self.values.insert(out.as_str(), value);
        Ok(())
    }

    fn new_buffer(&mut self, rest: &[usize]) -> usize {
        self.program.buffers.push(per_row(rest).max(1));
        self.program.buffers.len() - 1
    }

    pub(crate) fn new_const(&mut self, data: Vec<f32>) -> usize {
        self.program.consts.push(if data.is_empty() { vec![0.0] } else { data });
        self.program.consts.len() - 1
    }

    /// Add a step writing a new activation of `rest`.
    fn emit(&mut self, node: &'g pb::NodeProto, kind: StepKind, rest: Vec<usize>, int: bool) -> Res<()> {
        let out = self.new_buffer(&rest);
        self.program.steps.push(Step { out, kind });
        self.set(node, Value::Act(Act { buf: out, rest, int }))
    }

    /// Whether `name` is used exactly once and is not a graph output (so it may be fused away).
    fn single_use(&self, name: &str) -> bool {
        self.uses.get(name) == Some(&1) && !self.graph_outputs.contains(&name)
    }

    fn node(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return no(format!("operators of domain {:?} are not covered", node.domain));
        }
        match node.op_type.as_str() {
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(node),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" => self.binary(node),
            "Relu" | "LeakyRelu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Neg" | "Abs" | "Sqrt"
            | "Reciprocal" => self.unary(node),
            "Identity" | "Dropout" => self.identity(node),
            "Cast" => self.cast(node),
            "Softmax" => self.softmax(node),
            "ReduceMean" | "ReduceSum" => self.reduce(node),
            "ArgMax" => self.argmax(node),
            "Concat" => self.concat(node),
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => self.reshape(node),
            "Transpose" => self.transpose(node),
            "Gather" => self.gather(node),
            "Constant" => {
                let Some(t) = attr(node, "value").and_then(|a| a.t.as_ref()) else {
                    return no("only tensor-valued Constant nodes are covered");
                };
                let c = load_const(t)?;
                self.set(node, Value::Const(c))
            }
            other => no(format!("the GPU runtime does not cover operator {other}")),
        }
    }

    fn identity(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let v = self.input(node, 0)?;
        self.set(node, v)
    }

    fn cast(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        // ONNX TensorProto.DataType: 1 float, 6 int32, 7 int64, 11 double.
        let to = attr_i(node, "to", 1);
        let int = match to {
            1 | 11 => false,
            6 | 7 => true,
            other => return no(format!("casts to ONNX type {other} are not covered")),
        };
        match self.input(node, 0)? {
            Value::Const(mut c) => {
                if int {
                    c.data.iter_mut().for_each(|v| *v = v.trunc());
                    c.ints = Some(c.data.iter().map(|v| *v as i64).collect());
                } else {
                    c.ints = None;
                }
                self.set(node, Value::Const(c))
            }
            Value::Act(a) if a.int || !int => self.set(node, Value::Act(Act { int, ..a })),
            Value::Act(a) => {
                let kind = self.map_kind(&a.rest, &[&Value::Act(a.clone())], "trunc(x0)")?;
                self.emit(node, kind, a.rest.clone(), true)
            }
        }
    }

    fn unary(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let x = self.act(node, 0)?;
        let activation = match node.op_type.as_str() {
            "Relu" => Some(Activation::Relu),
            "LeakyRelu" => Some(Activation::LeakyRelu(attr_f(node, "alpha", 0.01))),
            "Sigmoid" => Some(Activation::Sigmoid),
            "Tanh" => Some(Activation::Tanh),
            _ => None,
        };
        // Fuse an activation into the matmul that produced its only input.
        if let Some(activation) = activation {
            if let Some(step) = self.fusable_matmul(node, &x) {
                if let StepKind::MatMul { activation: slot @ Activation::None, .. } = &mut step.kind {
                    *slot = activation;
                    return self.set(node, Value::Act(x));
                }
            }
        }
        let expr = match node.op_type.as_str() {
            "Relu" => "max(x0, 0.0)".to_string(),
            "LeakyRelu" => format!("select({:?} * x0, x0, x0 >= 0.0)", attr_f(node, "alpha", 0.01)),
            "Sigmoid" => "sigmoid(x0)".to_string(),
            "Tanh" => "tanh_safe(x0)".to_string(),
            "Exp" => "exp(x0)".to_string(),
            "Log" => "log(x0)".to_string(),
            "Neg" => "-x0".to_string(),
            "Abs" => "abs(x0)".to_string(),
            "Sqrt" => "sqrt(x0)".to_string(),
            _ => "1.0 / x0".to_string(),
        };
        let kind = self.map_kind(&x.rest, &[&Value::Act(x.clone())], &expr)?;
        self.emit(node, kind, x.rest.clone(), x.int)
    }

    /// The last step, when it is a matmul writing `x` and nothing else reads `x`.
    fn fusable_matmul(&mut self, node: &pb::NodeProto, x: &Act) -> Option<&mut Step> {
        let name = node.input.first()?;
        if !self.single_use(name) {
            return None;
        }
        let step = self.program.steps.last_mut()?;
        (step.out == x.buf && matches!(step.kind, StepKind::MatMul { .. })).then_some(step)
    }

    fn binary(&mut self, node: &'g pb::NodeProto) -> Res<()> {
        let (a, b) = (self.input(node, 0)?, self.input(node, 1)?);
        let op = node.op_type.as_str();
        if let (Value::Const(a), Value::Const(b)) = (&a, &b) {
            let c = super::fold::binary(op, a, b)?;
            return self.set(node, Value::Const(c));
        }
        // A constant bias added to a matmul's only output joins the matmul.
        if let (Value::Act(x), Value::Const(bias), "Add") = (&a, &b, op) {
            if let Some(done) = self.fuse_bias(node, x, bias) {
                return done;
            }
        }
        let rest = broadcast_rest(&a, &b)?;
        let int = matches!((&a, &b), (Value::Act(x), Value::Act(y)) if x.int && y.int)
            || matches!((&a, &b), (Value::Act(x), Value::Const(c)) | (Value::Const(c), Value::Act(x)) if x.int && c.ints.is_some());
        let expr = match op {
            "Add" => "x0 + x1",
            "Sub" => "x0 - x1",
            "Mul" => "x0 * x1",
            "Div" if int => "trunc(x0 / x1)",
            "Div" => "x0 / x1",
            "Pow" => "pow_onnx(x0, x1)",
            "Max" => "max(x0, x1)",
            _ => "min(x0, x1)",
        };
        let kind = self.map_kind(&rest, &[&a, &b], expr)?;
        self.emit(node, kind, rest, int)
    }

    fn fuse_bias(&mut self, node: &'g pb::NodeProto, x: &Act, bias: &Const) -> Option<Res<()>> {
        let n_out = *x.rest.last()?;
        let bias_len = per_row(&bias.shape);
        let fits = (bias_len == n_out && bias.shape.last() == Some(&n_out)) || bias_len == 1;
        if !fits || bias.shape.len() > x.rest.len() + 1 {
            return None;
        }
        let data = bias.data.clone();
        let id = self.new_const(data);
        let step = self.fusable_matmul(node, x)?;
        match &mut step.kind {
            StepKind::MatMul { bias: slot @ None, activation: Activation::None, .. } => {
                *slot = Some((id, bias_len));
            }
            _ => return None,
        }
        Some(self.set(node, Value::Act(x.clone())))
    }

    fn gemm(&mut self, node: &'g pb::NodeProto) -> Res<()> {
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
        let (k, n) =
            if attr_i(node, "transB", 0) != 0 { (b.shape[1], b.shape[0]) } else { (b.shape[0], b.shape[1]) };
        if k != a.rest[0] {
            return no(format!("inner dimensions differ: {} and {k}", a.rest[0]));
        }
        let mut weights = vec![0.0f32; k * n];
        for kk in 0..k {
            for nn in 0..n {
                let v =
                    if attr_i(node, "transB", 0) != 0 { b.data[nn * k + kk] } else { b.data[kk * n + nn] };
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

    fn matmul(&mut self, node: &'g pb::NodeProto) -> Res<()> {
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

    fn softmax(&mut self, node: &'g pb::NodeProto) -> Res<()> {
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

    fn argmax(&mut self, node: &'g pb::NodeProto) -> Res<()> {
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

    fn reduce(&mut self, node: &'g pb::NodeProto) -> Res<()> {
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

    fn concat(&mut self, node: &'g pb::NodeProto) -> Res<()> {
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

    fn reshape(&mut self, node: &'g pb::NodeProto) -> Res<()> {
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

    fn transpose(&mut self, node: &'g pb::NodeProto) -> Res<()> {
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

    fn gather(&mut self, node: &'g pb::NodeProto) -> Res<()> {
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

    /// A broadcasting map over `rest` (plus the batch) reading `inputs`.
    fn map_kind(&mut self, rest: &[usize], inputs: &[&Value], expr: &str) -> Res<StepKind> {
        let full: Vec<usize> = std::iter::once(1).chain(rest.iter().copied()).collect();
        let mut srcs = Vec::new();
        for v in inputs {
            let (src, shape, batched) = match v {
                Value::Act(a) => {
                    (Src::Act(a.buf), std::iter::once(1).chain(a.rest.iter().copied()).collect(), true)
                }
                Value::Const(c) => (Src::Const(self.new_const(c.data.clone())), c.shape.clone(), false),
            };
            srcs.push((src, broadcast_strides(&shape, &full, batched)?));
        }
        Ok(StepKind::Map { rest: rest.to_vec(), inputs: srcs, expr: expr.to_string() })
    }
}

/// Where a step reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    Act(usize),
    Const(usize),
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

/// Strides that read a tensor of `shape` broadcast to `full` (batch first); a batched tensor's
/// leading stride steps whole rows, a constant's is 0 (its leading dimension, if any, is 1).
fn broadcast_strides(shape: &[usize], full: &[usize], batched: bool) -> Res<Vec<usize>> {
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

/// The per-row result shape of a binary op.
fn broadcast_rest(a: &Value, b: &Value) -> Res<Vec<usize>> {
    let full = |v: &Value| match v {
        Value::Act(a) => std::iter::once(1).chain(a.rest.iter().copied()).collect::<Vec<_>>(),
        Value::Const(c) => c.shape.clone(),
    };
    let (x, y) = (full(a), full(b));
    let rank = x.len().max(y.len());
    let pad =
        |s: &[usize]| std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect::<Vec<_>>();
    let (x, y) = (pad(&x), pad(&y));
    let mut out = Vec::with_capacity(rank);
    for (p, q) in x.iter().zip(&y) {
        out.push(match (p, q) {
            (p, q) if p == q => *p,
            (1, q) => *q,
            (p, 1) => *p,
            _ => return no(format!("shapes {x:?} and {y:?} do not broadcast")),
        });
    }
    if out.first() != Some(&1) {
        return no("a constant would broadcast against the batch");
    }
    Ok(out[1..].to_vec())
}
