"""MSL (softmax restricted to the valid children in the item trie) on Amazon
Beauty with the paper's T5, one GPU.

Reproduces: the MSL baseline that APAO (arXiv 2603.02730) Table 1 compares
against, with temperature 1.0 (the value the paper reports for T5 on Beauty);
docs/losses.md gives the exact definition. Everything else as
gpu_beauty_t5_ce.py.

Expected result (test, 4 seeds on H200, runs beauty_t5_msl_fullval_s*,
seeds 1-4 of this config as it is, scored with the trie-normalised beam
search; docs/results.md): Recall@10 0.0588, Recall@20 0.0862, NDCG@10
0.0314, NDCG@20 0.0383 (CE under the same rule: 0.0593 over 6 seeds; MSL
-0.8%, permutation p 0.61, no difference); about 7 minutes alone on an
H200. Published bar: the paper's strongest T5 baseline on Beauty (MSL or
two-stage S-DPO) has Recall@10 0.0606.

Command:
    python -m training.train --config tpu_configs/gpu_beauty_t5_msl.py --workdir runs/beauty_t5_msl
"""

from training.config import DataConfig, EvalConfig, ModelSpec, OptimizerConfig, TrainConfig
from training.losses import LossConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(data_dir="data/Beauty", max_history=20),
        model=ModelSpec(preset="t5_small_rec"),
        loss=LossConfig(kind="msl", msl_tau=1.0),
        optimizer=OptimizerConfig(learning_rate=5e-4, weight_decay=0.01, warmup_fraction=0.01, schedule="cosine"),
        # Every validation user: the first 5,000 are not typical (gpu_beauty_t5_ce.py).
        eval=EvalConfig(num_beams=20, batch_size=512, max_examples=None),
        batch_size=1024,
        num_epochs=200,
        early_stopping_patience=20,
        seed=42,
        log_every=20,
    )
