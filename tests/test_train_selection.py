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


def test_validation_changes_lists_what_decides_the_best_checkpoint():
    from training.config import EvalConfig
    from training.train import validation_changes

    base = EvalConfig(max_examples=100, subset="first")
    assert validation_changes(base, base) == []
    assert validation_changes(base, EvalConfig(max_examples=100, subset="spread", batch_size=7)) == [
        "eval.subset: 'first' -> 'spread'"]  # batch_size does not change the scores
    assert validation_changes(base, EvalConfig(max_examples=None, selection_metric="valid_ce")) == [
        "eval.max_examples: 100 -> None", "eval.subset: 'first' -> None",
        "eval.selection_metric: 'ndcg@10' -> 'valid_ce'"]
    # Without a subset the rule is moot.
    assert validation_changes(EvalConfig(subset="first"), EvalConfig(subset="spread")) == []


def test_resuming_with_another_validation_subset_warns(tmp_path, caplog):
    first = load_config_file(REPO / "tpu_configs/cpu_smoke.py",
                             [o for o in OVERRIDES if not o.startswith("num_steps")]
                             + ["num_steps=6", "eval.subset=first"])
    train(first, tmp_path, resume=False)
    spread = load_config_file(REPO / "tpu_configs/cpu_smoke.py",
                              [o for o in OVERRIDES if not o.startswith("num_steps")] + ["num_steps=9"])
    with caplog.at_level("WARNING", logger="genrec.train"):
        result = train(spread, tmp_path, resume=True)
    assert "resuming with another validation setting (eval.subset: 'first' -> 'spread')" in caplog.text
    assert result.final_step == 9
