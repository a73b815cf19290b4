"""APAO pointwise on Amazon Beauty, T5, with running adaptive weights.

As gpu_beauty_t5_apao.py (beta 0.1, eta 1e-5, the paper's best pair for T5 on
Beauty), but the worst-prefix weights are carried from step to step,
``w <- w_prev * exp(eta * b)`` normalised, starting uniform
(``LossConfig.running_weights``, docs/losses.md). At eta 1e-5 over a
Beauty run (~7,000 steps) the first / last weight ratio reaches only about
1.2 (Office at eta 1e-4: 1.7 after 2,000 steps), so this is close to APAO
with fixed uniform prefix weights. Measured at the runs' best checkpoints
(~6,800 steps): 0.268 / 0.256 / 0.242 / 0.234.

Expected result (test, 6 seeds on H100, measured before the Beauty configs
validated on every user, i.e. with ``--set eval.max_examples=5000 --set
eval.subset=first``; not yet run with full validation; docs/results.md):
Recall@10 0.0571 ± 0.0017, Recall@20 0.0858, NDCG@10 0.0307, NDCG@20 0.0380 -
2.4% below CE under the same rule (beauty_t5_ce: 0.0585, 9 seeds; permutation
p over seeds 0.95), like the Office counterpart no gain over CE
(research/lanes/running_confirm.sh).
Published bar: Recall@10 0.0637 (paper, APAO pointwise); this is 10.4% below it.

Command:
    python -m training.train --config tpu_configs/gpu_beauty_t5_apao_running.py --workdir runs/beauty_t5_apao_running
"""

from training.config import DataConfig, EvalConfig, ModelSpec, OptimizerConfig, TrainConfig
from training.losses import LossConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(data_dir="data/Beauty", max_history=20),
        model=ModelSpec(preset="t5_small_rec"),
        loss=LossConfig(kind="apao_pointwise", beta=0.1, eta=1e-5, running_weights=True),
        optimizer=OptimizerConfig(learning_rate=5e-4, weight_decay=0.01, warmup_fraction=0.01, schedule="cosine"),
        # Every validation user: the first 5,000 are not typical (gpu_beauty_t5_ce.py).
        eval=EvalConfig(num_beams=20, batch_size=512, max_examples=None),
        batch_size=1024,
        num_epochs=200,
        early_stopping_patience=20,
        seed=42,
        log_every=20,
    )
