# Lanes for benchmarks/reproduce_gpu.sh: the runs listed under "Next runs" in
# docs/results.md (about 28 GPU-minutes on H200; two calls of ~9 min on a
# 2-GPU host). Usage on the device machine:
#   source benchmarks/lanes/next_runs.sh
#   bash benchmarks/reproduce_gpu.sh /tmp/r 540 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   (again on the same warm machine, with --final, to finish cut runs)
# Format per line: name|config|dataset|overrides
export LANE_GPU0_A='beauty_t5_msl_s42|gpu_beauty_t5_msl|Beauty|
office_t5_apao_pairwise_dedup_s42|gpu_office_t5_apao_pairwise|Office|--set loss.dedup_negative_prefixes=true'
export LANE_GPU0_B='office_t5_msl_s42|gpu_office_t5_msl|Office|
office_t5_ce_vce_s1|gpu_office_t5_ce|Office|--set seed=1 --set eval.selection_metric=valid_ce
office_t5_ce_vce_s2|gpu_office_t5_ce|Office|--set seed=2 --set eval.selection_metric=valid_ce
office_t5_ce_vce_s3|gpu_office_t5_ce|Office|--set seed=3 --set eval.selection_metric=valid_ce
office_llama_ce_s42|gpu_office_llama_ce|Office|'
export LANE_GPU1_A='office_t5_apao_pairwise_b01_s42|gpu_office_t5_apao_pairwise|Office|--set loss.beta=0.1'
export LANE_GPU1_B='office_t5_apao_vce_s1|gpu_office_t5_apao|Office|--set seed=1 --set eval.selection_metric=valid_ce
office_t5_apao_vce_s2|gpu_office_t5_apao|Office|--set seed=2 --set eval.selection_metric=valid_ce
office_t5_apao_vce_s3|gpu_office_t5_apao|Office|--set seed=3 --set eval.selection_metric=valid_ce
office_llama_apao_s42|gpu_office_llama_ce|Office|--set loss.kind=apao_pointwise --set loss.beta=0.4 --set loss.eta=5e-4'
