# Lanes for research/reproduce_gpu.sh on a 4-GPU host: does the shared BOS
# position (one dropout mask per example at level 1 for all 1 + neg_k
# candidates) explain why APAO pairwise loses to CE (docs/results.md)?
# Office, beta 0.1, seeds 1-3, shared (default) vs per-candidate decoding as
# the reference code does (loss.share_bos_position=false; its step cost 4.9x
# CE in bfloat16 before the shared-BOS change, 4.6x after: docs/benchmarks.md,
# two separate runs). Timing measured in the eighth session, alone on an H100
# (WORKERS_PER_GPU=1): 6.3 (shared) / 5.6 (per-candidate) steps/s, ~1,900
# steps in a 440-second call (all 4 runs cut there, not kept); an Office
# pairwise run stops at ~2,800-3,300 steps, so ~10-11 minutes alone, more
# with a lane partner. The 10 runs below take most of a session's 30 device
# minutes on one 4-GPU host; start them first, in three calls:
#   source research/lanes/pairwise_ab.sh
#   bash research/reproduce_gpu.sh /tmp/r 560 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   (again on the same warm machine, the last call with --final)
# Then, here: python3 research/collect_results.py <files_at>/r research/results_raw/<date>,
# and research/compare_runs.py (3 vs 3: smallest permutation p 0.05).
# Decided before the runs (eighth session): the shared BOS position explains
# part of pairwise's deficit iff, from research/results_raw/<date>/ranks,
#   compare_runs.py --a office_t5_apao_pairwise_b01_s[1-3].* --b office_t5_apao_pairwise_b01_unshared_s*.*
# gives per-candidate decoding a higher R@10 with one-sided permutation
# p = 0.05 (all 3 unshared seeds above all 3 shared ones); it explains the
# whole deficit only if, in addition, the unshared seeds' mean R@10 is at
# least CE's (compare_runs.py --a office_t5_ce_s*.* --b <unshared>: B - A >= 0).
# Our prediction: no difference. Sharing changes only the dropout masks at
# one of four decoder positions; in deterministic mode the two paths give
# equal logits (tests/test_models_decoding.py), so the loss and its gradient differ
# only through dropout noise.
export LANE_GPU0_A='office_t5_apao_pairwise_b01_s1|office_t5.py:loss=apao_pairwise,model=default|Office|--set loss.beta=0.1 --set seed=1'
export LANE_GPU0_B='office_t5_apao_pairwise_b01_unshared_s1|office_t5.py:loss=apao_pairwise,model=default|Office|--set loss.beta=0.1 --set seed=1 --set loss.share_bos_position=false'
export LANE_GPU1_A='office_t5_apao_pairwise_b01_s2|office_t5.py:loss=apao_pairwise,model=default|Office|--set loss.beta=0.1 --set seed=2'
export LANE_GPU1_B='office_t5_apao_pairwise_b01_unshared_s2|office_t5.py:loss=apao_pairwise,model=default|Office|--set loss.beta=0.1 --set seed=2 --set loss.share_bos_position=false'
export LANE_GPU2_A='office_t5_apao_pairwise_b01_s3|office_t5.py:loss=apao_pairwise,model=default|Office|--set loss.beta=0.1 --set seed=3'
export LANE_GPU2_B='office_t5_apao_pairwise_b01_unshared_s3|office_t5.py:loss=apao_pairwise,model=default|Office|--set loss.beta=0.1 --set seed=3 --set loss.share_bos_position=false'
# GPU 3: more CE / APAO seeds on Office (not in lanes/more_seeds.sh).
export LANE_GPU3_A='office_t5_ce_s15|office_t5.py:loss=ce,model=default|Office|--set seed=15
office_t5_apao_s17|office_t5.py:loss=apao,model=default|Office|--set seed=17'
export LANE_GPU3_B='office_t5_ce_s16|office_t5.py:loss=ce,model=default|Office|--set seed=16
office_t5_apao_s18|office_t5.py:loss=apao,model=default|Office|--set seed=18'
