#!/usr/bin/env python3
"""Minimal reproduction for an upstream report: one f32 MatMul with constant weights, tract against
onnxruntime, single-threaded, in one process.

The CNNs' remaining gap to onnxruntime (docs/cpu-performance.md) is mostly here: with the batch run
as one wide matrix product, 70-75 % of tract's time is in its matrix kernel, and that kernel alone
runs at about half onnxruntime's speed on this AMD EPYC (Zen 4, AVX-512).

Usage (models/.venv has onnxruntime; `pip install tract==0.23.9` adds tract's Python binding, the
same tract the agent uses):
    models/.venv/bin/python bench/tract_matmul_repro.py [M K N ...]
    TRACT_CPU_ISA=-avx512f models/.venv/bin/python bench/tract_matmul_repro.py   # AVX2/FMA kernels

Times are on-CPU time of the calling thread (time.thread_time), best of 5 rounds, so that other
processes on a busy machine weigh less.
"""
import sys
import tempfile
import time

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as nh
import onnxruntime as ort
import tract

# (M, K, N): output channels, input channels x 3 x 3, output pixels of the ResNet-18 layers at batch
# 32 with the batch as one image (cifar-slimresnet width 1.0 and 0.25).
SHAPES = [(512, 4608, 512), (256, 2304, 2048), (128, 1152, 256), (64, 576, 1024)]


def best_ms(run):
    for _ in range(3):
        run()
    best = float("inf")
    for _ in range(5):
        n, started = 0, time.thread_time()
        while n < 3 or time.thread_time() - started < 0.3:
            run()
            n += 1
        best = min(best, (time.thread_time() - started) / n)
    return best * 1000.0


def main():
    args = [int(a) for a in sys.argv[1:]]
    shapes = [tuple(args[i:i + 3]) for i in range(0, len(args), 3)] if args else SHAPES
    print(f"tract {tract.version()}, onnxruntime {ort.__version__}; one thread; ms per run (GFLOP/s)")
    for m, k, n in shapes:
        w = np.random.default_rng(0).standard_normal((k, m)).astype(np.float32)
        x = np.random.default_rng(1).standard_normal((n, k)).astype(np.float32)
        graph = oh.make_graph(
            [oh.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
            [oh.make_tensor_value_info("x", 1, [n, k])], [oh.make_tensor_value_info("y", 1, [n, m])],
            [nh.from_array(w, "w")])
        with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
            onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), f.name)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(f.name, options, providers=["CPUExecutionProvider"])
            model = tract.onnx().load(f.name)
            model.set_input_fact(0, f"{n},{k},f32")
            state = model.into_model().into_runnable().spawn_state()
        want = session.run(None, {"x": x})[0]
        got = state.run([x])[0].to_numpy()
        assert np.abs(want - got).max() <= 1e-3 * np.abs(want).max(), "outputs differ"
        gflop = 2 * m * k * n / 1e9
        o = best_ms(lambda: session.run(None, {"x": x}))
        t = best_ms(lambda: state.run([x]))
        print(f"M={m} K={k} N={n}: onnxruntime {o:.3f} ({gflop / o * 1000:.0f}), "
              f"tract {t:.3f} ({gflop / t * 1000:.0f}); tract speed / onnxruntime {o / t:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
