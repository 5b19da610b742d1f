#!/usr/bin/env python3
"""tract (through `slim profile`) against onnxruntime on the same ONNX files, per width, at batch
sizes 1 and 32, on this machine. Both run with the same number of threads (default 1) and back to
back in one invocation, so their ratio is comparable even on a noisy machine.

Usage (from the repository root; onnxruntime comes from models/requirements.txt):
    bash models/build.sh            # once: makes models/.venv with onnxruntime
    cargo build --release -p slim
    models/.venv/bin/python bench/tract_vs_onnxruntime.py [--budget 1.0] [--slim target/release/slim]
        [--threads 1] [--concrete-batches 1,32]

--concrete-batches is passed to `slim profile` (the agent's flag of the same name): the batch sizes
tract gets a plan built for; other sizes run on the symbolic-batch plan.

onnxruntime is only a benchmark reference here; the product does not depend on it.
"""
import argparse
import pathlib
import subprocess
import sys
import tempfile
import time
import tomllib

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
BATCHES = (1, 32)


def time_ort(path, shape, batch, budget, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.full((batch, *shape), 0.1, dtype=np.float32)
    for _ in range(2):
        session.run(None, {"input": x})
    times = []
    started = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - started < budget:
        t = time.perf_counter()
        session.run(None, {"input": x})
        times.append((time.perf_counter() - t) * 1000.0)
    return sum(times) / len(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per point")
    parser.add_argument("--slim", default=str(ROOT / "target/release/slim"))
    parser.add_argument("--models-dir", default=str(ROOT / "models"))
    parser.add_argument("--threads", type=int, default=1, help="threads for both runtimes")
    parser.add_argument("--concrete-batches", default="1,32",
                        help="batch sizes tract gets a plan of their own for ('none' for none)")
    args = parser.parse_args()
    models_dir = pathlib.Path(args.models_dir)

    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "tract.toml"
        subprocess.run(
            [args.slim, "profile", "--name", "bench", "--out", str(out),
             "--models-dir", str(models_dir), "--batches", "1,32",
             "--budget", f"{int(args.budget * 1000)}ms", "--threads", str(args.threads),
             "--concrete-batches", args.concrete_batches],
            check=True, stderr=subprocess.DEVNULL,
        )
        tract = tomllib.loads(out.read_text())

    tract_ms = {(p["model"], round(p["width"], 3), p["batch"]): p["latency_ms"] for p in tract["points"]}
    print("| family | width | batch | tract ms/img | onnxruntime ms/img | tract speed / onnxruntime |")
    print("|---|---|---|---|---|---|")
    for manifest_path in sorted(models_dir.glob("*/manifest.toml")):
        manifest = tomllib.loads(manifest_path.read_text())
        family = manifest["family"]
        shape = manifest["input_shape"]
        for width in manifest["widths"]:
            onnx = manifest_path.parent / width["file"]
            for batch in BATCHES:
                ort_ms = time_ort(onnx, shape, batch, args.budget, args.threads) / batch
                t_ms = tract_ms[(family, round(width["width"], 3), batch)] / batch
                print(f"| {family} | {width['width']} | {batch} | {t_ms:.4f} | {ort_ms:.4f} | {ort_ms / t_ms:.2f}× |")
    print(f"\nspeed ratio = onnxruntime time / tract time (above 1: tract is faster); {args.threads} thread(s) each;"
          f" tract concrete batch plans: {args.concrete_batches}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
