"""CPU smoke run: tiny T5-style model, CE loss, the built-in synthetic dataset.

Reproduces: the whole pipeline (synthetic data -> train step -> constrained
beam-search validation each epoch -> best checkpoint -> test metrics) and that
the model learns far more than item popularity. About 66 s on 2 idle CPU
cores (3 epochs x 170 steps of 256 examples at ~10 steps/s, plus compiles);
`genrec demo`, which runs it, takes 72 s in all (docs/serving.md).

Expected result (measured on 2 CPU cores; synthetic data, 3,000 test users,
beam 20; best = last checkpoint, step 510), against the popularity baseline's
Recall@10 0.165 and NDCG@10 0.091 (both printed at the end and written to
``results.json``); anything under ~1.5x popularity's NDCG@10 means a regression:
`genrec train --config tpu_configs/cpu_smoke.py --workdir runs/cpu_smoke --no-resume`: Recall@10 0.298, NDCG@10 0.188
"""

from training.config import DataConfig, EvalConfig, ModelSpec, OptimizerConfig, RLConfig, TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        # The synthetic users follow a first-order cluster walk: 10 history items are plenty.
        data=DataConfig(data_dir=None, max_history=10),
        model=ModelSpec(preset="tiny"),
        optimizer=OptimizerConfig(learning_rate=3e-3, warmup_fraction=0.05),
        eval=EvalConfig(num_beams=20, batch_size=256, max_examples=500),
        batch_size=256,
        num_epochs=3,
        early_stopping_patience=None,
        log_every=50,
        # `genrec demo --rl` / `genrec rl`: V-STAR (VED rollouts, GRPO + Sibling-GRPO + value head), sized
        # for a CPU: 60 steps of 32 requests x 8 rollouts, at a learning rate a tiny model moves at.
        rl=RLConfig(num_rollouts=8, batch_size=32, num_steps=60, eval_every=20,
                    optimizer=OptimizerConfig(learning_rate=1e-4, warmup_fraction=0.0, schedule="constant",
                                              weight_decay=0.0)),
    )
