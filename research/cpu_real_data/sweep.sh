#!/usr/bin/env bash
# What a 2-core CPU gives on real data (issue 22, section 5): Office CE variants,
# each pinned to its own pair of cores of a larger host (taskset), run side by
# side for at most SECONDS; plus the synthetic cpu_smoke run on 2 cores, to scale
# these times to the 2-core CI box (where cpu_smoke's time is measured too).
# Usage (repo root, Office copied to data_local/Office):
#   bash research/cpu_real_data/sweep.sh OUT_DIR SECONDS
set -uo pipefail
out=${1:?OUT_DIR}; seconds=${2:-540}; mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1 JAX_PLATFORMS=cpu
base="--config tpu_configs/office_t5.py:loss=ce,model=default --no-resume --set data.data_dir=data_local/Office"
eval_set="eval.max_examples=1000 eval.batch_size=256"
declare -A runs=(
  [t5_b256_lr1e-3_e12]="batch_size=256 optimizer.learning_rate=1e-3 num_epochs=12 $eval_set"
  [t5_b256_lr2e-3_e12]="batch_size=256 optimizer.learning_rate=2e-3 num_epochs=12 $eval_set"
  [t5_b512_lr2e-3_e20]="batch_size=512 optimizer.learning_rate=2e-3 num_epochs=20 $eval_set"
  [t5_b256_lr2e-3_e6]="batch_size=256 optimizer.learning_rate=2e-3 num_epochs=6 $eval_set"
  [small_b256_lr3e-3_e30]="batch_size=256 optimizer.learning_rate=3e-3 num_epochs=30 model.d_model=64 model.num_heads=4 model.head_dim=16 model.d_ff=256 model.num_encoder_layers=2 model.num_decoder_layers=2 $eval_set"
  [mid_b256_lr2e-3_e20]="batch_size=256 optimizer.learning_rate=2e-3 num_epochs=20 model.num_heads=4 model.head_dim=32 model.d_ff=512 model.num_encoder_layers=2 model.num_decoder_layers=2 $eval_set"
  [mid_b128_lr1e-3_e12]="batch_size=128 optimizer.learning_rate=1e-3 num_epochs=12 model.num_heads=4 model.head_dim=32 model.d_ff=512 model.num_encoder_layers=2 model.num_decoder_layers=2 $eval_set"
)
cpu=0
for name in "${!runs[@]}"; do
  read -r -a sets <<< "${runs[$name]}"
  ( SECONDS=0
    timeout "$seconds" taskset -c "$cpu,$((cpu + 1))" python3 -m training.train $base --workdir "/tmp/cpu/$name" \
      $(printf -- "--set %s " "${sets[@]}") > "$out/$name.log" 2>&1
    echo "rc=$? wall_s=$SECONDS" >> "$out/$name.log"
    cp /tmp/cpu/$name/metrics.jsonl "$out/$name.metrics.jsonl" 2>/dev/null
    cp /tmp/cpu/$name/results.json "$out/$name.results.json" 2>/dev/null ) &
  cpu=$((cpu + 2))
done
( SECONDS=0
  taskset -c "$cpu,$((cpu + 1))" python3 -m training.train --config tpu_configs/cpu_smoke.py --workdir /tmp/cpu/smoke \
    --no-resume > "$out/cpu_smoke.log" 2>&1
  echo "rc=$? wall_s=$SECONDS" >> "$out/cpu_smoke.log" ) &
wait
nproc; lscpu | grep -E "Model name|^CPU\(s\)" ; tail -n 2 "$out"/*.log
