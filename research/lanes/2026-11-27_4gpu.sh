# Lanes for research/reproduce_gpu.sh on a 4-GPU host, one training per GPU
# (WORKERS_PER_GPU=1), eleventh session: Beauty APAO pairwise under the full
# validation rule on GPUs 0-2 (beauty_pairwise_fullval.sh: its rule and
# prediction) and, on GPU 3, first the float32 CE step's kernel profile (and
# the step ablation when the host has H100s: the 35k samples/s target is an
# H100 figure; the H200 ablation is in docs/benchmarks_raw/2026-11-26_h200x4),
# then Beauty MSL under the full rule, seeds 1-4 (beauty_msl_fullval.sh: its
# rule and prediction; it needs all four seeds, so a session that ends with
# fewer keeps them for the next). Three calls on the same warm machine:
#   source research/lanes/2026-11-27_4gpu.sh
#   BEFORE_GPU3="$GPU3_PROFILE" WORKERS_PER_GPU=1 bash research/reproduce_gpu.sh /tmp/r 550 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   WORKERS_PER_GPU=1 bash research/reproduce_gpu.sh /tmp/r 550 --diagnose; tar czf $OUT/all.tgz -C /tmp r
#   WORKERS_PER_GPU=1 bash research/reproduce_gpu.sh /tmp/r <what is left> --diagnose --final; tar czf $OUT/all.tgz -C /tmp r
# Outcome: only the first call ran (4 x H100); the machine was released before
# the second, so the trainings were lost; the profile and the H100 ablation
# are in docs/benchmarks_raw/2026-11-27_h100x4. MSL then ran from
# beauty_msl_fullval.sh on a fresh host. Kept as the record of that call; the
# pairwise lane has since put seed 4 on GPU 3, which the MSL lane below
# replaces here.
source research/lanes/beauty_pairwise_fullval.sh
export LANE_GPU3_A='beauty_t5_msl_fullval_s1|beauty_t5.py:loss=msl,model=default|Beauty|--set seed=1
beauty_t5_msl_fullval_s2|beauty_t5.py:loss=msl,model=default|Beauty|--set seed=2
beauty_t5_msl_fullval_s3|beauty_t5.py:loss=msl,model=default|Beauty|--set seed=3
beauty_t5_msl_fullval_s4|beauty_t5.py:loss=msl,model=default|Beauty|--set seed=4'
# reproduce_gpu.sh runs BEFORE_GPU3 from the repo root with OUT=/tmp/r unknown
# to it, so the outputs go to /tmp/r explicitly (packed with the rest).
export GPU3_PROFILE='python3 benchmarks/profile_train_step.py --data data_local/Beauty --out /tmp/r/profile.json;
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H100; then
  python3 benchmarks/train_step_ablation.py --data data_local/Beauty --out /tmp/r/ablation.json; fi'
