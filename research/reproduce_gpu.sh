#!/usr/bin/env bash
# The reproduction table of docs/results.md on a multi-GPU host, in one or more
# device calls: a list of trainings (T5 4.6M, fp32) run by two workers per GPU
# that pull the next unclaimed run from one shared queue, so a GPU whose runs
# end early takes over runs another GPU would have had (Office runs take ~4
# minutes, Beauty runs ~9). Every training resumes from its workdir
# (runs/<name>), so calling the script again on the same (still warm) machine
# continues where the previous call's time limit cut it; finished runs are
# skipped.
#
# Usage (repo root, data copied to data_local/):
#   bash research/reproduce_gpu.sh OUT_DIR SECONDS [--final] [--bench]
#     SECONDS  wall-clock budget of this call; trainings are stopped before it
#     --final  evaluate (test split, best checkpoint) any run the budget cut
#     --bench  first time CE vs APAO-pairwise train steps on GPU 0 (alone)
#     --diagnose  after each finished run, also `genrec eval --split test --diagnose`
#              (prefix survival per level, unconstrained validity, and each
#              user's prefix ranks as <run>.prefix_ranks.npy) into OUT, and the
#              best checkpoint's ranks on every validation user
#              (<run>.valid_ranks.npy), on the worker's GPU
# WORKERS_PER_GPU=1 in the environment runs one training per GPU instead of
# two (for runs that must finish in a short call, or solo timings).
# BEFORE_GPU<g> (g = 0..15), if set: a shell command run once on GPU g
# (CUDA_VISIBLE_DEVICES=g, output to OUT/before_gpu<g>.log) before that GPU's
# workers start, so a timing runs alone on its GPU while the others train.
# It runs in every call that sets it: unset it for the later calls.
# Runs: LANE_GPU<g>_A and LANE_GPU<g>_B (g = 0..15; one job per line,
# name|config|dataset|overrides, config a file of tpu_configs/ with its
# argument, e.g. office_t5.py:loss=apao); GPUs 0 and 1 have defaults below. The queue
# takes the lanes' first lines, then their second lines, and so on (lanes in
# the order GPU0_A, GPU0_B, GPU1_A, ...), so with runs of equal length each
# lane's runs still start in their written order; which GPU runs a job is
# decided when a worker becomes free, and runs unfinished when a call ends
# (already resumed from their checkpoints) come first in the next call
# because they were first in the queue.
# The device tool brings back only a few files from $OUT, so write elsewhere
# and pack:  bash research/reproduce_gpu.sh /tmp/r 540 --final; tar czf $OUT/all.tgz -C /tmp r
set -uo pipefail
out=${1:-out}; budget=${2:-540}; shift 2 || true
final=0; bench=0; diagnose=0
for arg in "$@"; do
  case $arg in --final) final=1 ;; --bench) bench=1 ;; --diagnose) diagnose=1 ;;
    *) echo "unknown option $arg"; exit 2 ;; esac
done
mkdir -p "$out" runs
# Several processes share a GPU: allocate on demand instead of 75% up front.
export PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
deadline=$(( $(date +%s) + budget ))
workers_per_gpu=${WORKERS_PER_GPU:-2}
case $workers_per_gpu in ''|*[!0-9]*|0) echo "WORKERS_PER_GPU must be a positive integer, got '$workers_per_gpu'"; exit 2 ;; esac
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/gpus.txt"

# name|config|dataset|extra overrides (space separated); a lane set in the
# environment replaces its default list (one job per line).
LANE_GPU0_A="${LANE_GPU0_A-beauty_t5_ce|beauty_t5.py:loss=ce,model=default|Beauty|
beauty_t5_msl|beauty_t5.py:loss=msl,model=default|Beauty|}"
LANE_GPU0_B="${LANE_GPU0_B-office_t5_ce_s1|office_t5.py:loss=ce,model=default|Office|--set seed=1
office_t5_ce_s2|office_t5.py:loss=ce,model=default|Office|--set seed=2
office_t5_msl|office_t5.py:loss=msl,model=default|Office|
office_t5_ce_s3|office_t5.py:loss=ce,model=default|Office|--set seed=3}"
LANE_GPU1_A="${LANE_GPU1_A-beauty_t5_apao|beauty_t5.py:loss=apao,model=default|Beauty|
office_t5_apao_s3|office_t5.py:loss=apao,model=default|Office|--set seed=3}"
LANE_GPU1_B="${LANE_GPU1_B-office_t5_apao_s1|office_t5.py:loss=apao,model=default|Office|--set seed=1
office_t5_apao_s2|office_t5.py:loss=apao,model=default|Office|--set seed=2
office_t5_apao_pairwise|office_t5.py:loss=apao_pairwise,model=default|Office|}"

