"""training/train.py end to end: a run SIGKILLed right after its mid-run checkpoint
and resumed reaches exactly the parameters, metrics and results of an
uninterrupted run (tiny model, synthetic data, pairwise APAO with dropout, so
data order, dropout masks and negatives must all resume exactly)."""

import json
import os
import signal
import subprocess

import numpy as np
from train_cli import REPO, SMOKE, assert_same_latest_params, killed_train_command

from training.config import load_config_file
from training.train import MetricsLog, train

NUM_STEPS, KILL_AT = 8, 4
OVERRIDES = [
    "data.synthetic.num_users=120", "data.synthetic.num_items=150", "data.synthetic.codebook_size=8",
    "model.num_encoder_layers=1", "model.num_decoder_layers=1", "model.dropout_rate=0.1",
    "loss.kind=apao_pairwise", "loss.neg_k=6", "loss.beta=0.3",
    "batch_size=32", f"num_steps={NUM_STEPS}", "eval_every=4", "early_stopping_patience=5",
    "eval.max_examples=32", "eval.batch_size=32", "checkpoint.every_steps=4", "checkpoint.async_save=true",
    "log_every=2",
]


def _records(workdir, kind):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    config = load_config_file(REPO / SMOKE, OVERRIDES)

    # Uninterrupted reference run (in process).
    reference_dir = tmp_path / "reference"
    reference = train(config, reference_dir, resume=False)
    assert reference.final_step == NUM_STEPS and reference.best_step in (4, 8)

    # The same run through the CLI, killed by SIGKILL right after the step-4 checkpoint ...
    resumed_dir = tmp_path / "resumed"
    command = killed_train_command(resumed_dir, OVERRIDES, KILL_AT)
    killed = subprocess.run(command, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    saved_steps = sorted(int(p.name) for p in (resumed_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved_steps == [KILL_AT] and not (resumed_dir / "results.json").exists()

    # ... then resumed to the end (in process).
    resumed = train(config, resumed_dir, resume=True)
    assert resumed.final_step == NUM_STEPS

    assert_same_latest_params(reference_dir, resumed_dir)

    # metrics.jsonl reads as one run: no repeated steps, same losses as the reference.
    reference_train, resumed_train = _records(reference_dir, "train"), _records(resumed_dir, "train")
    assert [r["step"] for r in resumed_train] == [2, 4, 6, 8] == [r["step"] for r in reference_train]
    np.testing.assert_allclose([r["loss"] for r in resumed_train], [r["loss"] for r in reference_train], rtol=1e-6)
    assert [r["step"] for r in _records(resumed_dir, "valid")] == [4, 8]
    assert len(_records(resumed_dir, "test")) == 1

    # Same best checkpoint and test results.
    assert resumed.best_step == reference.best_step
    assert resumed.test_metrics == reference.test_metrics
    results = json.loads((resumed_dir / "results.json").read_text())
    assert results["test_metrics"] == reference.test_metrics and results["final_step"] == NUM_STEPS
    assert 0.0 <= results["test_metrics"]["ndcg@10"] <= results["test_metrics"]["recall@10"] <= 1.0


def test_early_stopping_then_resume_gives_the_same_result_without_training(tmp_path):
    # A learning rate too small to change float32 weights: validation ndcg@10 never improves
    # after the first evaluation, so patience 2 stops the run at step 3 of 8.
    config = load_config_file(REPO / SMOKE, OVERRIDES + [
        "optimizer.learning_rate=1e-12", "optimizer.schedule=constant", "eval_every=1",
        "early_stopping_patience=2", "checkpoint.every_steps=100",
    ])
    first = train(config, tmp_path, resume=False)
    assert (first.final_step, first.early_stopped, first.best_step) == (3, True, 1)
    assert first.test_metrics["num_examples"] == 120
    assert [r["step"] for r in _records(tmp_path, "valid")] == [1, 2, 3]
    lines_before = (tmp_path / "metrics.jsonl").read_text().splitlines()
    second = train(config, tmp_path, resume=True)
    assert second == first
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines_before


def test_running_prefix_weights_survive_a_resume(tmp_path):
    """loss.running_weights keeps the adaptive weights in the optimizer state: a
    run stopped at step 4 and continued to 8 equals a run of 8 steps (constant
    learning rate, so the schedule does not depend on the planned length)."""
    extra = ["loss.kind=apao_pointwise", "loss.running_weights=true", "loss.eta=0.5",
             "optimizer.schedule=constant", "optimizer.warmup_fraction=0.0", "early_stopping_patience=none"]
    overrides = [o for o in OVERRIDES if not o.startswith(("loss.", "num_steps"))] + extra
    short = load_config_file(REPO / SMOKE, overrides + ["num_steps=4"])
    full = load_config_file(REPO / SMOKE, overrides + [f"num_steps={NUM_STEPS}"])
    train(short, tmp_path / "resumed", resume=False)
    resumed = train(full, tmp_path / "resumed", resume=True)
    reference = train(full, tmp_path / "reference", resume=False)
    assert resumed.final_step == reference.final_step == NUM_STEPS
    weights = [r["prefix_weights"] for r in _records(tmp_path / "reference", "train")]
    assert max(abs(w - 0.25) for w in weights[-1]) > 0.01  # the weights moved away from uniform
    np.testing.assert_allclose([r["prefix_weights"] for r in _records(tmp_path / "resumed", "train")][-1],
                               weights[-1], rtol=1e-6)
    assert_same_latest_params(tmp_path / "resumed", tmp_path / "reference")


def test_metrics_log_records_skip_a_torn_last_line(tmp_path):
    """A crash mid-write leaves a torn last line in metrics.jsonl: ``MetricsLog.records()`` (what curves.png is
    drawn from) reads the records before it, as the resume's trim does (it raised a JSONDecodeError)."""
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, keep_up_to_step=None)
    written = [{"step": 2, "kind": "train", "loss": 1.5}, {"step": 4, "kind": "valid", "ndcg@10": 0.25}]
    for record in written:
        log.write(record)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"step": 6, "kind": "tra')  # the crash
    assert log.records() == written
    # The same reader as the resume's: what a resume keeps is what records() reads.
    assert MetricsLog(path, keep_up_to_step=6).records() == written
