# Runs for benchmarks/reproduce_gpu.sh on a 4-GPU host: does selecting the
# checkpoint (and stopping early) on all 22,363 Beauty validation users,
# instead of the first 5,000 (eval.max_examples=5000 in the Beauty configs),
# close Beauty's gap to the paper, and does it change APAO vs CE there?
# The seventh session's eta_confirm.sh ran beauty_t5_ce_fullval seeds 1-8:
# seeds 1, 5, 8 finished (R@10 0.0601, +3.3% over the 5,000-user CE paired
# over users, p 0.11; NDCG@10 +4.5%, p 0.025); seeds 2, 3, 4, 6, 7 were cut by
# the device time and, on a fresh machine, start again from scratch here.
# - beauty_t5_ce_fullval seeds 2, 3, 4, 6, 7: finish the 8-seed CE group.
# - beauty_t5_apao_fullval seeds 1-3: APAO pointwise at the paper's Beauty
#   pair (gpu_beauty_t5_apao.py) under the same rule; summarize_results.py
#   compares it with ce_fullval. More seeds in a later session.
# A full-validation Beauty run took ~15-18 minutes with a GPU partner in the
# seventh session (~15 steps/s over 10-13k steps, plus a ~1.5 s pass over the
# 22k validation users each epoch), so each lane holds one run: ~20 minutes
# of one 4-GPU host, three calls on the same warm machine:
#   source benchmarks/lanes/beauty_fullval.sh
#   bash benchmarks/reproduce_gpu.sh /tmp/r 560 --diagnose; tar czf $OUT/all.tgz -C /tmp r   # twice
#   bash benchmarks/reproduce_gpu.sh /tmp/r <what is left> --diagnose --final; tar czf $OUT/all.tgz -C /tmp r
# Then, here: python3 benchmarks/collect_results.py <files_at>/r docs/results_raw/2026-11-26
# and summarize_results.py. Format per line: name|config|dataset|overrides.
export LANE_GPU0_A='beauty_t5_ce_fullval_s2|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=2'
export LANE_GPU0_B='beauty_t5_apao_fullval_s1|gpu_beauty_t5_apao|Beauty|--set eval.max_examples=none --set seed=1'
export LANE_GPU1_A='beauty_t5_ce_fullval_s3|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=3'
export LANE_GPU1_B='beauty_t5_apao_fullval_s2|gpu_beauty_t5_apao|Beauty|--set eval.max_examples=none --set seed=2'
export LANE_GPU2_A='beauty_t5_ce_fullval_s4|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=4'
export LANE_GPU2_B='beauty_t5_apao_fullval_s3|gpu_beauty_t5_apao|Beauty|--set eval.max_examples=none --set seed=3'
export LANE_GPU3_A='beauty_t5_ce_fullval_s6|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=6'
export LANE_GPU3_B='beauty_t5_ce_fullval_s7|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=7'
