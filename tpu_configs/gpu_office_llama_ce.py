"""APAO paper's Llama (decoder-only) baseline on Amazon Office: cross-entropy, one GPU.

Reproduces: the "Llama / CE" cell of APAO (arXiv 2603.02730) Table 1: 8
layers, 8 heads x 16, hidden 128, SwiGLU FFN 1024, tied embeddings, dropout
0.1 (3.80M parameters), trained from scratch. Optimizer, data and evaluation
as gpu_office_t5_ce.py. APAO pointwise for this backbone is one override away:
``--set loss.kind=apao_pointwise --set loss.beta=0.4 --set loss.eta=5e-4``
(the paper's best pair for Llama on Office; published Recall@10 0.0559).

Expected result (test, 1 seed on H200, docs/results.md): Recall@10 0.0567,
Recall@20 0.0928, NDCG@10 0.0306, NDCG@20 0.0396; with the APAO override
above 0.0559 / 0.0901 / 0.0286 / 0.0373. Published bar: Recall@10 0.0469
(paper; APAO 0.0559).

Command:
    python -m training.train --config tpu_configs/gpu_office_llama_ce.py --workdir runs/office_llama_ce
"""

from training.config import DataConfig, EvalConfig, ModelSpec, OptimizerConfig, TrainConfig
from training.losses import LossConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(data_dir="data/Office", max_history=20),
        model=ModelSpec(preset="llama_small_rec"),
        loss=LossConfig(kind="ce"),
        optimizer=OptimizerConfig(learning_rate=5e-4, weight_decay=0.01, warmup_fraction=0.01, schedule="cosine"),
        eval=EvalConfig(num_beams=20, batch_size=512),
        batch_size=1024,
        num_epochs=200,
        early_stopping_patience=20,
        seed=42,
        log_every=10,
    )
