# Lanes for research/reproduce_gpu.sh on a 4-GPU host (two lanes per GPU):
# the 24 runs of docs/results.md made on 2026-11-26, three device calls of
# ~9 min on the same warm machine. Usage on the device machine:
#   source research/lanes/2026-11-26_4gpu.sh
#   bash research/reproduce_gpu.sh /tmp/r 540 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   (again on the same warm machine; the last call with --final to evaluate cut runs)
# Format per line: name|config|dataset|overrides. Most important runs first.
export LANE_GPU0_A='beauty_t5_apao_pairwise_s42|beauty_t5.py:loss=apao_pairwise,dtype=bfloat16,model=default|Beauty|'
export LANE_GPU0_B='office_llama_ce_s42|office_llama.py:loss=ce|Office|
office_llama_apao_s42|office_llama.py:loss=ce|Office|--set loss.kind=apao_pointwise --set loss.beta=0.4 --set loss.eta=5e-4
beauty_t5_ce_s3|beauty_t5.py:loss=ce,model=default|Beauty|--set seed=3'
export LANE_GPU1_A='beauty_t5_msl_s42|beauty_t5.py:loss=msl,model=default|Beauty|
beauty_t5_ce_vce_s1|beauty_t5.py:loss=ce,model=default|Beauty|--set seed=1 --set eval.selection_metric=valid_ce'
export LANE_GPU1_B='office_t5_msl_s42|office_t5.py:loss=msl,model=default|Office|
office_t5_ce_vce_s1|office_t5.py:loss=ce,model=default|Office|--set seed=1 --set eval.selection_metric=valid_ce
office_t5_ce_vce_s2|office_t5.py:loss=ce,model=default|Office|--set seed=2 --set eval.selection_metric=valid_ce
office_t5_ce_vce_s3|office_t5.py:loss=ce,model=default|Office|--set seed=3 --set eval.selection_metric=valid_ce
office_t5_apao_pairwise_dedup_s42|office_t5.py:loss=apao_pairwise,model=default|Office|--set loss.dedup_negative_prefixes=true'
export LANE_GPU2_A='beauty_t5_apao_vce_s1|beauty_t5.py:loss=apao,model=default|Beauty|--set seed=1 --set eval.selection_metric=valid_ce
beauty_t5_ce_s2|beauty_t5.py:loss=ce,model=default|Beauty|--set seed=2'
export LANE_GPU2_B='office_t5_apao_vce_s1|office_t5.py:loss=apao,model=default|Office|--set seed=1 --set eval.selection_metric=valid_ce
office_t5_apao_vce_s2|office_t5.py:loss=apao,model=default|Office|--set seed=2 --set eval.selection_metric=valid_ce
office_t5_apao_vce_s3|office_t5.py:loss=apao,model=default|Office|--set seed=3 --set eval.selection_metric=valid_ce
office_t5_apao_pairwise_b01_s42|office_t5.py:loss=apao_pairwise,model=default|Office|--set loss.beta=0.1'
export LANE_GPU3_A='beauty_t5_apao_s2|beauty_t5.py:loss=apao,model=default|Beauty|--set seed=2
beauty_t5_apao_s3|beauty_t5.py:loss=apao,model=default|Beauty|--set seed=3'
export LANE_GPU3_B='office_t5_ce_s4|office_t5.py:loss=ce,model=default|Office|--set seed=4
office_t5_apao_s5|office_t5.py:loss=apao,model=default|Office|--set seed=5
office_t5_ce_s5|office_t5.py:loss=ce,model=default|Office|--set seed=5
office_t5_apao_s6|office_t5.py:loss=apao,model=default|Office|--set seed=6
office_t5_msl_s1|office_t5.py:loss=msl,model=default|Office|--set seed=1'
