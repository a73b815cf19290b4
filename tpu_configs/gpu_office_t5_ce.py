"""APAO paper's T5 baseline on Amazon Office: cross-entropy, one GPU.

Reproduces: the "T5 / CE" cell of APAO (arXiv 2603.02730) Table 1 with the
paper's setup: 4-level RQ-KMeans SIDs, history of the last 20 items, T5 4+4
layers, d_model 128, 6 heads x 64, d_ff 1024, dropout 0.1 (4.59M parameters);
AdamW lr 5e-4, weight decay 0.01, 1% warmup, cosine decay, batch 1024
(38 steps an epoch), up to 200 epochs, early stopping after 20 epochs without
a better validation NDCG@10 (the reference code stops on validation loss),
constrained beam search with 20 beams.

Expected result (test, 15 seeds on H200/H100, docs/results.md): Recall@10 0.0616 ±
0.0033 (seeds from 0.0565 to 0.0677), Recall@20 0.0997, NDCG@10 0.0309,
NDCG@20 0.0405; about 1.5 GPU-minutes. Published bar: Recall@10 0.0608
(paper); the APAO reference code on one H100 (one seed): Recall@10 0.0599,
Recall@20 0.0948, NDCG@10 0.0298, NDCG@20 0.0386 (best epoch 50, ~7 min).

Data: ``data/Office`` (relative to the working directory) holding
``Office.inter.json`` and ``Office.index.rq-kmeans.json``; elsewhere, add
``--set data.data_dir=PATH``.

Command:
    python -m training.train --config tpu_configs/gpu_office_t5_ce.py --workdir runs/office_t5_ce
"""

from training.config import DataConfig, EvalConfig, ModelSpec, OptimizerConfig, TrainConfig
from training.losses import LossConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(data_dir="data/Office", max_history=20),
        model=ModelSpec(preset="t5_small_rec"),
        loss=LossConfig(kind="ce"),
        optimizer=OptimizerConfig(learning_rate=5e-4, weight_decay=0.01, warmup_fraction=0.01, schedule="cosine"),
        eval=EvalConfig(num_beams=20, batch_size=512),
        batch_size=1024,
        num_epochs=200,
        eval_every=None,  # once per epoch
        early_stopping_patience=20,
        seed=42,
        log_every=10,
    )
