# Runs for research/reproduce_gpu.sh on a 4-GPU host: APAO pointwise on
# Office, T5, at beta 0.05, 0.1, 0.2, 0.4 (the paper's grid, less its 0.3,
# which is office_t5.py:loss=apao,model=default with 16 seeds in docs/results.md) and 1.0
# (past the grid: does more prefix weight cost more?), and the paper's pair
# (beta 0.3, eta 1e-4) with loss.running_weights (weights carried from step to
# step, where eta acts), seeds 1-6: 36 runs.
# Otherwise eta stays at the config's 1e-4: with the per-batch weights
# w_t ~ b_t exp(eta b_t) (the spec and the reference code) and prefix losses
# b_t of 1-6 nats, any eta of the paper's grid (5e-6 .. 5e-4) moves a weight
# by less than 0.3%, so eta is not worth device time; beta is.
# Seeds vary slowest, so a cut session still has every beta at the first
# seeds. An Office run takes ~3.5 min sharing its GPU plus ~0.5 min of
# diagnosis: 36 runs over 8 workers (two a GPU, one queue), ~19 minutes of one
# 4 x H200 host:
#   source research/lanes/apao_grid.sh
#   bash research/reproduce_gpu.sh /tmp/r 560 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   (again on the same warm machine if needed, the last call with --final)
# Then, here: python3 research/collect_results.py <files_at>/r research/results_raw/<date>,
# research/summarize_results.py (each beta and running is a method, compared with ce).
# Format per line: name|config|dataset|overrides.
export LANE_GPU0_A='office_t5_apao_b005_s1|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.05 --set seed=1
office_t5_apao_b02_s2|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.2 --set seed=2
office_t5_apao_b1_s3|office_t5.py:loss=apao,model=default|Office|--set loss.beta=1.0 --set seed=3
office_t5_apao_b005_s5|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.05 --set seed=5
office_t5_apao_b02_s6|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.2 --set seed=6'
export LANE_GPU0_B='office_t5_apao_b01_s1|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.1 --set seed=1
office_t5_apao_b04_s2|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.4 --set seed=2
office_t5_apao_running_s3|office_t5.py:loss=apao,model=default|Office|--set loss.running_weights=true --set seed=3
office_t5_apao_b01_s5|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.1 --set seed=5
office_t5_apao_b04_s6|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.4 --set seed=6'
export LANE_GPU1_A='office_t5_apao_b02_s1|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.2 --set seed=1
office_t5_apao_b1_s2|office_t5.py:loss=apao,model=default|Office|--set loss.beta=1.0 --set seed=2
office_t5_apao_b005_s4|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.05 --set seed=4
office_t5_apao_b02_s5|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.2 --set seed=5
office_t5_apao_b1_s6|office_t5.py:loss=apao,model=default|Office|--set loss.beta=1.0 --set seed=6'
export LANE_GPU1_B='office_t5_apao_b04_s1|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.4 --set seed=1
office_t5_apao_running_s2|office_t5.py:loss=apao,model=default|Office|--set loss.running_weights=true --set seed=2
office_t5_apao_b01_s4|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.1 --set seed=4
office_t5_apao_b04_s5|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.4 --set seed=5
office_t5_apao_running_s6|office_t5.py:loss=apao,model=default|Office|--set loss.running_weights=true --set seed=6'
export LANE_GPU2_A='office_t5_apao_b1_s1|office_t5.py:loss=apao,model=default|Office|--set loss.beta=1.0 --set seed=1
office_t5_apao_b005_s3|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.05 --set seed=3
office_t5_apao_b02_s4|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.2 --set seed=4
office_t5_apao_b1_s5|office_t5.py:loss=apao,model=default|Office|--set loss.beta=1.0 --set seed=5'
export LANE_GPU2_B='office_t5_apao_running_s1|office_t5.py:loss=apao,model=default|Office|--set loss.running_weights=true --set seed=1
office_t5_apao_b01_s3|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.1 --set seed=3
office_t5_apao_b04_s4|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.4 --set seed=4
office_t5_apao_running_s5|office_t5.py:loss=apao,model=default|Office|--set loss.running_weights=true --set seed=5'
export LANE_GPU3_A='office_t5_apao_b005_s2|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.05 --set seed=2
office_t5_apao_b02_s3|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.2 --set seed=3
office_t5_apao_b1_s4|office_t5.py:loss=apao,model=default|Office|--set loss.beta=1.0 --set seed=4
office_t5_apao_b005_s6|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.05 --set seed=6'
export LANE_GPU3_B='office_t5_apao_b01_s2|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.1 --set seed=2
office_t5_apao_b04_s3|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.4 --set seed=3
office_t5_apao_running_s4|office_t5.py:loss=apao,model=default|Office|--set loss.running_weights=true --set seed=4
office_t5_apao_b01_s6|office_t5.py:loss=apao,model=default|Office|--set loss.beta=0.1 --set seed=6'
