"""ONNX export of one cut (static) network: the full model and its segments.

Every file: opset 17, input `input` [N, C, H, W] float32 with a dynamic batch axis `N`, output
`logits` (full model, last segment) or `output` (other segments). Exported in eval mode with
constant folding; batch norms are already folded into the convolutions by `slimmable.fold`,
so the graphs hold only Conv, Relu, Add, GlobalAveragePool, Flatten and Gemm.

`int8_storage` rewrites a file so that each conv/linear weight is stored as int8 with a
float32 per-output-channel scale and dequantized inside the graph (Cast -> Mul), which is
constant-folded by a runtime at load. The values are exactly the float weights the network
uses (they were int8 x scale to begin with, see `slimmable.quantize_int8_`).
"""

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def export_file(module, example, path, output_name):
    module.eval()
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["input"],
        output_names=[output_name],
        dynamic_axes={"input": {0: "N"}, output_name: {0: "N"}},
        opset_version=OPSET,
        do_constant_folding=True,
        training=torch.onnx.TrainingMode.EVAL,
        dynamo=False,
    )


def int8_storage(path, module):
    """Store the conv/Gemm weights of the ONNX file at `path` as int8 + per-channel scale.

    `module` is the static torch module the file was exported from; each of its conv/linear
    layers carries `int8 = (q, scale)` with weight == q * scale exactly. Every weight in the
    file must be matched bit for bit to one of them, or this fails.
    """
    cands = []
    for m in module.modules():
        if hasattr(m, "int8"):
            q, scale = m.int8
            cands.append((q.numpy(), scale.numpy(), m.weight.detach().numpy()))
    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes, dropped, added, used = [], set(), [], set()
    for node in g.node:
        if node.op_type in ("Conv", "Gemm") and node.input[1] in inits:
            wname = node.input[1]
            w = numpy_helper.to_array(inits[wname])
            hit = [
                k
                for k, (q, s, wf) in enumerate(cands)
                if k not in used and wf.shape == w.shape and np.array_equal(wf, w)
            ]
            if not hit:
                raise RuntimeError(f"{path}: no int8 weights match initializer {wname}")
            k = hit[0]
            used.add(k)
            q, s, _ = cands[k]
            sshape = (-1,) + (1,) * (q.ndim - 1)
            base = f"w{len(added)}"
            added.append(numpy_helper.from_array(q.astype(np.int8), base + "_int8"))
            added.append(numpy_helper.from_array(s.astype(np.float32).reshape(sshape), base + "_scale"))
            new_nodes.append(
                helper.make_node("Cast", [base + "_int8"], [base + "_f32"], to=TensorProto.FLOAT, name=base + "_cast")
            )
            new_nodes.append(
                helper.make_node("Mul", [base + "_f32", base + "_scale"], [base + "_w"], name=base + "_dequant")
            )
            node.input[1] = base + "_w"
            dropped.add(wname)
        new_nodes.append(node)
    if len(used) != len(cands):
        raise RuntimeError(f"{path}: {len(cands) - len(used)} int8 weights were not found in the graph")
    keep = [t for t in g.initializer if t.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(keep + added)
    del g.node[:]
    g.node.extend(new_nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@torch.no_grad()
def export_width(static, example, folder, stem, int8=False):
    """Export the full model and its segments; returns (full file name, [segment names])."""
    full = f"{stem}.onnx"
    export_file(static, example, folder / full, "logits")
    if int8:
        int8_storage(folder / full, static)
    segs = []
    x = example
    parts = list(static.children())
    for i, seg in enumerate(parts):
        name = f"{stem}.seg{i}.onnx"
        last = i == len(parts) - 1
        export_file(seg, x, folder / name, "logits" if last else "output")
        if int8:
            int8_storage(folder / name, seg)
        segs.append(name)
        x = seg(x)
    return full, segs
