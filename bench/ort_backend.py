#!/usr/bin/env python3
"""The agent's optional ONNX Runtime backend (`slim profile --backend ort`) against tract (`slim
profile --backend cpu`) and against Python onnxruntime, per family x width x batch, on the same ONNX
files, in one invocation, so the ratios are comparable even on a busy machine.

Usage (from the repository root):
    bash models/build.sh                         # once: models/.venv with onnxruntime 1.20.1
    cargo build -p slim --features ort           # `slim profile --backend ort`
    models/.venv/bin/python bench/ort_backend.py --slim target/debug/slim \\
        [--budget 0.3] [--threads 1] [--batches 1,8,32] [--concrete-batches 1,8,32] [--repeat 3] \\
        [--write docs/cpu-performance.md]

The ort backend opens the libonnxruntime.so shipped in this Python onnxruntime wheel (ORT_DYLIB_PATH
is set for `slim profile`); Python runs the wheel's own module, the same release and commit linked
into another shared object. So the ort backend / Python ratio shows what the Rust binding costs,
and should be about 1.0. tract gets plans for --concrete-batches
(the agent's flag; ONNX Runtime ignores it).

--repeat N measures everything N times, in turn, and keeps each point's best time per runtime.
--write replaces the text between `<!-- ort-bench:begin -->` and `<!-- ort-bench:end -->` in that
file with the table printed.
"""
import argparse
import datetime
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import tomllib

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- ort-bench:begin -->", "<!-- ort-bench:end -->"


def cpu_name():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library():
    capi = pathlib.Path(ort.__file__).parent / "capi"
    exact = capi / f"libonnxruntime.so.{ort.__version__}"
    if exact.is_file():
        return exact
    found = sorted(capi.glob("libonnxruntime.so*"))
    if not found:
        sys.exit(f"no libonnxruntime.so in {capi}")
    return found[0]


def time_python(path, shape, batch, budget, threads):
    """Mean ms per batch, as bench/tract_vs_onnxruntime.py measures onnxruntime."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.full((batch, *shape), 0.1, dtype=np.float32)
    for _ in range(2):
        session.run(None, {name: x})
    times = []
    started = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - started < budget:
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1000.0)
    return sum(times) / len(times)


def time_slim(args, backend, threads, batches, lib):
    """Mean ms per batch per (family, width, batch) from `slim profile --backend BACKEND`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / f"{backend}.toml"
        subprocess.run(
            [args.slim, "profile", "--name", "bench", "--out", str(out), "--backend", backend,
             "--models-dir", str(args.models_dir), "--batches", ",".join(map(str, batches)),
             "--budget", f"{int(args.budget * 1000)}ms", "--threads", str(threads),
             "--concrete-batches", args.concrete_batches],
            check=True, stderr=subprocess.DEVNULL, env=os.environ | {"ORT_DYLIB_PATH": str(lib)},
        )
        profile = tomllib.loads(out.read_text())
    return {(p["model"], round(p["width"], 3), p["batch"]): p["latency_ms"] for p in profile["points"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per point")
    parser.add_argument("--slim", default=str(ROOT / "target/debug/slim"))
    parser.add_argument("--models-dir", default=str(ROOT / "models"))
    parser.add_argument("--threads", default="1", help="thread counts, for every runtime")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--concrete-batches", default="1,8,32", help="tract's plans (the agent's flag)")
    parser.add_argument("--repeat", type=int, default=3, help="keep each point's best of this many")
    parser.add_argument("--write", help="markdown file whose ort-bench:begin/end block gets the table")
    args = parser.parse_args()
    threads_list = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    manifests = [tomllib.loads(p.read_text()) | {"dir": p.parent}
                 for p in sorted(pathlib.Path(args.models_dir).glob("*/manifest.toml"))]
    lib = library()

    load_before = os.getloadavg()
    best = {}  # (family, width, batch, threads) -> [tract, ort backend, python] ms per image
    for _ in range(args.repeat):
        for threads in threads_list:
            tract_ms = time_slim(args, "cpu", threads, batches, lib)
            ort_ms = time_slim(args, "ort", threads, batches, lib)
            for manifest in manifests:
                for width in manifest["widths"]:
                    for batch in batches:
                        point = (manifest["family"], round(width["width"], 3), batch)
                        python_ms = time_python(manifest["dir"] / width["file"], manifest["input_shape"],
                                                batch, args.budget, threads)
                        now = [tract_ms[point] / batch, ort_ms[point] / batch, python_ms / batch]
                        key = point + (threads,)
                        best[key] = [min(a, b) for a, b in zip(best.get(key, now), now)]
    load_after = os.getloadavg()

    lines = [
        f"Measured {datetime.date.today()} on {cpu_name()} ({os.cpu_count()} cores), load average "
        f"(1/5/15 min) {' / '.join(f'{x:.2f}' for x in load_before)} before and "
        f"{' / '.join(f'{x:.2f}' for x in load_after)} after, by `bench/ort_backend.py --threads {args.threads} "
        f"--batches {args.batches} --concrete-batches {args.concrete_batches} --budget {args.budget} "
        f"--repeat {args.repeat}`: best of {args.repeat} per point, ms per image. ort backend = "
        f"slim profile with --backend ort (ONNX Runtime {ort.__version__} from {lib.name}); tract = "
        f"slim profile with --backend cpu --concrete-batches {args.concrete_batches}; Python = onnxruntime "
        f"{ort.__version__} InferenceSession (the same wheel, release and commit). Ratios are throughput ratios "
        "(above 1: the ort backend is faster).",
        "",
    ]
    for threads in threads_list:
        lines += [f"**{threads} thread(s)**", "",
                  "| family | width | batch | tract ms/img | ort backend ms/img | Python ORT ms/img "
                  "| ort backend / tract | ort backend / Python ORT |",
                  "|---|---|---|---|---|---|---|---|"]
        for manifest in manifests:
            for width in manifest["widths"]:
                for batch in batches:
                    t, o, p = best[(manifest["family"], round(width["width"], 3), batch, threads)]
                    lines.append(f"| {manifest['family']} | {width['width']} | {batch} | {t:.4f} | {o:.4f} "
                                 f"| {p:.4f} | {t / o:.2f}× | {p / o:.2f}× |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.write:
        doc = pathlib.Path(args.write)
        content = doc.read_text()
        start, end = content.index(BEGIN) + len(BEGIN), content.index(END)
        doc.write_text(content[:start] + "\n" + text + "\n" + content[end:])
        print(f"wrote the table into {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
