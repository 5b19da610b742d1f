//! Running a batch as one image: the batch axis becomes a depth axis of 3-D convolutions.
//!
//! tract convolves a batch one image at a time: its im2col and matrix product loop over the
//! batch, so every image streams the whole packed weight matrix again (a 512×4608 layer is
//! 9.4 MB) and the matrix products of the small late layers (4×4 pixels: 16 columns) stay
//! tiny, and its fast lazy im2col is only used for a batch of one. See docs/cpu-performance.md.
//!
//! This rewrite of the ONNX graph turns an `[N, C, H, W]` input into `[1, C, N, H, W]` and every
//! 2-D convolution on it into a 3-D one with a kernel of depth 1 (`[1, kh, kw]`, no padding or
//! stride along the batch axis). Each output still depends on one image only, but tract now sees
//! a single image whose `N·H·W` output points form one wide matrix product: the weights are
//! packed once and read once per batch. Element-wise operators (`Relu`, `Add` of two rewritten
//! tensors, …) work unchanged on the new layout. Any other consumer of a rewritten tensor, and
//! every graph output, gets the tensor back in `[N, C, H, W]` (a transpose and a squeeze) under
//! its original name, so the graph's inputs and outputs do not change.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, ModelProto, NodeProto,
    TensorProto,
};

/// Operators that take any layout: one output element from the same element of each input.
const ELEMENTWISE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Clip",
    "HardSigmoid",
    "HardSwish",
    "Elu",
    "Selu",
    "Identity",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Max",
    "Min",
    "Sum",
];

/// Suffix of the rewritten (5-D) twin of a tensor.
const TWIN: &str = "/slim_batch_depth";

/// The graph with its batch run as a depth axis, or `None` when it does not apply: no 4-D input,
/// an opset older than 13, or no 2-D convolution reachable from the input.
pub fn batch_as_depth(model: &ModelProto) -> Option<ModelProto> {
    if onnx_opset(model)? < 13 {
        return None;
    }
    let mut model = model.clone();
    let graph = model.graph.as_mut()?;
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input = graph
        .input
        .iter()
        .find(|i| !initializers.contains(i.name.as_str()))?
        .name
        .clone();
    let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();

    let mut rw = Rewriter::default();
    rw.input_to_5d(&input);
    let mut convolutions = 0;
    for n in std::mem::take(&mut graph.node) {
        if rw.rewrite(n) {
            convolutions += 1;
        }
    }
    for o in &outputs {
        if rw.five_d.contains(o) {
            rw.back_to_4d(o);
        }
    }
    if convolutions == 0 {
        return None;
    }
    graph.node = rw.nodes;
    graph.initializer.extend(rw.initializers);
    Some(model)
}

/// The version of the default (`ai.onnx`) operator set the model imports.
fn onnx_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
}

#[derive(Default)]
struct Rewriter {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Original names of the tensors that exist as a rewritten twin.
    five_d: HashSet<String>,
    /// Tensors already converted back under their original name.
    restored: HashSet<String>,
    /// `axes` constants by value.
    axes: HashMap<Vec<i64>, String>,
    count: usize,
}

impl Rewriter {
    fn push(&mut self, n: NodeProto) {
        self.nodes.push(n);
    }

    fn fresh(&mut self, base: &str) -> String {
        self.count += 1;
        format!("{base}/slim_bd{}", self.count)
    }

