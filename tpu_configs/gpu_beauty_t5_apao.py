"""APAO pointwise on Amazon Beauty with the paper's T5, one GPU.

Reproduces: the "T5 / APAO pointwise" cell of APAO (arXiv 2603.02730)
Table 1 on Beauty, with beta 0.1, eta 1e-5 (the paper's best pair for T5 on
Beauty). Everything else as gpu_beauty_t5_ce.py.

Expected result (test, 7 seeds on H200, docs/results.md): Recall@10 0.0582 ±
0.0010, Recall@20 0.0871, NDCG@10 0.0312, NDCG@20 0.0385 - level with
gpu_beauty_t5_ce.py (9 seeds: -0.4% R@10, permutation p over seeds 0.64).
Published bar: Recall@10 0.0637 (paper).

Command:
    python -m training.train --config tpu_configs/gpu_beauty_t5_apao.py --workdir runs/beauty_t5_apao
"""

from training.config import DataConfig, EvalConfig, ModelSpec, OptimizerConfig, TrainConfig
from training.losses import LossConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(data_dir="data/Beauty", max_history=20),
        model=ModelSpec(preset="t5_small_rec"),
        loss=LossConfig(kind="apao_pointwise", beta=0.1, eta=1e-5),
        optimizer=OptimizerConfig(learning_rate=5e-4, weight_decay=0.01, warmup_fraction=0.01, schedule="cosine"),
        # The first 5,000 users: fast but biased (gpu_beauty_t5_ce.py's docstring).
        eval=EvalConfig(num_beams=20, batch_size=512, max_examples=5000, subset="first"),
        batch_size=1024,
        num_epochs=200,
        early_stopping_patience=20,
        seed=42,
        log_every=20,
    )
