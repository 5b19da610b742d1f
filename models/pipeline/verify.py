"""Checks every family folder under models/ against the format, with onnxruntime.

Run alone:  models/.venv/bin/python models/pipeline/verify.py [family ...]

For each family and width it checks that
  - manifest.toml has every required key, with sane values, widths ascending;
  - every ONNX file loads (onnx checker, onnxruntime), is opset <= 17, has no BatchNormalization,
    has input `input` [N, C, H, W] float32 and output `logits` [N, classes] (segments: `output`,
    the last one `logits`) with the dynamic batch axis named N;
  - the full model reproduces the PyTorch reference logits (ref_logits_w<width>.npy on
    ref_input.npy) within 1e-4;
  - running the segments in order equals the full model within 1e-4;
  - FLOPs and params recomputed from the ONNX graph equal the manifest's;
  - a measured top1 is recomputed with onnxruntime on the held-out split and equals the manifest;
  - tract (the runtime the agent uses, through its Python bindings) loads every full model with
    the symbolic batch N and reproduces the reference logits within 1e-4.
build_all.py calls verify_family() with the live PyTorch model as well, to compare the full
model with PyTorch on all held-out inputs.
"""

import sys
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import shape_inference

try:
    import tract
except ImportError:  # the pinned venv has it; elsewhere the tract check is skipped, and said so
    tract = None

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import preprocess  # noqa: E402
from manifest import (  # noqa: E402
    DATASET_HOLDOUT_KEYS, DATASET_KEYS, PREPROCESS_KEYS, SCHEMA, TOP_KEYS, TRAINING_KEYS, WIDTH_KEYS,
)

MODELS = Path(__file__).resolve().parent.parent
TOL = 1e-4
MAX_OPSET = 17


