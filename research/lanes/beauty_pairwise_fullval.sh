# Lanes for research/reproduce_gpu.sh, one training per GPU
# (WORKERS_PER_GPU=1): APAO pairwise on Beauty as beauty_t5.py:loss=apao_pairwise,dtype=bfloat16,model=default
# is now (beta 0.1, eta 1e-5, each candidate decoded in full, checkpoint
# selected on all 22,363 validation users, bfloat16 compute), seeds 1-4,
# named *_fullval so summarize_results.py sets them beside ce_fullval (6
# seeds, R@10 0.0593, float32). Its only Beauty figure so far is one seed
# with the shared first position and the first-5,000-users rule (0.0565).
# Decided before the runs (tenth session): pairwise beats CE on Beauty iff,
# from research/results_raw/<date>/ranks,
#   compare_runs.py --a beauty_t5_ce_fullval_s*.* --b beauty_t5_apao_pairwise_fullval_s*.*
# gives R@10 a one-sided permutation p < 0.05 (3 vs 6 runs: smallest
# attainable p 1/84 = 0.012). Our prediction: it fails. On Office, the same
# loss over 8 seeds is +3.5% (p 0.09); Beauty has shown no APAO effect in any
# variant. Caveat fixed in advance: these runs compute in bfloat16 and CE in
# float32 (a float32 pairwise run does not fit a session's device time), so a
# difference in either direction may be the precision; a pass would need a
# bfloat16 CE control before it counts as APAO's.
# That control now exists (eleventh session, runs beauty_t5_ce_bf16_fullval_s1-4):
# R@10 0.0597, +0.7% over float32 CE (p 0.37); check a pass against it too:
#   compare_runs.py --a beauty_t5_ce_bf16_fullval_s*.* --b beauty_t5_apao_pairwise_fullval_s*.*
# Not yet run to the end: the eleventh session's first call (4 x H100, 545 s)
# got the three to step 3,870 (30 epochs, valid R@10 0.077-0.080), then the
# machine was released before the second call and the runs were lost.
# Changed before any run finished (eleventh session): a fourth seed on GPU 3,
# which the plan had left to filler work; the rule's glob takes it in, so the
# test is 4 vs 6 runs (smallest attainable p 1/210 = 0.005). The rule and the
# prediction are otherwise as above.
# Time: ~12,000 steps at ~10 steps/s alone on an H200 (bf16 pairwise step
# ~97 ms) plus a validation pass each epoch: ~25 minutes, so all four
# run together on a 4-GPU host, in three calls on the same warm machine;
# GPU 3 runs seed 4 (a short timing may go first there with BEFORE_GPU3, at
# the cost of seed 4 finishing later):
#   source research/lanes/beauty_pairwise_fullval.sh
#   BEFORE_GPU3="$GPU3_FUSED_QKV" WORKERS_PER_GPU=1 bash research/reproduce_gpu.sh /tmp/r 560 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   WORKERS_PER_GPU=1 bash research/reproduce_gpu.sh /tmp/r 560 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   WORKERS_PER_GPU=1 bash research/reproduce_gpu.sh /tmp/r <what is left> --diagnose --final; tar czf $OUT/all.tgz -C /tmp r
# Then, here: python3 research/collect_results.py <files_at>/r research/results_raw/<date>
# Outcome (twelfth session, 4 x H200, the three calls above): all four
# stopped early (best steps 6,966-9,417). R@10 0.0587 against CE's 0.0593,
# -1.0%, one-sided permutation p 0.667: the rule fails, as predicted.
# Against the bfloat16 CE control it is -1.7% (p 0.80). The fused Q/K/V
# timing on GPU 3: 1.08x the baseline's step time, i.e. slower. Details in
# docs/results.md ("Beauty APAO pairwise under the full rule") and
# docs/benchmarks.md.
export LANE_GPU0_A='beauty_t5_apao_pairwise_fullval_s1|beauty_t5.py:loss=apao_pairwise,dtype=bfloat16,model=default|Beauty|--set seed=1'
export LANE_GPU1_A='beauty_t5_apao_pairwise_fullval_s2|beauty_t5.py:loss=apao_pairwise,dtype=bfloat16,model=default|Beauty|--set seed=2'
export LANE_GPU2_A='beauty_t5_apao_pairwise_fullval_s3|beauty_t5.py:loss=apao_pairwise,dtype=bfloat16,model=default|Beauty|--set seed=3'
export LANE_GPU3_A='beauty_t5_apao_pairwise_fullval_s4|beauty_t5.py:loss=apao_pairwise,dtype=bfloat16,model=default|Beauty|--set seed=4'
# No second lines: the default lanes of reproduce_gpu.sh would add Office runs.
export LANE_GPU0_B='' LANE_GPU1_B=''
# First call only, before seed 4 on GPU 3: the fused Q/K/V projections timed
# beside the float32 CE baseline (~2 minutes). Only on H200s, where the runs
# have time to spare; on H100s a run needs nearly all three calls.
export GPU3_FUSED_QKV='if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  python3 benchmarks/train_step_ablation.py --data data_local/Beauty --variants baseline,fused_qkv --out /tmp/r/ablation_fused_qkv.json; fi'
