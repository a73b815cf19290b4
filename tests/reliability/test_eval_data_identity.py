"""genrec eval scores what the model serves, on the data the run trained on.

Two silent wrong results a fresh-user audit found (2026-12-07): ``genrec eval --data DIR`` of a dataset
that re-codes some items (a documented catalogue change) built histories and targets from the dataset's
SIDs, while the model serves the catalogue's, so the reported Recall understated (or, where a new SID
collides with another item's, overstated) what ``genrec recommend`` serves; and ``genrec eval`` without
``--data`` read the run's data directory as it is now, so changed data (new interactions: test targets
that were training targets) went unnoticed.
"""

import json

import numpy as np
import pytest
from logging_state import restore_logging  # noqa: F401 (autouse)
from train_cli import TINY_RUN

from genrec.datasets import INDEX_SUFFIX, INTER_SUFFIX, write_sid_dataset
from genrec.run_files import load_workdir_data
from serving.cli import main
from training.config import load_config_file
from training.evaluate import evaluate_workdir
from training.train import train

SMOKE = "tpu_configs/cpu_smoke.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run trained on a dataset directory (the synthetic data written out), and that directory."""
    base = tmp_path_factory.mktemp("eval_identity")
    synthetic = base / "synthetic_run"
    train(load_config_file(SMOKE, [*TINY_RUN, "num_steps=2", "eval_every=0"]), synthetic)
    data_dir = base / "data"
    write_sid_dataset(load_workdir_data(synthetic), data_dir, "toy")
    workdir = base / "run"
    train(load_config_file(SMOKE, [*TINY_RUN, "num_steps=2", "eval_every=0", f"data.data_dir={data_dir}"]), workdir)
    return workdir, data_dir


def _copy(data_dir, to, edit_index=None, edit_inter=None):
    to.mkdir()
    for path in data_dir.iterdir():
        content = json.loads(path.read_text())
        if path.name.endswith(INDEX_SUFFIX) and edit_index:
            content = edit_index(content)
        if path.name.endswith(INTER_SUFFIX) and edit_inter:
            content = edit_inter(content)
        (to / path.name).write_text(json.dumps(content))
    return to


def _target_ids(data_dir):
    inter = json.loads(next(data_dir.glob(f"*{INTER_SUFFIX}")).read_text())
    return [items[-1] for items in inter.values()]


def test_recoded_items_are_scored_with_the_catalogues_sids(run, tmp_path):
    workdir, data_dir = run
    reference = evaluate_workdir(workdir, which="latest")
    ranks = reference.result.ranks
    assert 0 < (ranks > 0).sum() < len(ranks)  # hits and misses: the comparison below can tell

    targets = list(dict.fromkeys(_target_ids(data_dir)))

    def swap_pairs(index):  # exchange the SIDs of pairs of test targets: 8 re-coded items
        for a, b in zip(targets[0:8:2], targets[1:8:2]):
            index[a], index[b] = index[b], index[a]
        return index

    recoded = _copy(data_dir, tmp_path / "recoded", edit_index=swap_pairs)
    got = evaluate_workdir(workdir, which="latest", data_dir=str(recoded))
    np.testing.assert_array_equal(got.result.ranks, ranks)
    assert got.result.metrics == reference.result.metrics


def test_targets_outside_the_catalogue_are_misses_even_with_a_catalogue_sid(run, tmp_path):
    """A new item that takes a retired item's SID: the model's hit on that SID is the retired item (what
    the catalogue serves), not the new one, so it is a miss, as the warning says."""
    workdir, data_dir = run
    reference = evaluate_workdir(workdir, which="latest")
    hit_targets = [t for t, r in zip(_target_ids(data_dir), reference.result.ranks) if r > 0]
    renamed = hit_targets[0]

    def rename_index(index):
        index["new-item"] = index.pop(renamed)
        return index

    def rename_inter(inter):
        return {user: ["new-item" if i == renamed else i for i in items] for user, items in inter.items()}

    moved = _copy(data_dir, tmp_path / "moved", rename_index, rename_inter)
    got = evaluate_workdir(workdir, which="latest", data_dir=str(moved))
    is_renamed = np.array([t == renamed for t in _target_ids(data_dir)])
    assert is_renamed.any() and (got.result.ranks[is_renamed] == 0).all()
    np.testing.assert_array_equal(got.result.ranks[~is_renamed], reference.result.ranks[~is_renamed])


def test_eval_refuses_a_runs_data_that_changed_since_training(run, tmp_path, capsys):
    workdir, data_dir = run
    inter_path = next(data_dir.glob(f"*{INTER_SUFFIX}"))
    original = inter_path.read_text()
    try:
        inter = json.loads(original)
        inter_path.write_text(json.dumps({user: items[:-1] for user, items in inter.items()}))
        with pytest.raises(ValueError) as error:
            evaluate_workdir(workdir, which="latest")
        message = str(error.value)
        assert "\n" not in message and "data_fingerprint.json" in message and "--data" in message, message
        assert main(["eval", "--workdir", str(workdir), "--which", "latest"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "data_fingerprint.json" in err, err
        # The changed data evaluated on purpose: --data names it.
        evaluate_workdir(workdir, which="latest", data_dir=str(data_dir))
    finally:
        inter_path.write_text(original)
    evaluate_workdir(workdir, which="latest")  # the data restored: evaluated again
