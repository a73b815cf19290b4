#!/usr/bin/env bash
# Every speed figure of docs/benchmarks.md in one device call (2-GPU host).
# Usage (repo root, data copied to data_local/): bash benchmarks/gpu_suite.sh OUT_DIR
set -uo pipefail
out=${1:-out}; mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
# 1. constrained decode, random-logit harness, one GPU
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/constrained_decode.py --trials 30 --out "$out/decode.json" 2>&1 | tee "$out/decode.log" | grep -v '^\[' 
# 2. end-to-end recommendation, T5 4.6M, Beauty catalogue, batch 512/GPU, 20 beams
python3 benchmarks/recommend_throughput.py --data data_local/Beauty --data-parallel --out "$out/recommend.json" 2>&1 | tee "$out/recommend.log" | grep -v "^{"
# 3. training throughput, Beauty
python3 benchmarks/train_throughput.py --data data_local/Beauty --kinds ce --dtypes float32 --batch-sizes 128,1024 --devices 1 --steps 20 --out "$out/train_fp32.json" 2>&1 | tee "$out/train_fp32.log" | grep -v "^{"
python3 benchmarks/train_throughput.py --data data_local/Beauty --kinds ce,apao_pointwise,apao_pairwise,apao_pairwise+shared --dtypes bfloat16 --batch-sizes 1024 --devices 1,2 --steps 20 --out "$out/train_bf16.json" 2>&1 | tee "$out/train_bf16.log" | grep -v "^{"
# 4. where the CE step's time goes (variants of the one step, ratios to it), one GPU
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/train_step_ablation.py --data data_local/Beauty --out "$out/ablation.json" 2>&1 | tee "$out/ablation.log"
# 5. the same step kernel by kernel (jax.profiler trace, per-thread tables), one GPU
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/profile_train_step.py --data data_local/Beauty --out "$out/profile.json" 2>&1 | tee "$out/profile.log"
