#!/usr/bin/env bash
# The adaptive prefix weights and prefix losses of APAO pointwise over the
# first SECONDS of training, per-batch weights and running weights side by
# side (same config and seed, one GPU shared), with the config's learning-rate
# schedule (the runs are stopped by SIGTERM, not shortened). Validation and
# periodic checkpoints are switched off: only the training records matter.
# The loss is APAO pointwise whatever CONFIG says (its beta and eta are kept).
#
#   bash research/trace_prefix_weights.sh OUT SECONDS [CONFIG] [DATA_DIR]
#   (defaults: tpu_configs/office_t5.py:loss=apao,model=default, data_local/Office;
#    DATA_DIR none = the config's synthetic data)
#
# Writes OUT/<variant>.train.jsonl (every training record, refreshed every 5 s
# so a call cut short still brings back what ran) and OUT/<variant>.log, and
# prints the weights and losses of every 200th step.
set -uo pipefail
out=${1:?usage: trace_prefix_weights.sh OUT SECONDS [CONFIG] [DATA_DIR]}
seconds=${2:?usage: trace_prefix_weights.sh OUT SECONDS [CONFIG] [DATA_DIR]}
config=${3:-tpu_configs/office_t5.py:loss=apao,model=default}
data=${4:-data_local/Office}
variants=(per_batch running)
mkdir -p "$out"
work=$(mktemp -d)

copy_records() {
  for v in "${variants[@]}"; do
    [ -f "$work/$v/metrics.jsonl" ] && grep '"kind": "train"' "$work/$v/metrics.jsonl" > "$out/$v.train.jsonl.tmp" \
      && mv "$out/$v.train.jsonl.tmp" "$out/$v.train.jsonl"
  done
  return 0
}

pids=()
for v in "${variants[@]}"; do
  extra=()
  [ "$v" = running ] && extra=(--set loss.running_weights=true)
  timeout -s TERM "$seconds" python3 -m training.train --config "$config" --workdir "$work/$v" --no-resume \
    --set data.data_dir="$data" --set loss.kind=apao_pointwise --set eval_every=1000000 --set checkpoint.every_steps=1000000 \
    "${extra[@]}" > "$out/$v.log" 2>&1 &
  pids+=($!)
done
( while sleep 5; do copy_records; done ) &
copier=$!
for pid in "${pids[@]}"; do wait "$pid"; done
kill "$copier" 2>/dev/null
copy_records
python3 - "$out" "${variants[@]}" <<'PY'
import json, sys
out, variants = sys.argv[1], sys.argv[2:]
for v in variants:
    try:
        records = [json.loads(line) for line in open(f"{out}/{v}.train.jsonl")]
    except FileNotFoundError:
        print(f"{v}: no training records"); continue
    for r in records:
        if r["step"] % 200 == 0 or r is records[-1]:
            w = " / ".join(f"{x:.3f}" for x in r["prefix_weights"])
            b = " / ".join(f"{x:.2f}" for x in r["prefix_losses"])
            print(f"{v:9s} step {r['step']:5d}  weights {w}  prefix losses {b}  ce {r['ce_loss']:.3f}")
PY
rm -rf "$work"