class VerifyError(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise VerifyError(msg)


def width_tag(w):
    return repr(float(w))  # 0.25, 0.5, 0.75, 1.0


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run(sess, x, batch=256):
    out = sess.get_outputs()[0].name
    return np.concatenate([sess.run([out], {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def check_manifest(m, folder):
    for k in TOP_KEYS:
        need(k in m, f"manifest: missing key {k}")
    for sect, keys in (("preprocess", PREPROCESS_KEYS), ("dataset", DATASET_KEYS), ("training", TRAINING_KEYS)):
        need(sect in m, f"manifest: missing [{sect}]")
        for k in keys:
            need(k in m[sect], f"manifest: missing {sect}.{k}")
    need(m["schema"] == SCHEMA, "manifest: schema must be 1")
    need(m["family"] == folder.name, "manifest: family must equal the folder name")
    need(m["weights"] in ("trained", "untrained"), "manifest: weights must be trained|untrained")
    c = m["input_shape"][0]
    need(len(m["input_shape"]) == 3, "manifest: input_shape is [C, H, W]")
    need(len(m["preprocess"]["mean"]) == c and len(m["preprocess"]["std"]) == c, "manifest: mean/std per channel")
    ws = m["widths"]
    need([w["width"] for w in ws] == sorted(w["width"] for w in ws), "manifest: widths ascending")
    for w in ws:
        for k in WIDTH_KEYS:
            need(k in w, f"manifest: width {w.get('width')}: missing {k}")
        need(0.0 <= w["top1"] <= 1.0, "manifest: top1 in [0, 1]")
        need(w["accuracy_source"] in ("measured", "cited"), "manifest: accuracy_source")
        need(isinstance(w["flops"], int) and isinstance(w["params"], int), "manifest: flops/params integers")
        need(len(w["accuracy_note"]) > 0, "manifest: accuracy_note")
        if w["accuracy_source"] == "measured":
            for k in DATASET_HOLDOUT_KEYS:
                need(k in m["dataset"], f"manifest: measured accuracy needs dataset.{k}")


def _dims(vi):
    return [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]


def check_graph(path, in_shape, out_name, out_dims=None):
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            need(imp.version <= MAX_OPSET, f"{path.name}: opset {imp.version} > {MAX_OPSET}")
    ops = {n.op_type for n in model.graph.node}
    need("BatchNormalization" not in ops, f"{path.name}: BatchNormalization left in the graph")
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    need([i.name for i in inputs] == ["input"], f"{path.name}: the only input must be `input`")
    need(inputs[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT, f"{path.name}: input must be float32")
    if in_shape is not None:
        need(_dims(inputs[0]) == ["N"] + list(in_shape), f"{path.name}: input dims {_dims(inputs[0])}")
    else:
        need(_dims(inputs[0])[0] == "N", f"{path.name}: input batch axis must be N")
    outs = list(model.graph.output)
    need([o.name for o in outs] == [out_name], f"{path.name}: the only output must be `{out_name}`")
    od = _dims(outs[0])
    need(od[0] == "N", f"{path.name}: output batch axis must be N, got {od}")
    if out_dims is not None:
        need(od == ["N"] + list(out_dims), f"{path.name}: output dims {od}")
    return model


def graph_cost(model):
    """(flops for one image, params) from the graph alone: 2 x MACs of Conv and Gemm; params =
    their weights and biases (int8 weights counted once; their per-channel scales are not)."""
    model = shape_inference.infer_shapes(model)
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    for vi in list(model.graph.value_info) + list(model.graph.output):
        shapes.setdefault(vi.name, _dims(vi))
    for n in model.graph.node:  # weights dequantized in the graph keep their int8 shape
        if n.op_type in ("Cast", "Mul") and n.input[0] in shapes and n.output[0] not in shapes:
            shapes[n.output[0]] = shapes[n.input[0]]
    flops = params = 0
    for n in model.graph.node:
        if n.op_type == "Conv":
            wsh, osh = shapes[n.input[1]], shapes[n.output[0]]
            flops += 2 * int(np.prod(osh[1:])) * int(np.prod(wsh[1:]))
        elif n.op_type == "Gemm":
            wsh = shapes[n.input[1]]
            flops += 2 * int(np.prod(wsh))
        else:
            continue
        params += int(np.prod(wsh))
        if len(n.input) > 2:
            params += int(np.prod(shapes[n.input[2]]))
    return flops, params


def verify_family(folder, pytorch=None, extra_inputs=None, log=print):
    """Raises VerifyError on the first failure. `pytorch(width, x) -> logits` and
    `extra_inputs` (float32 model inputs) are given by build_all.py."""
    folder = Path(folder)
    m = tomllib.loads((folder / "manifest.toml").read_text(encoding="utf-8"))
    check_manifest(m, folder)
    shape, n_cls = m["input_shape"], len(m["classes"])
    ref_x = np.load(folder / "ref_input.npy")
    need(ref_x.dtype == np.float32 and list(ref_x.shape) == [4] + list(shape), "ref_input.npy: float32 [4, C, H, W]")
    xs = [ref_x]
    hx = hy = None
    if "holdout_inputs" in m["dataset"]:
        hx = np.load(folder / m["dataset"]["holdout_inputs"])
        hy = np.load(folder / m["dataset"]["holdout_labels"])
        need(hx.dtype == np.uint8 and list(hx.shape[1:]) == list(shape), "holdout_x: u8 [N, C, H, W]")
        need(hy.dtype == np.int64 and hy.shape == (len(hx),), "holdout_y: int64 [N]")
        xs.append(preprocess(hx, m["preprocess"]["mean"], m["preprocess"]["std"]))
    if extra_inputs is not None:
        xs.append(extra_inputs.astype(np.float32))
    x = np.concatenate(xs)
    for w in m["widths"]:
        tag = width_tag(w["width"])
        full_model = check_graph(folder / w["file"], shape, "logits", [n_cls])
        full = session(folder / w["file"])
        y_ref = np.load(folder / f"ref_logits_w{tag}.npy")
        need(y_ref.dtype == np.float32 and y_ref.shape == (4, n_cls), f"ref_logits_w{tag}.npy: float32 [4, classes]")
        d_ref = float(np.abs(run(full, ref_x) - y_ref).max())
        need(d_ref < TOL, f"w{tag}: onnxruntime vs PyTorch reference logits differ by {d_ref}")
        y_full = run(full, x)
        d_pt = None
        if pytorch is not None:
            d_pt = float(np.abs(y_full - pytorch(w["width"], x)).max())
            need(d_pt < TOL, f"w{tag}: onnxruntime vs PyTorch differ by {d_pt}")
        flops, params = graph_cost(full_model)
        need((flops, params) == (w["flops"], w["params"]), f"w{tag}: graph cost {flops}, {params} != manifest")
        need(len(w["segments"]) >= 2, f"w{tag}: at least two segments")
        h, seg_flops = x, 0
        for i, s in enumerate(w["segments"]):
            last = i == len(w["segments"]) - 1
            sm = check_graph(folder / s, shape if i == 0 else None, "logits" if last else "output",
                             [n_cls] if last else None)
            seg_flops += graph_cost(sm)[0]
            h = run(session(folder / s), h)
        d_seg = float(np.abs(h - y_full).max())
        need(d_seg < TOL, f"w{tag}: segment chain vs full model differ by {d_seg}")
        need(seg_flops == flops, f"w{tag}: segment FLOPs {seg_flops} != full {flops}")
        msg = f"  w{tag}: ref diff {d_ref:.2e}, chain diff {d_seg:.2e}"
        if d_pt is not None:
            msg += f", vs torch {d_pt:.2e} on {len(x)} inputs"
        if w["accuracy_source"] == "measured":
            need(hx is not None, "measured accuracy needs the held-out split")
            acc = float(np.mean(y_full[len(ref_x) : len(ref_x) + len(hx)].argmax(1) == hy))
            need(abs(acc - w["top1"]) < 1e-6, f"w{tag}: onnxruntime top1 {acc} != manifest {w['top1']}")
            msg += f", top1 {acc:.4f} (recomputed)"
        if tract is not None:
            rt = tract.onnx().load(str(folder / w["file"])).into_model().into_runnable()
            d_tr = float(np.abs(rt.run([ref_x])[0].to_numpy() - y_ref).max())
            need(d_tr < TOL, f"w{tag}: tract vs PyTorch reference logits differ by {d_tr}")
            msg += f", tract diff {d_tr:.2e}"
        log(msg)
    if tract is None:
        log("  (tract is not installed: the tract check was skipped)")
    return m


def main(argv):
    names = argv or sorted(p.parent.name for p in MODELS.glob("*/manifest.toml"))
    bad = 0
    for name in names:
        print(f"{name}:")
        try:
            verify_family(MODELS / name)
            print(f"{name}: OK")
        except VerifyError as e:
            bad += 1
            print(f"{name}: FAILED: {e}")
    print(f"{len(names) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
