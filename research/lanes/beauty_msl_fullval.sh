# Lanes for research/reproduce_gpu.sh on a 2-GPU host (two trainings a GPU,
# the default): Beauty MSL under the validation rule the Beauty configs use
# since the eighth session (checkpoint selected and early stopping on all
# 22,363 validation users). Its only figure so far is one seed under the old
# first-5,000-users rule (R@10 0.0587; paper's MSL 0.0606). Seeds 1-4 of
# beauty_t5.py:loss=msl,model=default as it is (its default is the full rule), named
# *_fullval so summarize_results.py sets them beside ce_fullval (6 seeds,
# R@10 0.0593).
# Decided before the runs: MSL differs from CE on Beauty under the full rule
# iff, from research/results_raw/<date>/ranks,
#   compare_runs.py --a beauty_t5_ce_fullval_s*.* --b beauty_t5_msl_fullval_s*.*
# gives R@10 a two-sided permutation p < 0.05 (either tail of the one-sided
# p below 0.025). Our prediction: no difference (on Office MSL is 7% below
# CE, on Beauty level under the old rule).
# Time: a full-rule Beauty run took 15-18 minutes with a GPU partner (seventh
# and eighth sessions), so the 4 runs take ~20 minutes of a 2-GPU host, in
# three calls on the same warm machine:
#   source research/lanes/beauty_msl_fullval.sh
#   bash research/reproduce_gpu.sh /tmp/r 560 --diagnose; tar czf $OUT/all.tgz -C /tmp r   # twice
#   bash research/reproduce_gpu.sh /tmp/r <what is left> --diagnose --final; tar czf $OUT/all.tgz -C /tmp r
# Then, here: python3 research/collect_results.py <files_at>/r research/results_raw/<date>
# Beauty APAO pairwise under the full rule is not here: in bfloat16 a run
# needs ~20 minutes alone on a GPU (~12,000 steps), too long beside a partner.
# Outcome (eleventh session, 4 x H200, one training a GPU, all four in one
# 555-second call): R@10 0.0588 vs CE 0.0593, -0.8%, one-sided p 0.614 (the
# other tail ~0.4): no difference, as predicted (docs/results.md).
export LANE_GPU0_A='beauty_t5_msl_fullval_s1|beauty_t5.py:loss=msl,model=default|Beauty|--set seed=1'
export LANE_GPU0_B='beauty_t5_msl_fullval_s2|beauty_t5.py:loss=msl,model=default|Beauty|--set seed=2'
export LANE_GPU1_A='beauty_t5_msl_fullval_s3|beauty_t5.py:loss=msl,model=default|Beauty|--set seed=3'
export LANE_GPU1_B='beauty_t5_msl_fullval_s4|beauty_t5.py:loss=msl,model=default|Beauty|--set seed=4'
