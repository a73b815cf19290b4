"""Fault suite: SIGTERM at the edges of a run (docs/reliability.md).

- Between two logs: the resumed run's metrics.jsonl equals an uninterrupted
  run's, the first log after the resume included (its window average covers
  the steps before the interruption: the checkpoint holds them).
- During the last step or the final test evaluation: the run stops at once
  with exit status 143 and no results; rerunning the same command only
  evaluates (training is finished) and reports what an uninterrupted run does.
"""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from logging_state import kept_logging
from train_cli import TINY_RUN

import training.train as train_module
from training.config import load_config_file
from training.preemption import EXIT_CODE, TrainingInterrupted

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "tpu_configs" / "cpu_smoke.py")
NUM_STEPS = 8
# eval_every=0: the only evaluation is the final test one; no periodic checkpoint before the end.
OVERRIDES = [f"num_steps={NUM_STEPS}", "log_every=4", "eval_every=0", "checkpoint.every_steps=1000",
             "checkpoint.async_save=false", "model.dropout_rate=0.1", *TINY_RUN]
TIMING_KEYS = ("steps_per_s", "samples_per_s")


def _argv(workdir: Path) -> list[str]:
    return ["--config", SMOKE, "--workdir", str(workdir), *[a for o in OVERRIDES for a in ("--set", o)]]


def _records(workdir: Path, kind: str) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of OVERRIDES."""
    workdir = tmp_path_factory.mktemp("reference")
    with kept_logging():
        train_module.train(load_config_file(SMOKE, OVERRIDES), workdir)
    return workdir


@pytest.fixture
def own_sigterm_handler():
    """A SIGTERM handler that only records, standing in for the default one (which would end pytest):
    a signal that reaches it is one that training ignored. Yields the signals it received."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_resumed_run_logs_the_same_window_averages(reference, tmp_path, own_sigterm_handler):
    config = load_config_file(SMOKE, OVERRIDES)
    workdir = tmp_path / "run"

    def sigterm_at_5(step: int) -> None:
        if step == 5:  # arrives after step 5's stop check: the run stops after step 6, between logs 4 and 8
            os.kill(os.getpid(), signal.SIGTERM)

    with kept_logging():
        with pytest.raises(TrainingInterrupted) as stopped:
            train_module.train(config, workdir, on_step_end=sigterm_at_5)
        assert stopped.value.step == 6
        train_module.train(config, workdir)
    resumed, uninterrupted = _records(workdir, "train"), _records(reference, "train")
    assert [r["step"] for r in resumed] == [r["step"] for r in uninterrupted] == [4, 8]
    for got, expected in zip(resumed, uninterrupted):
        assert got.keys() == expected.keys() and got["kind"] == expected["kind"]
        for key in expected.keys() - {"kind"}:
            np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(expected[key], float),
                                       rtol=1e-6, err_msg=f"step {expected['step']} {key}")
    assert own_sigterm_handler == []


@pytest.mark.parametrize("when", ["last step", "final evaluation"])
def test_sigterm_at_the_end_stops_and_a_rerun_only_evaluates(when, reference, tmp_path, monkeypatch,
                                                              own_sigterm_handler, capsys):
    workdir = tmp_path / "run"
    on_step_end = None
    if when == "last step":
        def on_step_end(step: int) -> None:
            if step == NUM_STEPS:
                os.kill(os.getpid(), signal.SIGTERM)
    else:
        evaluate_split = train_module.evaluate_split

        def signal_then_evaluate(*args, **kwargs):  # eval_every=0: called for the test split only
            os.kill(os.getpid(), signal.SIGTERM)
            return evaluate_split(*args, **kwargs)

        monkeypatch.setattr(train_module, "evaluate_split", signal_then_evaluate)
    with kept_logging():
        assert train_module.main(_argv(workdir), on_step_end=on_step_end) == EXIT_CODE == 143
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"interrupted_at_step": NUM_STEPS}
    assert own_sigterm_handler == []
    assert not (workdir / "results.json").exists() and _records(workdir, "test") == []
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [str(NUM_STEPS)]

    # The rerun: no training step (a step would fail), the final evaluation only.
    monkeypatch.undo()

    def no_training(*args, **kwargs):
        def step(*step_args):
            raise AssertionError("the rerun of a finished run trained again")
        return step

    monkeypatch.setattr(train_module, "make_train_step", no_training)
    with kept_logging():
        assert train_module.main(_argv(workdir)) == 0
    results = json.loads((workdir / "results.json").read_text())
    expected = json.loads((reference / "results.json").read_text())
    assert results["final_step"] == NUM_STEPS and results["test_metrics"] == expected["test_metrics"]
    assert _records(workdir, "train") == _records(reference, "train")
    assert _records(workdir, "test") == _records(reference, "test")
