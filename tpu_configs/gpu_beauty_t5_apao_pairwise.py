"""APAO pairwise on Amazon Beauty with the paper's T5, one GPU, bfloat16.

Reproduces: the "T5 / APAO pairwise" cell of APAO (arXiv 2603.02730) Table 1
on Beauty: CE + beta * sum_m w_m L_m with the pairwise prefix loss over 100
uniform negatives per example, resampled every step (docs/losses.md). beta
0.1, eta 1e-5: the paper's best pointwise pair for T5 on Beauty (its best
pairwise pair is not in our notes). Data, model, optimizer and evaluation as
gpu_beauty_t5_ce.py, except the compute dtype: bfloat16 activations and
matmuls (parameters and optimizer state float32), because the pairwise step
costs 4.4x a CE step in float32 (docs/benchmarks.md) and a full float32 run
(74-93 epochs of 129 steps before early stopping) does not fit one device call.

Expected result (test, 4 seeds on H200, runs beauty_t5_apao_pairwise_fullval_s*,
seeds 1-4 of this config as it is; docs/results.md): Recall@10 0.0587,
Recall@20 0.0873, NDCG@10 0.0319, NDCG@20 0.0391. That is 1.0% below CE
under the same rule (0.0593 over 6 seeds; one-sided permutation p 0.67,
so it does not beat CE) and 1.7% below CE in bfloat16 (0.0597, 4 seeds).
About 22-24 minutes alone on an H200 (best steps 6,966-9,417).
Published bar: Recall@10 0.0639 (paper, APAO pairwise).

Command:
    python -m training.train --config tpu_configs/gpu_beauty_t5_apao_pairwise.py --workdir runs/beauty_t5_pairwise
"""

from training.config import DataConfig, EvalConfig, ModelSpec, OptimizerConfig, TrainConfig
from training.losses import LossConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(data_dir="data/Beauty", max_history=20),
        model=ModelSpec(preset="t5_small_rec", dtype="bfloat16"),
        loss=LossConfig(kind="apao_pairwise", beta=0.1, eta=1e-5, neg_k=100),
        optimizer=OptimizerConfig(learning_rate=5e-4, weight_decay=0.01, warmup_fraction=0.01, schedule="cosine"),
        # Every validation user: the first 5,000 are not typical (gpu_beauty_t5_ce.py).
        eval=EvalConfig(num_beams=20, batch_size=512, max_examples=None),
        batch_size=1024,
        num_epochs=200,
        early_stopping_patience=20,
        seed=42,
        log_every=20,
    )