    fn axes(&mut self, axes: &[i64]) -> String {
        if let Some(name) = self.axes.get(axes) {
            return name.clone();
        }
        let name = format!(
            "slim_bd.axes_{}",
            axes.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join("_")
        );
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![axes.len() as i64],
            data_type: DataType::Int64 as i32,
            int64_data: axes.to_vec(),
            ..Default::default()
        });
        self.axes.insert(axes.to_vec(), name.clone());
        name
    }

    /// Makes the twin `[1, C, N, H, W]` of the graph's `[N, C, H, W]` input `input`.
    fn input_to_5d(&mut self, input: &str) {
        // [N, C, H, W] -> [C, N, H, W] -> [1, C, N, H, W]
        let transposed = self.fresh("input.cnhw");
        self.push(node(
            "Transpose",
            &[input],
            &[&transposed],
            vec![ints("perm", &[1, 0, 2, 3])],
        ));
        let axes0 = self.axes(&[0]);
        self.push(node(
            "Unsqueeze",
            &[&transposed, &axes0],
            &[&twin(input)],
            vec![],
        ));
        self.five_d.insert(input.to_string());
    }

    /// Adds `n`: on the twins of its inputs when it can run on them (its outputs then exist as
    /// twins), else on its inputs made back into `[N, C, H, W]`. True when `n` is a convolution
    /// that now runs on a twin.
    fn rewrite(&mut self, mut n: NodeProto) -> bool {
        let on_5d: Vec<bool> = n.input.iter().map(|i| self.five_d.contains(i)).collect();
        if !on_5d.iter().any(|&b| b) {
            self.push(n);
            return false;
        }
        let supported = match n.op_type.as_str() {
            "Conv" => on_5d[0] && on_5d.iter().skip(1).all(|&b| !b) && conv_to_3d(&mut n),
            "BatchNormalization" => on_5d[0] && on_5d.iter().skip(1).all(|&b| !b),
            op if ELEMENTWISE.contains(&op) => on_5d.iter().all(|&b| b),
            _ => false,
        };
        if !supported {
            for (i, _) in on_5d.iter().enumerate().filter(|(_, &b)| b) {
                let name = n.input[i].clone();
                self.back_to_4d(&name);
            }
            self.push(n);
            return false;
        }
        let convolution = n.op_type == "Conv";
        if convolution {
            let axes2 = self.axes(&[2]);
            let weight = self.fresh(&format!("{}.weight_1hw", n.input[1]));
            self.push(node(
                "Unsqueeze",
                &[&n.input[1], &axes2],
                &[&weight],
                vec![],
            ));
            n.input[1] = weight;
        }
        n.input[0] = twin(&n.input[0]);
        if n.op_type != "Conv" && n.op_type != "BatchNormalization" {
            for i in n.input.iter_mut().skip(1) {
                *i = twin(i);
            }
        }
        for o in n.output.iter_mut() {
            self.five_d.insert(o.clone());
            *o = twin(o);
        }
        self.push(n);
        convolution
    }

    /// Makes the `[N, C, H, W]` tensor `name` from its twin `[1, C, N, H, W]`, once.
    fn back_to_4d(&mut self, name: &str) {
        if !self.restored.insert(name.to_string()) {
            return;
        }
        let moved = self.fresh(&format!("{name}.ncchw"));
        self.push(node(
            "Transpose",
            &[&twin(name)],
            &[&moved],
            vec![ints("perm", &[0, 2, 1, 3, 4])],
        ));
        let axes0 = self.axes(&[0]);
        self.push(node("Squeeze", &[&moved, &axes0], &[name], vec![]));
    }
}

fn twin(name: &str) -> String {
    format!("{name}{TWIN}")
}

