# Lanes for research/reproduce_gpu.sh on a 4-GPU host: more seeds of CE and
# APAO pointwise on both datasets, so that "APAO beats CE" can be decided with
# the run-level permutation test (docs/results.md, "What this shows"). Office
# seeds 6-14 (CE) and 7-15 (APAO), Beauty seeds 4-8 of each: 28 runs. On the
# 2026-11-26 host an Office run took ~3.5 min and a Beauty run ~8 min with a
# second training on its GPU (sharing a GPU gave little extra throughput), plus
# ~0.5 / ~1.5 min of diagnosis: Office lanes ~24 min, Beauty lanes ~19 min, in
# three calls on the same warm machine (~28 minutes of device time):
#   source research/lanes/more_seeds.sh
#   bash research/reproduce_gpu.sh /tmp/r 565 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   (twice more; the last call with --final to evaluate cut runs)
# Then, here: python3 research/collect_results.py <files_at>/r research/results_raw/<date>
# and rerun research/summarize_results.py on that folder.
# Format per line: name|config|dataset|overrides.
export LANE_GPU0_A='beauty_t5_ce_s4|beauty_t5.py:loss=ce,model=default|Beauty|--set seed=4
beauty_t5_apao_s6|beauty_t5.py:loss=apao,model=default|Beauty|--set seed=6'
export LANE_GPU0_B='office_t5_ce_s6|office_t5.py:loss=ce,model=default|Office|--set seed=6
office_t5_apao_s8|office_t5.py:loss=apao,model=default|Office|--set seed=8
office_t5_ce_s9|office_t5.py:loss=ce,model=default|Office|--set seed=9
office_t5_apao_s11|office_t5.py:loss=apao,model=default|Office|--set seed=11
office_t5_ce_s12|office_t5.py:loss=ce,model=default|Office|--set seed=12
office_t5_apao_s14|office_t5.py:loss=apao,model=default|Office|--set seed=14'
export LANE_GPU1_A='beauty_t5_apao_s4|beauty_t5.py:loss=apao,model=default|Beauty|--set seed=4
beauty_t5_ce_s7|beauty_t5.py:loss=ce,model=default|Beauty|--set seed=7'
export LANE_GPU1_B='office_t5_apao_s7|office_t5.py:loss=apao,model=default|Office|--set seed=7
office_t5_ce_s8|office_t5.py:loss=ce,model=default|Office|--set seed=8
office_t5_apao_s10|office_t5.py:loss=apao,model=default|Office|--set seed=10
office_t5_ce_s11|office_t5.py:loss=ce,model=default|Office|--set seed=11
office_t5_apao_s13|office_t5.py:loss=apao,model=default|Office|--set seed=13
office_t5_ce_s14|office_t5.py:loss=ce,model=default|Office|--set seed=14'
export LANE_GPU2_A='beauty_t5_ce_s5|beauty_t5.py:loss=ce,model=default|Beauty|--set seed=5
beauty_t5_apao_s7|beauty_t5.py:loss=apao,model=default|Beauty|--set seed=7'
export LANE_GPU2_B='office_t5_ce_s7|office_t5.py:loss=ce,model=default|Office|--set seed=7
office_t5_apao_s9|office_t5.py:loss=apao,model=default|Office|--set seed=9
office_t5_ce_s10|office_t5.py:loss=ce,model=default|Office|--set seed=10
office_t5_apao_s12|office_t5.py:loss=apao,model=default|Office|--set seed=12
office_t5_ce_s13|office_t5.py:loss=ce,model=default|Office|--set seed=13
office_t5_apao_s15|office_t5.py:loss=apao,model=default|Office|--set seed=15'
export LANE_GPU3_A='beauty_t5_apao_s5|beauty_t5.py:loss=apao,model=default|Beauty|--set seed=5
beauty_t5_ce_s8|beauty_t5.py:loss=ce,model=default|Beauty|--set seed=8'
export LANE_GPU3_B='beauty_t5_ce_s6|beauty_t5.py:loss=ce,model=default|Beauty|--set seed=6
beauty_t5_apao_s8|beauty_t5.py:loss=apao,model=default|Beauty|--set seed=8'
