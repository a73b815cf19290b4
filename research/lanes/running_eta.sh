# Runs for research/reproduce_gpu.sh on a 4-GPU host, after
# running_confirm.sh: how much adaptation do running weights want?
# tpu_configs/office_t5.py:loss=apao_running,model=default (beta 0.3) at eta 3e-5, 5e-4 (the
# ends of the paper's grid) and 2e-3 (past it), Office seeds 1-6 each: 18
# runs. At eta 1e-4 the first / last weight ratio measured at step 2,000 is
# 1.67 (research/trace_prefix_weights.sh); its log scales with eta, so
# ~1.17 at 3e-5, ~13 at 5e-4 and ~3e4 at 2e-3 (the worst prefix alone).
# Per-batch weights: 2.7. Compare with apao_running (eta 1e-4) and
# apao_uniform (eta 0, ratio 1) of running_confirm.sh. Office runs
# take ~4 min sharing a GPU: ~10 minutes of one 4 x H200 host:
#   source research/lanes/running_eta.sh
#   bash research/reproduce_gpu.sh /tmp/r 560 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   (again on the same warm machine, the last call with --final)
# Then, here: python3 research/collect_results.py <files_at>/r research/results_raw/2026-11-26
# and summarize_results.py (its prefix-weights table shows the weights each
# eta reached).
# Status: the sixth session ran seeds 1-4 of eta 3e-5 and 5e-4 only (lanes set
# inline, docs/results.md); eta_confirm.sh supersedes the rest of this file.
# Format per line: name|config|dataset|overrides.
export LANE_GPU0_A='office_t5_apao_running_e3e5_s1|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=3e-5 --set seed=1
office_t5_apao_running_e2e3_s3|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=2e-3 --set seed=3
office_t5_apao_running_e5e4_s6|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=5e-4 --set seed=6'
export LANE_GPU0_B='office_t5_apao_running_e5e4_s1|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=5e-4 --set seed=1
office_t5_apao_running_e3e5_s4|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=3e-5 --set seed=4
office_t5_apao_running_e2e3_s6|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=2e-3 --set seed=6'
export LANE_GPU1_A='office_t5_apao_running_e2e3_s1|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=2e-3 --set seed=1
office_t5_apao_running_e5e4_s4|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=5e-4 --set seed=4'
export LANE_GPU1_B='office_t5_apao_running_e3e5_s2|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=3e-5 --set seed=2
office_t5_apao_running_e2e3_s4|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=2e-3 --set seed=4'
export LANE_GPU2_A='office_t5_apao_running_e5e4_s2|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=5e-4 --set seed=2
office_t5_apao_running_e3e5_s5|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=3e-5 --set seed=5'
export LANE_GPU2_B='office_t5_apao_running_e2e3_s2|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=2e-3 --set seed=2
office_t5_apao_running_e5e4_s5|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=5e-4 --set seed=5'
export LANE_GPU3_A='office_t5_apao_running_e3e5_s3|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=3e-5 --set seed=3
office_t5_apao_running_e2e3_s5|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=2e-3 --set seed=5'
export LANE_GPU3_B='office_t5_apao_running_e5e4_s3|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=5e-4 --set seed=3
office_t5_apao_running_e3e5_s6|office_t5.py:loss=apao_running,model=default|Office|--set loss.eta=3e-5 --set seed=6'
