"""MSL baseline on Amazon Office with the paper's T5, one GPU.

Reproduces: the masked-softmax-loss baseline of APAO (arXiv 2603.02730)
Table 1: cross-entropy whose softmax at each level runs over the valid
children, in the SID trie, of the target's prefix; temperature 2.0 (the
paper's value for T5 on Office). Model, optimizer, data and evaluation as
gpu_office_t5_ce.py.

Expected result (test, 2 seeds on H200, scored with the trie-normalised beam
search, docs/results.md): Recall@10 0.0569, Recall@20 0.0919, NDCG@10 0.0291,
NDCG@20 0.0379 (7% below CE). Published bar: Recall@10 0.0638 for the
strongest baseline on Office (MSL or two-stage S-DPO; the table slice we
have does not say which).

Command:
    python -m training.train --config tpu_configs/gpu_office_t5_msl.py --workdir runs/office_t5_msl
"""

from training.config import DataConfig, EvalConfig, ModelSpec, OptimizerConfig, TrainConfig
from training.losses import LossConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(data_dir="data/Office", max_history=20),
        model=ModelSpec(preset="t5_small_rec"),
        loss=LossConfig(kind="msl", msl_tau=2.0),
        optimizer=OptimizerConfig(learning_rate=5e-4, weight_decay=0.01, warmup_fraction=0.01, schedule="cosine"),
        eval=EvalConfig(num_beams=20, batch_size=512),
        batch_size=1024,
        num_epochs=200,
        early_stopping_patience=20,
        seed=42,
        log_every=10,
    )
