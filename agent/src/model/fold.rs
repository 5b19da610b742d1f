//! Folding dequantized weights into plain constants at load time.
//!
//! The model files store each convolution's weights as int8 plus a scale (`Cast` then `Mul`),
//! which keeps the repository small. tract folds constant sub-graphs only while the folded
//! value stays under a 4 MiB budget (`CONST_FOLD_MEM_BUDGET`), so the largest layers of the
//! ResNet (512×512×3×3, 9.4 MB as f32) stay as `Cast → Mul → pack` nodes that run on *every*
//! inference. Measured on cifar-slimresnet width 1.0, batch 1: 49.5 ms per image unfolded, see
//! docs/cpu-performance.md for the folded figure. This pass evaluates every node whose inputs
//! are all constants, whatever the size, and replaces it by its value, trading memory (f32
//! weights, as onnxruntime keeps them) for speed.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::source::TypedSource;

/// Replaces every stateless node whose inputs are all constant by the constant it evaluates
/// to. Returns how many nodes were folded.
pub fn fold_constants(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    while let Some(patch) = next_fold(model)? {
        patch.apply(model)?;
        folded += 1;
    }
    Ok(folded)
}

fn next_fold(model: &TypedModel) -> TractResult<Option<TypedModelPatch>> {
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op_is::<Const>() || node.op_is::<TypedSource>() || node.inputs.is_empty() {
            continue;
        }
        let facts = model.node_input_facts(id)?;
        if !facts.iter().all(|f| f.konst.is_some()) {
            continue;
        }
        let inputs = facts
            .iter()
            .map(|f| f.konst.clone().unwrap().into_tvalue())
            .collect();
        // An op that cannot be evaluated outside a plan (stateful, or too early) is left alone.
        let Ok(Some(outputs)) = node.op.eval_out_of_plan(inputs) else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        for (ix, value) in outputs.into_iter().enumerate() {
            let wire = patch.add_const(
                format!("{}.folded.{ix}", node.name),
                value.into_arc_tensor(),
            )?;
            patch.shunt_outside(model, OutletId::new(id, ix), wire)?;
        }
        return Ok(Some(patch));
    }
    Ok(None)
}
