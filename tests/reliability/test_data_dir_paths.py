"""Fault suite: a workdir records ``data.data_dir`` as an absolute path, so
genrec eval finds the data from any directory; a workdir that holds a relative
one (written before) still resumes when the command spells the same directory
either way, and genrec eval's not-found error points to --data."""

import json
from pathlib import Path

import pytest
from logging_state import kept_logging
from train_cli import TINY_RUN

from genrec.synthetic import make_synthetic_dataset, write_sid_dataset
from serving.cli import main
from training.config import load_config_file
from training.train import model_or_data_changes, train

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "tpu_configs" / "cpu_smoke.py")


def _settings(data_dir: str, *extra: str) -> list[str]:
    return [*TINY_RUN, "eval_every=0", "checkpoint.async_save=false", f"data.data_dir={data_dir}", *extra]


@pytest.fixture()
def byod(tmp_path, monkeypatch):
    """``tmp/byod/data/shop`` (a 40-user dataset) and a 2-step run ``runs/shop`` trained from ``tmp/byod``
    with the relative ``data.data_dir=data/shop``."""
    root = tmp_path / "byod"
    write_sid_dataset(make_synthetic_dataset(num_items=60, num_users=40, codebook_size=8), root / "data" / "shop",
                      "shop")
    monkeypatch.chdir(root)
    with kept_logging():
        train(load_config_file(SMOKE, _settings("data/shop", "num_steps=2")), "runs/shop")
    return root


def _data_dir_of(workdir: Path) -> str:
    return json.loads((workdir / "config.json").read_text())["train_config"]["data"]["data_dir"]


def _make_old(workdir: Path) -> None:
    """config.json as an older genrec wrote it: the relative data_dir the command gave."""
    path = workdir / "config.json"
    payload = json.loads(path.read_text())
    payload["train_config"]["data"]["data_dir"] = "data/shop"
    path.write_text(json.dumps(payload))


def test_config_records_the_absolute_data_dir_and_eval_runs_from_anywhere(byod, tmp_path, monkeypatch, capsys):
    workdir = byod / "runs" / "shop"
    assert _data_dir_of(workdir) == str(byod / "data" / "shop")
    monkeypatch.chdir(tmp_path)
    with kept_logging():
        status = main(["eval", "--workdir", str(workdir), "--which", "latest", "--max-examples", "5"])
    assert status == 0, capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["data/shop", "ABSOLUTE"])
def test_old_relative_data_dir_resumes_with_either_spelling(byod, spelling):
    workdir = byod / "runs" / "shop"
    _make_old(workdir)
    data_dir = str(byod / "data" / "shop") if spelling == "ABSOLUTE" else spelling
    with kept_logging():
        assert train(load_config_file(SMOKE, _settings(data_dir, "num_steps=3")), workdir).final_step == 3
    assert _data_dir_of(workdir) == str(byod / "data" / "shop")


def test_warm_start_from_an_old_relative_workdir_is_not_a_data_change(byod):
    workdir = byod / "runs" / "shop"
    _make_old(workdir)
    config = load_config_file(SMOKE, _settings(str(byod / "data" / "shop"), "num_steps=2"))
    assert model_or_data_changes(workdir, config) == {}


def test_eval_of_an_old_workdir_elsewhere_points_to_data_option(byod, tmp_path, monkeypatch, capsys):
    workdir = byod / "runs" / "shop"
    _make_old(workdir)
    monkeypatch.chdir(tmp_path)
    with kept_logging():
        assert main(["eval", "--workdir", str(workdir), "--which", "latest", "--max-examples", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data/shop" in err and "--data" in err, err


def test_a_moved_checkout_resumes_from_its_data_at_the_new_path(byod, tmp_path, monkeypatch):
    # The recorded absolute path does not exist on the new machine (another checkout root, a new VM): that is no
    # data change; the data fingerprint checks the data itself.
    moved = tmp_path / "elsewhere"
    byod.rename(moved)
    monkeypatch.chdir(moved)
    workdir = moved / "runs" / "shop"
    assert not Path(_data_dir_of(workdir)).exists()
    config = load_config_file(SMOKE, _settings("data/shop", "num_steps=3"))
    assert model_or_data_changes(workdir, config) == {}
    with kept_logging():
        assert train(config, workdir).final_step == 3
    assert _data_dir_of(workdir) == str(moved / "data" / "shop")


def test_a_data_dir_under_home_is_expanded(tmp_path, monkeypatch):
    # "--set data.data_dir=~/x" was read literally: "<cwd>/~/x: dataset directory not found".
    from training.train import absolute_data_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config_file(SMOKE, [*TINY_RUN, "data.data_dir=~/data/shop"])
    assert absolute_data_dir(config).data.data_dir == str(tmp_path / "data" / "shop")
