#!/usr/bin/env bash
# RL probes on the built-in synthetic data, on the CPU (docs/results.md, "RL on the synthetic data"): from the
# demo's CE run, 200 steps of each RL arm and of CE continued at the RL step's shape, validated every 50 steps on
# 3,000 users; then the sampled arm's last checkpoint evaluated with both beam-score normalisations.
# Usage (repo root, installed): bash research/rl_comparison/synthetic_probes.sh DIR   (about 15 minutes on 2 cores)
set -euo pipefail
dir=${1:?DIR}; mkdir -p "$dir"; cfg=$(pwd)/tpu_configs/cpu_smoke.py; cd "$dir"
[ -f runs/demo/results.json ] || genrec demo > demo.log 2>&1
common=(--init-from runs/demo --set eval.max_examples=3000)
rl() { name=$1; shift; genrec rl --config "$cfg" "${common[@]}" --workdir "runs/p_$name" \
  --set rl.num_steps=200 --set rl.eval_every=50 "$@" > "p_$name.log" 2>&1; }
sampled=(--set rl.rollouts=sample --set rl.sibling_weight=0 --set rl.value_weight=0)
beam=(--set rl.rollouts=beam --set rl.sibling_weight=0 --set rl.value_weight=0)
rl grpo_sample "${sampled[@]}"
rl grpo_sample_lr1e-5 "${sampled[@]}" --set rl.optimizer.learning_rate=1e-5
rl grpo_beam "${beam[@]}"
rl grpo_beam_ranking "${beam[@]}" --set rl.reward=ranking
rl vstar
rl vstar_ranking --set rl.reward=ranking
genrec train --config "$cfg" "${common[@]}" --workdir runs/p_ce --set batch_size=32 --set num_steps=200 \
  --set eval_every=50 --set optimizer.learning_rate=1e-4 --set optimizer.schedule=constant \
  --set optimizer.warmup_fraction=0 --set optimizer.weight_decay=0 > p_ce.log 2>&1
for n in vocab trie; do for w in demo p_grpo_sample; do
  echo "$w latest $n: $(genrec eval --workdir runs/$w --split valid --which latest --normalization $n \
    --max-examples 3000 2>&1 | grep -o '"ndcg@10": [0-9.]*' | head -1)"; done; done | tee normalization.txt
grep -H "valid ndcg@10=\|valid recall@5" p_*.log | sed 's/ (.*//' > valid.txt
