#!/usr/bin/env bash
# Issue 23's open GPU measurements in one device call (one GPU):
#   1. the Beam pipeline's rate against the local job after the batch-element rewrite, at JAX's default
#      float32 precision and at --matmul-precision highest (where the two runners should write the same
#      records: docs/serving.md, "Reproducibility on GPUs");
#   2. what highest precision costs the decode (recommend_throughput.py, both precisions in one process).
# Usage (repo root; carry .whl, which holds site.tar.xz: apache_beam and its needs for Python 3.12):
#   bash research/serving_scale/gpu_checks.sh OUT
set -uo pipefail
out=${1:?OUT}; mkdir -p "$out"
mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site || exit 1
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 benchmarks/recommend_throughput.py --dtypes float32 --matmul-precisions default,highest \
  --out "$out/recommend_precision.json" 2>&1 | grep -v "^{" | tee "$out/recommend_precision.log"
for precision in default highest; do
  timeout 220 python3 benchmarks/beam_vs_local.py --num-users 200000 --repeats 2 --matmul-precision "$precision" \
    --out "$out/beam_vs_local_200k_$precision.json" > "$out/beam_vs_local_200k_$precision.log" 2>&1
  echo "beam_vs_local $precision rc=$?"; tail -8 "$out/beam_vs_local_200k_$precision.log"
done