# gpu name config dataset overrides: train (resuming) unless finished, then the
# --diagnose evaluations; fails when the budget left is too small to start.
run_job() {
  local gpu=$1 name=$2 cfg=$3 data=$4 extra=$5 left rc
  if [ ! -f "runs/$name/results.json" ]; then
    left=$(( deadline - $(date +%s) - 15 ))
    [ "$left" -lt 30 ] && return 1
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$gpu timeout "$left" python3 -m training.train --config "tpu_configs/$cfg" \
      --workdir "runs/$name" --set "data.data_dir=data_local/$data" $extra >> "runs/$name.log" 2>&1
    rc=$?  # before $(date) below, which would reset $?
    echo "$(date +%T) $name: train exit $rc (gpu $gpu; 124 = stopped by the budget, resumes next call)"
  fi
  if [ "$diagnose" = 1 ] && [ -f "runs/$name/results.json" ]; then
    eval_until_done "$gpu" "$name" 30 "$out/$name.prefix_ranks.npy" "$out/$name.diagnose.txt" \
      --split test --diagnose --save-prefix-ranks "$out/$name.prefix_ranks.npy" || return 1
    eval_until_done "$gpu" "$name" 20 "$out/$name.valid_ranks.npy" "$out/$name.valid_eval.txt" \
      --split valid --save-ranks "$out/$name.valid_ranks.npy" || return 1
  fi
  return 0
}

# gpu: take the first job of the queue no worker has claimed (mkdir is atomic),
# run it, repeat; stop at the end of the queue or when the budget runs out.
worker() {
  local gpu=$1 name cfg data extra
  while IFS='|' read -r name cfg data extra; do
    [ -z "$name" ] && continue
    mkdir "$claims/$name" 2>/dev/null || continue
    run_job "$gpu" "$name" "$cfg" "$data" "$extra" || break
  done < "$queue"
}

# gpu run min-seconds done-file log eval-args...: `genrec eval` of the run's best
# checkpoint unless done-file exists already (a call cut in the middle leaves the
# step to the next call); fails when fewer than min-seconds of budget remain.
eval_until_done() {
  local gpu=$1 name=$2 min=$3 done_file=$4 log=$5 left; shift 5
  [ -f "$done_file" ] && return 0
  left=$(( deadline - $(date +%s) - 10 ))
  [ "$left" -lt "$min" ] && return 1
  CUDA_VISIBLE_DEVICES=$gpu timeout "$left" python3 -m serving.cli eval --workdir "runs/$name" "$@" > "$log" 2>&1
  return 0
}

final_evals() {  # gpu stride: test-evaluate the best checkpoint of the runs the budget cut
  local gpu=$1 stride=$2 i=0 name rest
  while IFS='|' read -r name rest; do
    [ -z "$name" ] && continue
    i=$(( i + 1 ))
    [ $(( (i - 1) % stride )) = "$gpu" ] || continue
    if [ ! -f "runs/$name/results.json" ] && [ -d "runs/$name/best" ]; then
      CUDA_VISIBLE_DEVICES=$gpu python3 -m serving.cli eval --workdir "runs/$name" --split test --save-ranks \
        "runs/$name/test_ranks.npy" > "$out/$name.test_eval.txt" 2>&1
    fi
  done < "$queue"
}

