# Runs for research/reproduce_gpu.sh on a 4-GPU host: is the gain of
# running adaptive weights real, and where does it come from?
# apao_grid.sh found APAO pointwise with running weights (beta 0.3, eta 1e-4,
# tpu_configs/office_t5.py:loss=apao_running,model=default) 5.6% above CE on Office (6 seeds,
# permutation p 0.017), but as one of six variants tried together. Here:
# - office_t5_apao_running, fresh seeds 7-14: the confirmation. Decided in
#   advance: it counts if these 8 seeds alone beat CE on R@10 with a one-sided
#   permutation p < 0.05 over runs, from research/results_raw/2026-11-26/ranks:
#   compare_runs.py --a office_t5_ce_s*.* --b office_t5_apao_running_s{7..14}.*
# - office_t5_apao_uniform, seeds 1-6: the same with eta 0, i.e. fixed uniform
#   prefix weights. Equal to running -> the gain comes from leaning less on
#   the first prefix than the per-batch rule does (first / last weight 1.7
#   running, 2.7 per batch at step 2,000), not from eta's adaptation.
# - beauty_t5_apao_running, seeds 1-6 (the paper's Beauty pair beta 0.1,
#   eta 1e-5: close to uniform weights, ratio ~1.2) against 9 Beauty CE seeds.
# Beauty runs (~10 min with a GPU partner) lead the queue so they are not the
# tail; Office runs ~4 min. 20 runs, ~18 minutes of one 4 x H200 host:
#   source research/lanes/running_confirm.sh
#   bash research/reproduce_gpu.sh /tmp/r 560 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   (again on the same warm machine if needed, the last call with --final)
# Then, here: python3 research/collect_results.py <files_at>/r research/results_raw/2026-11-26
# (train_curves/ now keeps the prefix weights over each run), summarize_results.py,
# and update the Expected result of the two running configs.
# Format per line: name|config|dataset|overrides.
export LANE_GPU0_A='beauty_t5_apao_running_s1|beauty_t5.py:loss=apao_running,model=default|Beauty|--set seed=1
office_t5_apao_running_s9|office_t5.py:loss=apao_running,model=default|Office|--set seed=9
office_t5_apao_running_s13|office_t5.py:loss=apao_running,model=default|Office|--set seed=13'
export LANE_GPU0_B='beauty_t5_apao_running_s2|beauty_t5.py:loss=apao_running,model=default|Beauty|--set seed=2
office_t5_apao_uniform_s1|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=0 --set seed=1
office_t5_apao_uniform_s5|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=0 --set seed=5'
export LANE_GPU1_A='beauty_t5_apao_running_s3|beauty_t5.py:loss=apao_running,model=default|Beauty|--set seed=3
office_t5_apao_running_s10|office_t5.py:loss=apao_running,model=default|Office|--set seed=10
office_t5_apao_running_s14|office_t5.py:loss=apao_running,model=default|Office|--set seed=14'
export LANE_GPU1_B='beauty_t5_apao_running_s4|beauty_t5.py:loss=apao_running,model=default|Beauty|--set seed=4
office_t5_apao_uniform_s2|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=0 --set seed=2
office_t5_apao_uniform_s6|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=0 --set seed=6'
export LANE_GPU2_A='beauty_t5_apao_running_s5|beauty_t5.py:loss=apao_running,model=default|Beauty|--set seed=5
office_t5_apao_running_s11|office_t5.py:loss=apao_running,model=default|Office|--set seed=11'
export LANE_GPU2_B='beauty_t5_apao_running_s6|beauty_t5.py:loss=apao_running,model=default|Beauty|--set seed=6
office_t5_apao_uniform_s3|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=0 --set seed=3'
export LANE_GPU3_A='office_t5_apao_running_s7|office_t5.py:loss=apao_running,model=default|Office|--set seed=7
office_t5_apao_running_s12|office_t5.py:loss=apao_running,model=default|Office|--set seed=12'
export LANE_GPU3_B='office_t5_apao_running_s8|office_t5.py:loss=apao_running,model=default|Office|--set seed=8
office_t5_apao_uniform_s4|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=0 --set seed=4'
