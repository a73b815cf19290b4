#!/usr/bin/env bash
# The reproduction table of docs/results.md in one call on a 2-GPU host:
# CE and APAO-pointwise, T5 (4.6M), Office on GPU 0 and Beauty on GPU 1, two
# trainings sharing each GPU; then test-split evaluation of each best checkpoint.
# Usage (repo root, data copied to data_local/): bash benchmarks/reproduce_gpu.sh OUT_DIR [SECONDS]
set -uo pipefail
out=${1:-out}; limit=${2:-480}; mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
train() {  # gpu config workdir data extra-overrides...
  local gpu=$1 cfg=$2 wd=$3 data=$4; shift 4
  CUDA_VISIBLE_DEVICES=$gpu timeout "$limit" python3 -m training.train --config "tpu_configs/$cfg.py" \
    --workdir "runs/$wd" --no-resume --set "data.data_dir=data_local/$data" "$@" > "runs/$wd.log" 2>&1
  echo "$wd: train exit $?"
}
mkdir -p runs
train 0 gpu_office_t5_ce office_t5_ce Office &
train 0 gpu_office_t5_apao office_t5_apao Office &
train 1 gpu_beauty_t5_ce beauty_t5_ce Beauty --set num_epochs=60 --set early_stopping_patience=10 &
train 1 gpu_beauty_t5_apao beauty_t5_apao Beauty --set num_epochs=60 --set early_stopping_patience=10 &
wait
for wd in office_t5_ce office_t5_apao beauty_t5_ce beauty_t5_apao; do
  if [ ! -f "runs/$wd/results.json" ]; then  # cut by the time limit: evaluate the best checkpoint
    CUDA_VISIBLE_DEVICES=0 python3 -m serving.cli eval --workdir "runs/$wd" --split test >> "runs/$wd.log" 2>&1
  fi
  tail -c 60000 "runs/$wd.log" > "$out/$wd.log"
  [ -f "runs/$wd/results.json" ] && cp "runs/$wd/results.json" "$out/$wd.results.json"
done
grep -h -i "recall@10\|best" "$out"/*.log | tail -n 40