num_gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if [ "$num_gpus" -lt 1 ]; then echo "reproduce_gpu.sh: no GPU found (nvidia-smi -L)"; exit 2; fi
# The queue: line r of every lane, r = 1, 2, ...; a run named twice is a mistake.
queue=runs/queue.txt claims=runs/claims
rm -rf "$claims"; mkdir -p "$claims"  # no worker of an earlier call is alive
lanes=()
for (( g = 0; g < 16; g++ )); do
  for l in A B; do
    var="LANE_GPU${g}_$l"; [ -n "${!var-}" ] && lanes+=("${!var}")
  done
done
: > "$queue"
for (( r = 1; ; r++ )); do
  added=0
  for spec in "${lanes[@]}"; do
    line=$(printf '%s\n' "$spec" | grep -v '^[[:space:]]*$' | sed -n "${r}p")
    [ -n "$line" ] && { printf '%s\n' "$line" >> "$queue"; added=1; }
  done
  [ "$added" = 0 ] && break
done
dupes=$(cut -d'|' -f1 "$queue" | sort | uniq -d)
if [ -n "$dupes" ]; then echo "reproduce_gpu.sh: runs named twice: $dupes"; exit 2; fi
echo "$(wc -l < "$queue") runs in the queue, $(( workers_per_gpu * num_gpus )) workers on $num_gpus GPU(s)"

for (( g = 0; g < num_gpus; g++ )); do
  if [ "$g" = 0 ] && [ "$bench" = 1 ]; then
    (
      CUDA_VISIBLE_DEVICES=0 timeout 240 python3 benchmarks/train_throughput.py --data data_local/Beauty \
        --kinds ce,apao_pairwise,apao_pairwise+shared,apao_pairwise@20 --dtypes float32,bfloat16 --batch-sizes 1024 --devices 1 \
        --steps 20 --out "$out/train_pairwise.json" > "$out/train_pairwise.log" 2>&1
      rc=$?  # before $(date) below, which would reset $?
      echo "$(date +%T) pairwise benchmark exit $rc"
      for (( w = 0; w < workers_per_gpu; w++ )); do worker 0 & done; wait
    ) &
  else
    before="BEFORE_GPU$g"
    if [ -n "${!before-}" ]; then
      (
        CUDA_VISIBLE_DEVICES=$g timeout $(( deadline - $(date +%s) )) bash -c "${!before}" > "$out/before_gpu$g.log" 2>&1
        rc=$?  # before $(date) below, which would reset $?
        echo "$(date +%T) BEFORE_GPU$g exit $rc"
        for (( w = 0; w < workers_per_gpu; w++ )); do worker "$g" & done; wait
      ) &
    else
      for (( w = 0; w < workers_per_gpu; w++ )); do worker "$g" & done
    fi
  fi
done
wait

if [ "$final" = 1 ]; then
  for (( g = 0; g < num_gpus; g++ )); do
    final_evals "$g" "$num_gpus" &
  done
  wait
fi

for log in runs/*.log; do
  name=$(basename "$log" .log)
  tail -c 40000 "$log" > "$out/$name.log"
  [ -f "runs/$name/results.json" ] && cp "runs/$name/results.json" "$out/$name.results.json"
  [ -f "runs/$name/test_ranks.npy" ] && cp "runs/$name/test_ranks.npy" "$out/$name.test_ranks.npy"
  [ -f "runs/$name/metrics.jsonl" ] && grep '"valid' "runs/$name/metrics.jsonl" | tail -c 200000 > "$out/$name.valid.jsonl"
  # Every 20th training record and the last (prefix losses and weights over
  # the run); the full file is ~40x larger.
  [ -f "runs/$name/metrics.jsonl" ] && grep '"kind": "train"' "runs/$name/metrics.jsonl" \
    | awk '{ printed = (NR % 20 == 1); if (printed) print; last = $0 } END { if (NR && !printed) print last }' \
    | tail -c 400000 > "$out/$name.train.jsonl"
done
[ -f "$out/train_pairwise.log" ] && grep -E "x \(XLA|^\|" "$out/train_pairwise.log"
grep -h "test (" "$out"/*.log | tail -n 30
ls runs/*/results.json 2>/dev/null | wc -l
