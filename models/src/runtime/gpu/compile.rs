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

use super::ops::{Activation, Step, StepKind};
use super::shape::{broadcast, broadcast_strides, no};
pub(crate) use super::shape::{per_row, Res, Unsupported};

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
pub(super) enum Value {
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

pub(super) struct Compiler<'g> {
    values: HashMap<&'g str, Value>,
    uses: HashMap<&'g str, usize>,
    graph_outputs: Vec<&'g str>,
    pub(super) opset: i64,
    pub(super) program: Program,
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

pub(super) fn attr<'n>(node: &'n pb::NodeProto, name: &str) -> Option<&'n pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub(super) fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}

pub(super) fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}

pub(super) fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

impl<'g> Compiler<'g> {
    fn get(&self, name: &str) -> Res<Value> {
        self.values.get(name).cloned().ok_or_else(|| Unsupported(format!("input {name:?} is not known")))
    }

    pub(super) fn input(&self, node: &pb::NodeProto, i: usize) -> Res<Value> {
        match node.input.get(i).filter(|n| !n.is_empty()) {
            Some(name) => self.get(name),
            None => no(format!("input {i} is missing")),
        }
    }

    pub(super) fn act(&self, node: &pb::NodeProto, i: usize) -> Res<Act> {
        match self.input(node, i)? {
            Value::Act(a) => Ok(a),
            Value::Const(_) => no(format!("input {i} must be computed from the model's input")),
        }
    }

    pub(super) fn constant(&self, node: &pb::NodeProto, i: usize) -> Res<Const> {
        match self.input(node, i)? {
            Value::Const(c) => Ok(c),
            Value::Act(_) => no(format!("input {i} must be a constant")),
        }
    }

    pub(super) fn ints_input(&self, node: &pb::NodeProto, i: usize) -> Res<Option<Vec<i64>>> {
        if node.input.get(i).is_none_or(|n| n.is_empty()) {
            return Ok(None);
        }
        match self.constant(node, i)?.ints {
            Some(v) => Ok(Some(v)),
            None => no(format!("input {i} must be an integer constant")),
        }
    }

    pub(super) fn set(&mut self, node: &'g pb::NodeProto, value: Value) -> Res<()> {
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
    pub(super) fn emit(
        &mut self,
        node: &'g pb::NodeProto,
        kind: StepKind,
        rest: Vec<usize>,
        int: bool,
    ) -> Res<()> {
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

    pub(super) fn identity(&mut self, node: &'g pb::NodeProto) -> Res<()> {
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

    /// A broadcasting map over `rest` (plus the batch) reading `inputs`.
    pub(super) fn map_kind(&mut self, rest: &[usize], inputs: &[&Value], expr: &str) -> Res<StepKind> {
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

/// The per-row result shape of a binary op (the batch must stay the leading dimension).
fn broadcast_rest(a: &Value, b: &Value) -> Res<Vec<usize>> {
    let full = |v: &Value| match v {
        Value::Act(a) => std::iter::once(1).chain(a.rest.iter().copied()).collect::<Vec<_>>(),
        Value::Const(c) => c.shape.clone(),
    };
    let out = broadcast(&full(a), &full(b))?;
    if out.first() != Some(&1) {
        return no("a constant would broadcast against the batch");
    }
    Ok(out[1..].to_vec())
}
