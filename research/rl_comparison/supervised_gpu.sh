#!/usr/bin/env bash
# The supervised starts of the RL comparison (docs/rl.md, issue 21), and a first RL probe, in one device call.
# Usage (repo root; data copied to data_local/{Office,Beauty}): bash research/rl_comparison/supervised_gpu.sh OUT
# Writes OUT/sup_<Dataset>/ (config.json, vocab.json, catalogue.npz, best/, results.json, metrics.jsonl):
# enough to start `genrec rl --init-from` on another machine; OUT/probe_*/: short RL runs from Office's start.
set -euo pipefail
out=${1:?OUT}; mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/gpu.txt"
for ds in Office Beauty; do
  lower=$(echo "$ds" | tr 'A-Z' 'a-z')
  start=$(date +%s)
  python3 -m training.train --config "tpu_configs/${lower}_t5.py:loss=ce,model=default" --workdir "runs/sup_$ds" \
    --set "data.data_dir=data_local/$ds" 2>&1 | grep -v "^{" | tail -3 | tee "$out/sup_$ds.log"
  echo "sup_$ds seconds $(( $(date +%s) - start ))" | tee -a "$out/times.txt"
  mkdir -p "$out/sup_$ds"
  cp -r "runs/sup_$ds"/{config.json,vocab.json,catalogue.npz,best,results.json,metrics.jsonl} "$out/sup_$ds/"
done
# RL probe: does the policy move, and how fast is a step? Two learning rates of the sampled-GRPO arm, and V-STAR.
for arm_lr in grpo_sample:1e-5 grpo_sample:1e-4 vstar:1e-4; do
  arm=${arm_lr%%:*}; lr=${arm_lr##*:}
  start=$(date +%s)
  python3 -m training.rl --config "tpu_configs/office_t5.py:rl=$arm,model=default" --init-from runs/sup_Office \
    --workdir "runs/probe_${arm}_$lr" --set data.data_dir=data_local/Office --set "rl.optimizer.learning_rate=$lr" \
    --set rl.num_steps=300 --set rl.eval_every=100 --set log_every=50 2>&1 | grep -v "^{" | tail -12 \
    | tee "$out/probe_${arm}_$lr.log"
  echo "probe_${arm}_$lr seconds $(( $(date +%s) - start ))" | tee -a "$out/times.txt"
  mkdir -p "$out/probe_${arm}_$lr" && cp "runs/probe_${arm}_$lr"/{metrics.jsonl,results.json} "$out/probe_${arm}_$lr/"
done
