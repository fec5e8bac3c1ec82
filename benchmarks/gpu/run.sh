#!/usr/bin/env bash
# All GPU measurements of bertkit in one call on a machine with one NVIDIA GPU (H200), no internet.
#
#   bash benchmarks/gpu/run.sh                    # on the GPU machine; results in $OUT (or ./gpu-results)
#   GPU_DRY_RUN=1 bash benchmarks/gpu/run.sh      # rehearsal on a CPU machine: tiny sizes, same code paths
#
# Python packages: the device image has torch, transformers, onnx, onnxruntime, tokenizers, numpy;
# the service's packages travel as wheels in .whl/ (see benchmarks/gpu/fetch_wheels.sh) and are
# installed into /tmp/site first. onnxruntime-gpu's wheel (~255 MB) is larger than what one call
# can carry (64 MiB), so CUDA serving runs only if the image's onnxruntime has the CUDA provider;
# the script records which provider it got. Each stage has its own time limit; the whole script
# stays well inside one 10-minute call. Writes $OUT/gpu.json and $OUT/gpu.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT/nvidia-smi.txt"
timeout 540 python3 benchmarks/gpu/gpu_bench.py --out "$OUT" ${GPU_DRY_RUN:+--dry-run} 2>&1 | tee "$OUT/log.txt"
