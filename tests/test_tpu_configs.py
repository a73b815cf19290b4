"""The TPU configs run as written on the CPU: their device count, compute dtype
and loss go through the whole train loop (mesh, sharded steps, evaluation,
checkpoints) on the 8 fake CPU devices of conftest.py. Only the scale is
shrunk (synthetic data, a small model, a few steps); they are still untested
on a TPU."""

import json
from pathlib import Path

import numpy as np
import pytest

from training.config import load_config_file
from training.train import train

REPO = Path(__file__).resolve().parents[1]
TPU_CONFIGS = sorted((REPO / "tpu_configs").glob("tpu_*.py"))
# Scale only: the device count, dtype, loss and optimizer stay as written.
SHRINK = [
    "data.data_dir=none", "data.synthetic.num_users=120", "data.synthetic.num_items=150",
    "data.synthetic.codebook_size=8", "data.max_history=10",
    "model.num_encoder_layers=1", "model.num_decoder_layers=1", "model.d_model=32",
    "model.num_heads=2", "model.head_dim=16", "model.d_ff=64",
    "batch_size=64", "num_steps=4", "eval_every=2", "early_stopping_patience=None",
    "eval.max_examples=32", "eval.batch_size=16",
    "checkpoint.async_save=false", "log_every=2",
]


def test_there_are_tpu_configs():
    assert TPU_CONFIGS, "tpu_configs/ ships configs for TPU slices"


@pytest.mark.parametrize("path", TPU_CONFIGS, ids=lambda p: p.stem)
def test_tpu_config_trains_on_its_device_count(path, tmp_path, caplog):
    written = load_config_file(path)
    config = load_config_file(path, SHRINK)
    assert (config.num_devices, config.model.dtype, config.loss) == (
        written.num_devices, written.model.dtype, written.loss)
    assert config.num_devices > 1 and config.model.dtype == "bfloat16"

    with caplog.at_level("INFO", logger="genrec.train"):
        result = train(config, tmp_path, resume=False)
    per_device = config.batch_size // config.num_devices
    assert f"data parallel over {config.num_devices} cpu device(s), {per_device} examples each" in caplog.text
    assert result.final_step == config.num_steps
    assert np.isfinite([result.test_metrics["recall@10"], result.test_metrics["ndcg@10"]]).all()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses and np.isfinite(losses).all()
    assert json.loads((tmp_path / "results.json").read_text())["final_step"] == config.num_steps
