"""genrec eval refuses impossible option values (zero beams, a batch of no users, a negative number of
examples) in one line, exit status 2, before loading anything; 0 is never read as "the run's default"."""

from pathlib import Path

import pytest
from logging_state import kept_logging
from train_cli import TINY_RUN

from serving.cli import main
from training.config import load_config_file
from training.evaluate import evaluate_workdir
from training.train import train

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "tpu_configs" / "cpu_smoke.py")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    with kept_logging():
        train(load_config_file(SMOKE, [*TINY_RUN, "num_steps=2", "eval_every=0"]), workdir)
    return workdir


@pytest.mark.parametrize("option, value", [
    ("--num-beams", "0"), ("--num-beams", "-3"), ("--batch-size", "0"), ("--max-examples", "-1"),
    ("--max-examples", "0"), ("--devices", "0"),
])
def test_impossible_value_is_one_line(workdir, option, value, capsys):
    with kept_logging():
        status = main(["eval", "--workdir", str(workdir), "--which", "latest", option, value])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and option in err and value in err, err


def test_python_api_refuses_zero_beams(workdir):
    with pytest.raises(ValueError, match="num_beams"):
        evaluate_workdir(workdir, which="latest", num_beams=0)


def test_possible_values_run(workdir, capsys):
    with kept_logging():
        assert main(["eval", "--workdir", str(workdir), "--which", "latest", "--max-examples", "3",
                     "--batch-size", "2"]) == 0, capsys.readouterr().err


def test_targets_outside_the_catalogue_are_warned(caplog):
    # genrec eval --data of a dataset with new items: their targets can never be hit, which a user should be told.
    import logging

    import numpy as np

    from training.evaluate import warn_targets_outside_catalogue

    item_ids, catalogue = np.array(["a", "b", "c", "new1"]), np.array(["c", "b", "a"])
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        assert warn_targets_outside_catalogue(item_ids, np.array([0, 3, 3, 1]), catalogue) == 2
        assert "2 of 4 test targets are items outside the model's catalogue (e.g. 'new1')" in caplog.text
        caplog.clear()
        assert warn_targets_outside_catalogue(item_ids, np.array([0, 1, 2]), catalogue, "valid") == 0
        assert caplog.text == ""
