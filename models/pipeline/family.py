"""What every family build shares: clear the folder, export all widths, write the fixtures,
measure accuracy with onnxruntime, write the manifest, verify."""

import numpy as np
import torch

from cost import cost
from export import export_width
from manifest import write_manifest
from slimmable import WIDTHS, set_width
from verify import TOL, run, session, verify_family, width_tag

GENERATED = ("*.onnx", "*.npy", "manifest.toml", "READY")


def clear(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for pat in GENERATED:
        for p in folder.glob(pat):
            p.unlink()


def torch_logits(model):
    """Callable (width, float32 input) -> logits of the slimmable PyTorch model, eval mode."""

    @torch.no_grad()
    def f(w, x):
        model.eval()
        set_width(model, w)
        out = torch.cat([model(torch.from_numpy(x[i : i + 256])) for i in range(0, len(x), 256)])
        set_width(model, 1.0)
        return out.numpy()

    return f


@torch.no_grad()
def export_family(folder, family, model, input_shape, ref_input, int8=False,
                  holdout=None, cited=None, log=print):
    """Export every width; returns the manifest's [[widths]] tables.

    holdout: (float32 inputs, labels) to measure top1 with onnxruntime, or
    cited: {width: (top1, note)} when the accuracy is taken from a publication.
    """
    f = torch_logits(model)
    np.save(folder / "ref_input.npy", ref_input.astype(np.float32))
    tables = []
    for w in WIDTHS:
        tag = width_tag(w)
        np.save(folder / f"ref_logits_w{tag}.npy", f(w, ref_input).astype(np.float32))
        static = model.cut(w)
        # The folded static network must agree with the slimmable one before it is exported.
        d = float(np.abs(static(torch.from_numpy(ref_input)).numpy() - f(w, ref_input)).max())
        assert d < TOL, f"{family} w{tag}: folded network differs from slimmable by {d}"
        example = torch.from_numpy(ref_input[:1])
        full, segs = export_width(static, example, folder, f"{family}_w{tag}", int8=int8)
        flops, params = cost(static, input_shape)
        t = {"width": w, "file": full, "segments": segs}
        if holdout is not None:
            hx, hy = holdout
            acc = float(np.mean(run(session(folder / full), hx).argmax(1) == hy))
            t.update(top1=round(acc, 6), accuracy_source="measured",
                     accuracy_note=f"onnxruntime on the held-out split above ({len(hy)} images)")
        else:
            top1, note = cited[w]
            t.update(top1=top1, accuracy_source="cited", accuracy_note=note)
        t.update(flops=int(flops), params=int(params))
        log(f"  {family} w{tag}: top1 {t['top1']} ({t['accuracy_source']}), "
            f"{flops / 1e6:.2f} MFLOPs, {params} params")
        tables.append(t)
    return tables


def finish(folder, manifest, model, extra_inputs=None, log=print):
    write_manifest(folder / "manifest.toml", manifest)
    verify_family(folder, pytorch=torch_logits(model), extra_inputs=extra_inputs, log=log)
