"""APAO pointwise on Amazon Office with the paper's T5, data-parallel on a TPU v4-8.

UNTESTED ON TPU: written for the layout, never run on a TPU. The same code is
tested data-parallel on 8 fake CPU devices (tests/test_train_step.py) and on
two processes (tests/test_train_multiprocess.py), and this file's device
count, bfloat16 compute and loss run the whole train loop on fake CPU
devices at a shrunken scale (tests/test_tpu_configs.py).

Layout: a v4-8 exposes 4 JAX devices (megacore chips); 1-D mesh ("data",) over
the 4, global batch 1024 = 256 examples a chip, parameters and optimizer state
replicated. bfloat16 compute, float32 parameters and optimizer state. Loss and
hyper-parameters as gpu_office_t5_apao.py (beta 0.3, eta 1e-4).

Expected result: to be measured. Published bar, test split: Recall@10 0.0667
(paper); the APAO reference code on one H100: Recall@10 0.0654, NDCG@10 0.0327.

Command (on the TPU VM, with the data in data/Office):
    python -m training.train --config tpu_configs/tpu_v4_8_office.py --workdir runs/office_v4_8
"""

from training.config import DataConfig, EvalConfig, ModelSpec, OptimizerConfig, TrainConfig
from training.losses import LossConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        data=DataConfig(data_dir="data/Office", max_history=20),
        model=ModelSpec(preset="t5_small_rec", dtype="bfloat16"),
        loss=LossConfig(kind="apao_pointwise", beta=0.3, eta=1e-4),
        optimizer=OptimizerConfig(learning_rate=5e-4, weight_decay=0.01, warmup_fraction=0.01, schedule="cosine"),
        eval=EvalConfig(num_beams=20, batch_size=512),
        batch_size=1024,  # 256 per chip
        num_devices=4,
        num_epochs=200,
        early_stopping_patience=20,
        seed=42,
        log_every=10,
    )
