"""training/train.py model selection: the best checkpoint is the evaluation with
the best eval.selection_metric (highest ndcg@10 by default, lowest valid_ce
when asked), and every evaluation logs valid_ce."""

import json
from pathlib import Path

import numpy as np
import pytest

from training.config import load_config_file
from training.train import train

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "data.synthetic.num_users=100", "data.synthetic.num_items=120", "data.synthetic.codebook_size=8",
    "model.num_encoder_layers=1", "model.num_decoder_layers=1",
    "batch_size=32", "num_steps=12", "eval_every=3", "early_stopping_patience=10",
    "eval.max_examples=48", "eval.batch_size=16", "checkpoint.async_save=false", "log_every=6",
    "optimizer.learning_rate=3e-3",
]


@pytest.mark.parametrize("metric", ["ndcg@10", "valid_ce"])
def test_best_checkpoint_follows_the_selection_metric(tmp_path, metric):
    config = load_config_file(REPO / "tpu_configs/cpu_smoke.py", OVERRIDES + [f"eval.selection_metric={metric}"])
    result = train(config, tmp_path, resume=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6, 9, 12]
    assert all(r["valid_ce"] > 0 for r in valid)
    scores = [r[metric] for r in valid]
    best = min(scores) if metric == "valid_ce" else max(scores)
    assert result.best_step == valid[scores.index(best)]["step"]  # first of ties, as the loop keeps it
    assert result.best_valid_metrics[metric] == pytest.approx(best)
    # Per-user test ranks are saved and give the reported test metrics.
    ranks = np.load(tmp_path / "test_ranks.npy")
    assert ranks.shape == (int(result.test_metrics["num_examples"]),)
    assert np.mean((ranks >= 1) & (ranks <= 10)) == pytest.approx(result.test_metrics["recall@10"])
