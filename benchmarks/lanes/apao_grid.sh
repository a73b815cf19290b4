# Lanes for benchmarks/reproduce_gpu.sh on a 4-GPU host: APAO pointwise on
# Office, T5, over a (beta, eta) grid drawn from the paper's (beta in {0.05,
# 0.1, 0.2, 0.3, 0.4}, eta in {5e-6 .. 5e-4}): beta 0.05, 0.1, 0.2, 0.4 x eta
# 1e-5, 1e-4, 5e-4, seeds 1-3 (36 runs; beta 0.3, eta 1e-4 is
# gpu_office_t5_apao.py itself, 16 seeds in docs/results.md). The paper's best
# pair did not beat CE in our runs (docs/results.md, "What this shows"); this
# asks whether any pair does. Seeds vary slowest, so a cut session still has
# every grid point at seed 1. An Office run takes ~3.5 min sharing its GPU, plus
# ~0.5 min of diagnosis: 36 runs over 8 workers (two a GPU, one shared queue),
# ~20 minutes of one 4 x H200 host:
#   source benchmarks/lanes/apao_grid.sh
#   bash benchmarks/reproduce_gpu.sh /tmp/r 560 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   (again on the same warm machine, the last call with --final)
# Then, here: python3 benchmarks/collect_results.py <files_at>/r docs/results_raw/<date>,
# benchmarks/summarize_results.py (each grid point is a method against ce).
# Format per line: name|config|dataset|overrides.
export LANE_GPU0_A='office_t5_apao_b005_e1em5_s1|gpu_office_t5_apao|Office|--set loss.beta=0.05 --set loss.eta=1e-5 --set seed=1
office_t5_apao_b02_e5em4_s1|gpu_office_t5_apao|Office|--set loss.beta=0.2 --set loss.eta=5e-4 --set seed=1
office_t5_apao_b01_e1em4_s2|gpu_office_t5_apao|Office|--set loss.beta=0.1 --set loss.eta=1e-4 --set seed=2
office_t5_apao_b005_e1em5_s3|gpu_office_t5_apao|Office|--set loss.beta=0.05 --set loss.eta=1e-5 --set seed=3
office_t5_apao_b02_e5em4_s3|gpu_office_t5_apao|Office|--set loss.beta=0.2 --set loss.eta=5e-4 --set seed=3'
export LANE_GPU0_B='office_t5_apao_b005_e1em4_s1|gpu_office_t5_apao|Office|--set loss.beta=0.05 --set loss.eta=1e-4 --set seed=1
office_t5_apao_b04_e1em5_s1|gpu_office_t5_apao|Office|--set loss.beta=0.4 --set loss.eta=1e-5 --set seed=1
office_t5_apao_b01_e5em4_s2|gpu_office_t5_apao|Office|--set loss.beta=0.1 --set loss.eta=5e-4 --set seed=2
office_t5_apao_b005_e1em4_s3|gpu_office_t5_apao|Office|--set loss.beta=0.05 --set loss.eta=1e-4 --set seed=3
office_t5_apao_b04_e1em5_s3|gpu_office_t5_apao|Office|--set loss.beta=0.4 --set loss.eta=1e-5 --set seed=3'
export LANE_GPU1_A='office_t5_apao_b005_e5em4_s1|gpu_office_t5_apao|Office|--set loss.beta=0.05 --set loss.eta=5e-4 --set seed=1
office_t5_apao_b04_e1em4_s1|gpu_office_t5_apao|Office|--set loss.beta=0.4 --set loss.eta=1e-4 --set seed=1
office_t5_apao_b02_e1em5_s2|gpu_office_t5_apao|Office|--set loss.beta=0.2 --set loss.eta=1e-5 --set seed=2
office_t5_apao_b005_e5em4_s3|gpu_office_t5_apao|Office|--set loss.beta=0.05 --set loss.eta=5e-4 --set seed=3
office_t5_apao_b04_e1em4_s3|gpu_office_t5_apao|Office|--set loss.beta=0.4 --set loss.eta=1e-4 --set seed=3'
export LANE_GPU1_B='office_t5_apao_b01_e1em5_s1|gpu_office_t5_apao|Office|--set loss.beta=0.1 --set loss.eta=1e-5 --set seed=1
office_t5_apao_b04_e5em4_s1|gpu_office_t5_apao|Office|--set loss.beta=0.4 --set loss.eta=5e-4 --set seed=1
office_t5_apao_b02_e1em4_s2|gpu_office_t5_apao|Office|--set loss.beta=0.2 --set loss.eta=1e-4 --set seed=2
office_t5_apao_b01_e1em5_s3|gpu_office_t5_apao|Office|--set loss.beta=0.1 --set loss.eta=1e-5 --set seed=3
office_t5_apao_b04_e5em4_s3|gpu_office_t5_apao|Office|--set loss.beta=0.4 --set loss.eta=5e-4 --set seed=3'
export LANE_GPU2_A='office_t5_apao_b01_e1em4_s1|gpu_office_t5_apao|Office|--set loss.beta=0.1 --set loss.eta=1e-4 --set seed=1
office_t5_apao_b005_e1em5_s2|gpu_office_t5_apao|Office|--set loss.beta=0.05 --set loss.eta=1e-5 --set seed=2
office_t5_apao_b02_e5em4_s2|gpu_office_t5_apao|Office|--set loss.beta=0.2 --set loss.eta=5e-4 --set seed=2
office_t5_apao_b01_e1em4_s3|gpu_office_t5_apao|Office|--set loss.beta=0.1 --set loss.eta=1e-4 --set seed=3'
export LANE_GPU2_B='office_t5_apao_b01_e5em4_s1|gpu_office_t5_apao|Office|--set loss.beta=0.1 --set loss.eta=5e-4 --set seed=1
office_t5_apao_b005_e1em4_s2|gpu_office_t5_apao|Office|--set loss.beta=0.05 --set loss.eta=1e-4 --set seed=2
office_t5_apao_b04_e1em5_s2|gpu_office_t5_apao|Office|--set loss.beta=0.4 --set loss.eta=1e-5 --set seed=2
office_t5_apao_b01_e5em4_s3|gpu_office_t5_apao|Office|--set loss.beta=0.1 --set loss.eta=5e-4 --set seed=3'
export LANE_GPU3_A='office_t5_apao_b02_e1em5_s1|gpu_office_t5_apao|Office|--set loss.beta=0.2 --set loss.eta=1e-5 --set seed=1
office_t5_apao_b005_e5em4_s2|gpu_office_t5_apao|Office|--set loss.beta=0.05 --set loss.eta=5e-4 --set seed=2
office_t5_apao_b04_e1em4_s2|gpu_office_t5_apao|Office|--set loss.beta=0.4 --set loss.eta=1e-4 --set seed=2
office_t5_apao_b02_e1em5_s3|gpu_office_t5_apao|Office|--set loss.beta=0.2 --set loss.eta=1e-5 --set seed=3'
export LANE_GPU3_B='office_t5_apao_b02_e1em4_s1|gpu_office_t5_apao|Office|--set loss.beta=0.2 --set loss.eta=1e-4 --set seed=1
office_t5_apao_b01_e1em5_s2|gpu_office_t5_apao|Office|--set loss.beta=0.1 --set loss.eta=1e-5 --set seed=2
office_t5_apao_b04_e5em4_s2|gpu_office_t5_apao|Office|--set loss.beta=0.4 --set loss.eta=5e-4 --set seed=2
office_t5_apao_b02_e1em4_s3|gpu_office_t5_apao|Office|--set loss.beta=0.2 --set loss.eta=1e-4 --set seed=3'
