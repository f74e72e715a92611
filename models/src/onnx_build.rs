//! Build small ONNX graphs in code: the GPU parity tests' random graphs and the benchmarks'
//! larger models are made with it. One `[N, width]` float input named `input`.

use prost::Message;
use tract_onnx::pb;

/// ONNX element types used here.
pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;

#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    outputs: Vec<(String, i32)>,
    width: usize,
    next: usize,
}

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
}

impl GraphBuilder {
    pub fn new(width: usize) -> Self {
        Self { width, ..Default::default() }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    /// A float constant.
    pub fn constant(&mut self, shape: &[usize], data: Vec<f32>) -> String {
        self.initializer(
            "c",
            shape,
            pb::TensorProto { data_type: FLOAT, float_data: data, ..Default::default() },
        )
    }

    /// An int64 constant (shapes, axes, indices).
    pub fn ints(&mut self, shape: &[usize], data: Vec<i64>) -> String {
        self.initializer(
            "i",
            shape,
            pb::TensorProto { data_type: INT64, int64_data: data, ..Default::default() },
        )
    }

    fn initializer(&mut self, prefix: &str, shape: &[usize], tensor: pb::TensorProto) -> String {
        let name = self.fresh(prefix);
        let dims = shape.iter().map(|&d| d as i64).collect();
        self.inits.push(pb::TensorProto { name: name.clone(), dims, ..tensor });
        name
    }

    /// Add a node; returns its (first) output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh("t");
        let attribute = attrs
            .iter()
            .map(|(name, a)| {
                let mut p = pb::AttributeProto { name: name.to_string(), ..Default::default() };
                match a {
                    Attr::Int(i) => {
                        p.i = *i;
                        p.r#type = pb::attribute_proto::AttributeType::Int as i32;
                    }
                    Attr::Float(f) => {
                        p.f = *f;
                        p.r#type = pb::attribute_proto::AttributeType::Float as i32;
                    }
                    Attr::Ints(v) => {
                        p.ints = v.clone();
                        p.r#type = pb::attribute_proto::AttributeType::Ints as i32;
                    }
                }
                p
            })
            .collect();
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
        out
    }

    /// Mark `name` a graph output of element type `elem` ([`FLOAT`] or [`INT64`]).
    pub fn output(&mut self, name: &str, elem: i32) {
        self.outputs.push((name.to_string(), elem));
    }

    /// The model's bytes (opset 13).
    pub fn finish(self) -> Vec<u8> {
        let dim = |v: pb::tensor_shape_proto::dimension::Value| pb::tensor_shape_proto::Dimension {
            value: Some(v),
            ..Default::default()
        };
        let value_info = |name: &str, elem: i32, shape: Option<Vec<pb::tensor_shape_proto::Dimension>>| {
            pb::ValueInfoProto {
                name: name.to_string(),
                r#type: Some(pb::TypeProto {
                    value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                        elem_type: elem,
                        shape: shape.map(|dim| pb::TensorShapeProto { dim }),
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        use pb::tensor_shape_proto::dimension::Value as D;
        let input = value_info(
            "input",
            FLOAT,
            Some(vec![dim(D::DimParam("N".into())), dim(D::DimValue(self.width as i64))]),
        );
        let graph = pb::GraphProto {
            node: self.nodes,
            name: "built".into(),
            initializer: self.inits,
            input: vec![input],
            output: self.outputs.iter().map(|(n, e)| value_info(n, *e, None)).collect(),
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
            producer_name: "meridian-onnx-build".into(),
            graph: Some(graph),
            ..Default::default()
        };
        model.encode_to_vec()
    }
}

/// A dense MLP `width → hidden.. → classes` with Relu between layers and a Softmax at the end,
/// weights drawn from `rng` (Gemm with transB, as PyTorch exports Linear).
pub fn mlp(width: usize, hidden: &[usize], classes: usize, rng: &mut impl FnMut() -> f32) -> Vec<u8> {
    let mut g = GraphBuilder::new(width);
    let mut prev = "input".to_string();
    let mut fan_in = width;
    for (i, &h) in hidden.iter().chain(std::iter::once(&classes)).enumerate() {
        let scale = (2.0 / fan_in as f32).sqrt();
        let w = g.constant(&[h, fan_in], (0..h * fan_in).map(|_| rng() * scale).collect());
        let b = g.constant(&[h], (0..h).map(|_| rng() * 0.1).collect());
        let y = g.node("Gemm", &[&prev, &w, &b], &[("transB", Attr::Int(1))]);
        prev = if i < hidden.len() { g.node("Relu", &[&y], &[]) } else { y };
        fan_in = h;
    }
    let probs = g.node("Softmax", &[&prev], &[("axis", Attr::Int(1))]);
    g.output(&probs, FLOAT);
    g.finish()
}