/// Turns a 2-D `Conv` into a 3-D one of depth 1 in place; false (node untouched) when its
/// attributes are not the explicit 2-D form this rewrite understands.
fn conv_to_3d(n: &mut NodeProto) -> bool {
    let get = |name: &str| n.attribute.iter().find(|a| a.name == name);
    if let Some(pad) = get("auto_pad") {
        if !pad.s.is_empty() && pad.s != b"NOTSET" {
            return false;
        }
    }
    let Some(kernel) = get("kernel_shape").map(|a| a.ints.clone()) else {
        return false;
    };
    if kernel.len() != 2 {
        return false;
    }
    let pads = get("pads").map_or(vec![0; 4], |a| a.ints.clone());
    let strides = get("strides").map_or(vec![1; 2], |a| a.ints.clone());
    let dilations = get("dilations").map_or(vec![1; 2], |a| a.ints.clone());
    if pads.len() != 4 || strides.len() != 2 || dilations.len() != 2 {
        return false;
    }
    let group = get("group").map_or(1, |a| a.i);
    n.attribute = vec![
        ints("kernel_shape", &[1, kernel[0], kernel[1]]),
        ints("pads", &[0, pads[0], pads[1], 0, pads[2], pads[3]]),
        ints("strides", &[1, strides[0], strides[1]]),
        ints("dilations", &[1, dilations[0], dilations[1]]),
        AttributeProto {
            name: "group".into(),
            r#type: AttributeType::Int as i32,
            i: group,
            ..Default::default()
        },
    ];
    true
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("slim_bd.{}", outputs[0]),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use tract_onnx::prelude::*;

    use super::*;

    fn models() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }

    /// Runs `proto` on `input` (`[batch, …]`) through tract's optimized plan.
    fn run(proto: &ModelProto, input: &Tensor) -> Vec<Tensor> {
        let mut model = tract_onnx::onnx().model_for_proto_model(proto).unwrap();
        let shape: TVec<TDim> = input.shape().iter().map(|&d| d.to_dim()).collect();
        model
            .set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))
            .unwrap();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        plan.run(tvec!(input.clone().into()))
            .unwrap()
            .into_iter()
            .map(|t| t.into_tensor())
            .collect()
    }

    fn random_input(shape: &[usize]) -> Tensor {
        // A fixed pseudo-random pattern in [-1, 1): every image of the batch differs.
        let len: usize = shape.iter().product();
        let values: Vec<f32> = (0..len as u64)
            .map(|i| {
                let x = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from(tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), values).unwrap())
    }

    fn assert_same_outputs(path: &Path, input_shape: &[usize]) {
        let proto = tract_onnx::onnx().proto_model_for_path(path).unwrap();
        let rewritten = batch_as_depth(&proto).expect("the rewrite applies");
        let input = random_input(input_shape);
        let want = run(&proto, &input);
        let got = run(&rewritten, &input);
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.shape(), g.shape(), "{}", path.display());
            let w = w.to_plain_array_view::<f32>().unwrap();
            let g = g.to_plain_array_view::<f32>().unwrap();
            let diff = w
                .iter()
                .zip(g.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let scale = w.iter().map(|a| a.abs()).fold(0.0f32, f32::max).max(1.0);
            assert!(diff <= 1e-4 * scale, "{}: max diff {diff}", path.display());
        }
    }

    #[test]
    fn rewritten_models_compute_what_the_originals_compute() {
        // Whole models (convolutions, residual Adds, global pooling, a Gemm head) at batch 3.
        assert_same_outputs(&models().join("digits/digits_w1.0.onnx"), &[3, 1, 8, 8]);
        assert_same_outputs(
            &models().join("cifar-slimresnet/cifar-slimresnet_w0.25.onnx"),
            &[3, 3, 32, 32],
        );
    }

    #[test]
    fn graph_outputs_and_inputs_keep_their_nchw_layout() {
        // A segment ends on a convolution's activations (a 4-D graph output) and the next one
        // starts on them: both are converted back at the graph's boundary.
        let dir = models().join("cifar-slimresnet");
        assert_same_outputs(
            &dir.join("cifar-slimresnet_w0.25.seg0.onnx"),
            &[2, 3, 32, 32],
        );
        let seg1 = tract_onnx::onnx()
            .proto_model_for_path(dir.join("cifar-slimresnet_w0.25.seg1.onnx"))
            .unwrap();
        let seg0 = run(
            &tract_onnx::onnx()
                .proto_model_for_path(dir.join("cifar-slimresnet_w0.25.seg0.onnx"))
                .unwrap(),
            &random_input(&[2, 3, 32, 32]),
        );
        let rewritten = batch_as_depth(&seg1).expect("the rewrite applies");
        let want = run(&seg1, &seg0[0]);
        let got = run(&rewritten, &seg0[0]);
        let diff = want[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .zip(got[0].to_plain_array_view::<f32>().unwrap().iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "seg1: max diff {diff}");
    }

    #[test]
    fn a_graph_without_convolution_is_left_alone() {
        let mut proto = tract_onnx::onnx()
            .proto_model_for_path(models().join("digits/digits_w0.25.onnx"))
            .unwrap();
        let graph = proto.graph.as_mut().unwrap();
        graph.node.retain(|n| n.op_type != "Conv");
        assert!(batch_as_depth(&proto).is_none());
    }
}
