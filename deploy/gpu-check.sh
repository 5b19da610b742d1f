#!/usr/bin/env bash
# Checks the agent's CUDA backend on a real NVIDIA GPU (issue #20, item 5):
#   1. builds the agent's gpu_check example with a CUDA feature (tract-cuda),
#   2. runs every model family x width x batch on the GPU and on the CPU (tract),
#   3. compares the outputs: top-1 equal for every sample, every logit within
#      5e-3 x max(1, max |CPU logit|) of the CPU's (TOLERANCE in agent/examples/gpu_check.rs),
#   4. prints latency per batch on both, the speed-up, and the board power read through NVML.
#
# Usage (from anywhere; needs the NVIDIA driver, libcudart/libcublas of the chosen CUDA version,
# and a Rust toolchain):
#   bash deploy/gpu-check.sh [--feature cuda-12060] [--batches 1,8,32] [--budget-ms 500]
#                            [--models DIR] [--out FILE]
# Without --feature, the CUDA version that nvidia-smi reports picks it: 13.x -> cuda-13000,
# 12.6 and later -> cuda-12060, 12.2-12.5 -> cuda-12020.
# Exit status: 0 all points agree, 1 an output differs or a run failed, 2 CUDA unusable,
# 3 no GPU or no usable feature.
#
# Run on an NVIDIA H200 with CUDA 13.0 on 2026-12-04 (the example's part; that machine had no Rust
# toolchain, so the binary was built elsewhere): all points agree; output and findings in
# docs/cpu-performance.md ("The GPU path"). The CUDA backend loads libcudart, libnvrtc, libcublas
# and cuDNN at run time: put their folders on LD_LIBRARY_PATH if the loader does not find them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
feature=""
batches="1,8,32"
budget_ms=500
models="$root/models"
out=""

while [ $# -gt 0 ]; do
    case "$1" in
        --feature) feature="$2"; shift 2 ;;
        --batches) batches="$2"; shift 2 ;;
        --budget-ms) budget_ms="$2"; shift 2 ;;
        --models) models="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 3 ;;
    esac
done

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu-check: nvidia-smi not found: no NVIDIA driver on this machine" >&2
    exit 3
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv,noheader \
    | sed 's/^/# GPU: /'

if [ -z "$feature" ]; then
    cuda_version="$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n1)"
    major="${cuda_version%%.*}"
    minor="${cuda_version#*.}"
    case "$major" in
        13) feature=cuda-13000 ;;
        12) if [ "$minor" -ge 6 ]; then feature=cuda-12060
            elif [ "$minor" -ge 2 ]; then feature=cuda-12020
            else echo "gpu-check: CUDA $cuda_version: no feature of slim-agent fits (12.2+)" >&2; exit 3
            fi ;;
        *) echo "gpu-check: CUDA '${cuda_version:-unknown}': no feature of slim-agent fits" >&2; exit 3 ;;
    esac
    echo "# CUDA $cuda_version (driver) -> --features $feature"
fi

cd "$root"
echo "# building: cargo build --release -p slim-agent --features $feature --example gpu_check"
cargo build --release -p slim-agent --features "$feature" --example gpu_check

run() {
    "$root/target/release/examples/gpu_check" "$models" "$batches" "$budget_ms"
}
set +e
if [ -n "$out" ]; then
    run | tee "$out"
    status=${PIPESTATUS[0]}
else
    run
    status=$?
fi
exit "$status"
