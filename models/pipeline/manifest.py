"""Writing manifest.toml (schema 1) and the key sets a manifest must have.

The Python standard library reads TOML (tomllib) but does not write it, so the writer below
emits the small, fixed subset the schema needs: strings, integers, floats and flat arrays.
"""

import json

SCHEMA = 1

TOP_KEYS = ["schema", "family", "description", "input_shape", "classes", "weights", "weights_note"]
PREPROCESS_KEYS = ["mean", "std"]
DATASET_KEYS = ["name", "license", "split"]
DATASET_HOLDOUT_KEYS = ["holdout_inputs", "holdout_labels"]  # optional when accuracy is cited
TRAINING_KEYS = ["framework", "method", "seed", "epochs", "duration_s"]
WIDTH_KEYS = [
    "width", "file", "segments", "top1", "accuracy_source", "accuracy_note", "flops", "params",
]


def _value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"unsupported TOML value {v!r}")


def _table(lines, d, keys):
    for k in keys:
        if k in d:
            lines.append(f"{k} = {_value(d[k])}")


def write_manifest(path, m):
    """m: dict with the top-level keys and 'preprocess', 'dataset', 'training', 'widths'."""
    lines = []
    _table(lines, m, TOP_KEYS)
    lines += ["", "[preprocess]",
              "# A u8 pixel tensor in CHW layout maps to model input as (v / 255 - mean[c]) / std[c]"]
    _table(lines, m["preprocess"], PREPROCESS_KEYS)
    lines += ["", "[dataset]"]
    _table(lines, m["dataset"], DATASET_KEYS + DATASET_HOLDOUT_KEYS)
    lines += ["", "[training]"]
    _table(lines, m["training"], TRAINING_KEYS)
    for w in m["widths"]:
        lines += ["", "[[widths]]"]
        _table(lines, w, WIDTH_KEYS)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
