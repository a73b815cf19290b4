"""Fault suite: resuming a workdir with settings that change what the run
computes is refused, naming the keys; harmless changes are accepted and kept
on record in metrics.jsonl (docs/reliability.md)."""

import json
from pathlib import Path

import pytest
from logging_state import kept_logging
from train_cli import TINY_RUN

from serving.cli import main
from training.config import load_config_file
from training.train import train

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "tpu_configs" / "cpu_smoke.py")
TINY = ["num_steps=2", "eval_every=0", "checkpoint.async_save=false", *TINY_RUN]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    with kept_logging():
        train(load_config_file(SMOKE, TINY), workdir)
    return workdir


@pytest.mark.parametrize("changes, keys", [
    (["batch_size=8"], ["batch_size"]),
    (["optimizer.learning_rate=1e-2", "loss.kind=msl", "seed=7"], ["optimizer.learning_rate", "loss.kind", "seed"]),
    (["num_steps=1"], ["shorten the run from 2 to 1 steps"]),
])
def test_changed_meaning_is_refused_and_the_run_files_kept(workdir, changes, keys, capsys):
    before = (workdir / "config.json").read_bytes()
    with kept_logging():
        assert main(["train", "--config", SMOKE, "--workdir", str(workdir),
                     *[arg for change in TINY + changes for arg in ("--set", change)]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(key in err for key in keys), err
    assert (workdir / "config.json").read_bytes() == before


def test_harmless_changes_are_accepted_and_recorded(workdir):
    with kept_logging():
        train(load_config_file(SMOKE, TINY + ["log_every=1", "num_steps=3", "eval.batch_size=32"]), workdir)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    changes = [r for r in records if r["kind"] == "resume_changes"]
    assert len(changes) == 1 and changes[0]["step"] == 2
    assert changes[0]["changes"] == {"log_every": [50, 1], "num_steps": [2, 3], "eval.batch_size": [64, 32]}
    assert max(r["step"] for r in records if r["kind"] == "train") == 3


def test_a_model_override_of_the_presets_own_value_is_no_change():
    # model.d_ff=64 on the tiny preset (whose d_ff is 64) was refused on resume and --init-from as "None -> 64".
    import dataclasses

    from training.config import ModelSpec, TrainConfig
    from training.train import resume_changes

    base = TrainConfig(model=ModelSpec(preset="tiny"))
    spelled = dataclasses.replace(base, model=dataclasses.replace(base.model, d_ff=64))
    other = dataclasses.replace(base, model=dataclasses.replace(base.model, d_ff=96))
    refuse_all = lambda key: False  # noqa: E731
    assert resume_changes(base, spelled, refuse_all, 2, 2, Path("w")) == {}
    assert resume_changes(spelled, base, refuse_all, 2, 2, Path("w")) == {}
    with pytest.raises(ValueError, match=r"model\.d_ff None -> 96"):
        resume_changes(base, other, refuse_all, 2, 2, Path("w"))
