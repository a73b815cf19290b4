# Runs for benchmarks/reproduce_gpu.sh on a 4-GPU host: is Beauty below the
# paper (CE 0.0585 vs 0.0611, every method 3-12% below) because our Beauty
# configs select the checkpoint and stop early on the first 5,000 of 22,363
# validation users (eval.max_examples=5000, a noisier selection than the
# paper's full validation set)? CE with every validation user, seeds 1-8,
# against the 9 CE seeds of gpu_beauty_t5_ce.py (compare_runs.py: the method
# is ce_fullval). A full validation pass costs ~0.5 s of an H200 at the
# measured 55k users/s, so the runs take about as long as before (~11 min
# with a GPU partner): 8 runs, ~12 minutes of one 4 x H200 host:
#   source benchmarks/lanes/beauty_fullval.sh
#   bash benchmarks/reproduce_gpu.sh /tmp/r 560 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   (again on the same warm machine, the last call with --final)
# Then, here: python3 benchmarks/collect_results.py <files_at>/r docs/results_raw/2026-11-26
# Format per line: name|config|dataset|overrides.
export LANE_GPU0_A='beauty_t5_ce_fullval_s1|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=1'
export LANE_GPU0_B='beauty_t5_ce_fullval_s2|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=2'
export LANE_GPU1_A='beauty_t5_ce_fullval_s3|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=3'
export LANE_GPU1_B='beauty_t5_ce_fullval_s4|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=4'
export LANE_GPU2_A='beauty_t5_ce_fullval_s5|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=5'
export LANE_GPU2_B='beauty_t5_ce_fullval_s6|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=6'
export LANE_GPU3_A='beauty_t5_ce_fullval_s7|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=7'
export LANE_GPU3_B='beauty_t5_ce_fullval_s8|gpu_beauty_t5_ce|Beauty|--set eval.max_examples=none --set seed=8'
