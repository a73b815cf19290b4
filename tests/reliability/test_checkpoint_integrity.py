"""Fault suite: a damaged checkpoint (a flipped byte, a truncated or deleted
array file) is never trained on or served. A resumed run falls back to the
newest intact checkpoint with one warning and ends as an uninterrupted run
would; with none intact it stops with one line; eval, the Recommender and the
final test evaluation refuse a damaged best checkpoint (docs/reliability.md).

Files are damaged where they lie, whatever Orbax names them: the largest file
under a checkpoint's ``params`` whose damage changes what Orbax reads back."""

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from checkpoint_damage import damage, read_back
from logging_state import kept_logging
from train_cli import TINY_RUN, assert_same_latest_params

from genrec.console import UserError
from serving.cli import main as genrec_main
from serving.recommender import Recommender
from training.config import load_config_file
from training.train import train

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "tpu_configs" / "cpu_smoke.py")
# Checkpoints at steps 2 and 4 (the last), the best one at step 2 or 4. One device: Orbax then
# writes the arrays to data files TensorStore does not checksum itself (replicated over the
# test session's 8 CPU devices they land in CRC-checked b-tree nodes, where a flipped bit is a read error).
TINY = ["num_steps=4", "eval_every=2", "checkpoint.every_steps=2", "log_every=2", "num_devices=1", *TINY_RUN]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An uninterrupted 4-step run: ``(workdir, TrainResult)``; tests damage copies of it."""
    workdir = tmp_path_factory.mktemp("run") / "uninterrupted"
    with kept_logging():
        result = train(load_config_file(SMOKE, TINY), workdir)
    assert result.final_step == 4 and result.best_step in (2, 4)
    return workdir, result


def intact_arrays(reference_dir: Path, item: str) -> list[np.ndarray]:
    arrays = read_back(reference_dir / item)
    assert arrays, f"cannot read {reference_dir / item}"
    return arrays


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "run"
    shutil.copytree(run_dir, workdir)
    return workdir


def steps_on_disk(workdir: Path) -> list[str]:
    return sorted(path.name for path in (workdir / "checkpoints").iterdir())


def train_records(workdir: Path) -> list[dict]:
    records = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return [record for record in records if record["kind"] == "train"]


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_ends_as_an_uninterrupted_one(
        finished_run, tmp_path, caplog, how):
    reference_dir, reference = finished_run
    workdir = copy_of(reference_dir, tmp_path)
    damage(workdir / "checkpoints" / "4" / "params", how, intact_arrays(reference_dir, "checkpoints/4/params"))

    with kept_logging(), caplog.at_level(logging.WARNING):
        resumed = train(load_config_file(SMOKE, TINY), workdir)
    warnings = [record.getMessage() for record in caplog.records
                if record.levelno >= logging.WARNING and record.name.startswith(("genrec", "training"))]
    assert len(warnings) == 1, warnings
    reason = r"params/\S+ checksum mismatch" if how == "flip" else "unreadable: "
    assert re.match(rf"checkpoint step 4 is damaged \({reason}", warnings[0]), warnings[0]
    assert warnings[0].endswith(f"; moved to {workdir / 'checkpoints' / '4.damaged'}; resuming from step 2")

    # Steps 3-4 trained again from step 2 and saved past the damaged step, which is kept aside.
    assert steps_on_disk(workdir) == ["2", "4", "4.damaged"]
    assert resumed.final_step == 4 and resumed.best_step == reference.best_step
    assert resumed.test_metrics == reference.test_metrics
    assert_same_latest_params(workdir, reference_dir, atol=0.0)
    assert [(r["step"], r["loss"]) for r in train_records(workdir)] == \
        [(r["step"], r["loss"]) for r in train_records(reference_dir)]


def test_every_checkpoint_damaged_is_one_line_and_exit_2(finished_run, tmp_path, capsys):
    reference_dir, _ = finished_run
    workdir = copy_of(reference_dir, tmp_path)
    damage(workdir / "checkpoints" / "4" / "params", "flip", intact_arrays(reference_dir, "checkpoints/4/params"))
    damage(workdir / "checkpoints" / "2" / "params", "delete", intact_arrays(reference_dir, "checkpoints/2/params"))
    arguments = ["train", "--config", SMOKE, "--workdir", str(workdir)]
    with kept_logging():
        assert genrec_main([*arguments, *[arg for override in TINY for arg in ("--set", override)]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.search(r"no intact checkpoint to resume from: checkpoint steps 4, 2 are damaged "
                     r"\(4: params/\S+ checksum mismatch; 2: unreadable: .*\); start over with --no-resume", err), err
    assert steps_on_disk(workdir) == ["2", "4"]  # nothing moved: the user decides


def test_a_damaged_best_checkpoint_is_refused_for_serving(finished_run, tmp_path, capsys):
    reference_dir, reference = finished_run
    workdir = copy_of(reference_dir, tmp_path)
    best = f"best/{reference.best_step}/params"
    damage(workdir / best, "flip", intact_arrays(reference_dir, best))

    message = (rf"the best checkpoint \(step {reference.best_step}\) is damaged \(params/\S+ checksum mismatch\); "
               "load the latest checkpoint instead")
    with pytest.raises(ValueError, match=message):
        Recommender.from_workdir(workdir)
    with kept_logging():
        assert genrec_main(["eval", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert Recommender.from_workdir(workdir, "latest").num_items == 60  # the intact one still serves


def test_a_damaged_best_checkpoint_stops_the_final_test_evaluation(finished_run, tmp_path):
    reference_dir, reference = finished_run
    workdir = copy_of(reference_dir, tmp_path)
    results_before = (workdir / "results.json").read_bytes()
    best = f"best/{reference.best_step}/params"
    damage(workdir / best, "flip", intact_arrays(reference_dir, best))
    message = (rf"best checkpoint \(step {reference.best_step}\) is damaged \(params/\S+ checksum mismatch\), "
               "so the test split was not evaluated")
    with kept_logging(), pytest.raises(UserError, match=message):
        train(load_config_file(SMOKE, TINY), workdir)  # the finished run goes straight to its test evaluation
    assert (workdir / "results.json").read_bytes() == results_before
