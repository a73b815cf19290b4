"""Fault suite: a workdir records a fingerprint of the data its run started on
(data_fingerprint.json); resuming it, or starting a warm start from it, on data
files that changed since is refused in one line (exit 2), the workdir kept as
it was. A workdir written before the record existed resumes as before."""

import json
from pathlib import Path

import pytest
from logging_state import kept_logging
from train_cli import TINY_RUN

from genrec.synthetic import make_synthetic_dataset, write_sid_dataset
from serving.cli import main
from training.config import load_config_file
from training.train import train

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "tpu_configs" / "cpu_smoke.py")


def _settings(data_dir: Path, *extra: str) -> list[str]:
    return [*TINY_RUN, "eval_every=0", "checkpoint.async_save=false", f"data.data_dir={data_dir}", *extra]


def _args(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


@pytest.fixture()
def run(tmp_path):
    """A 2-step run on a 40-user dataset in tmp/data (copied from nothing: written here)."""
    data_dir = tmp_path / "data"
    write_sid_dataset(make_synthetic_dataset(num_items=60, num_users=40, codebook_size=8), data_dir, "toy")
    workdir = tmp_path / "run"
    with kept_logging():
        train(load_config_file(SMOKE, _settings(data_dir, "num_steps=2")), workdir)
    return data_dir, workdir


def _drop_users(data_dir: Path, keep: int) -> None:
    """Truncates toy.inter.json to its first ``keep`` users (the catalogue stays)."""
    path = data_dir / "toy.inter.json"
    users = json.loads(path.read_text())
    path.write_text(json.dumps(dict(list(users.items())[:keep])))


def test_resume_on_changed_interactions_is_refused(run, capsys):
    data_dir, workdir = run
    assert (workdir / "data_fingerprint.json").is_file()
    _drop_users(data_dir, 30)
    before = sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*"))
    with kept_logging():
        status = main(["train", "--config", SMOKE, "--workdir", str(workdir),
                       *_args(_settings(data_dir, "num_steps=4"))])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "data" in err and "40 users" in err and "30 users" in err, err
    assert sorted(p.relative_to(workdir).as_posix() for p in workdir.rglob("*")) == before
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 2


def test_resume_on_the_same_data_continues(run):
    data_dir, workdir = run
    with kept_logging():
        result = train(load_config_file(SMOKE, _settings(data_dir, "num_steps=3")), workdir)
    assert result.final_step == 3


def test_old_workdir_without_the_record_resumes_as_before(run):
    data_dir, workdir = run
    (workdir / "data_fingerprint.json").unlink()
    with kept_logging():
        result = train(load_config_file(SMOKE, _settings(data_dir, "num_steps=3")), workdir)
    assert result.final_step == 3


def test_warm_start_from_a_run_on_other_data_is_refused(tmp_path, capsys):
    data_dir = tmp_path / "data"
    write_sid_dataset(make_synthetic_dataset(num_items=60, num_users=40, codebook_size=8), data_dir, "toy")
    source = tmp_path / "source"
    with kept_logging():
        train(load_config_file(SMOKE, _settings(data_dir, "num_steps=2", "eval_every=2")), source)
    _drop_users(data_dir, 30)
    with kept_logging():
        status = main(["train", "--config", SMOKE, "--workdir", str(tmp_path / "warm"), "--init-from", str(source),
                       *_args(_settings(data_dir, "num_steps=2", "eval_every=2"))])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "40 users" in err and "30 users" in err, err
    assert not (tmp_path / "warm").exists()


def test_rl_resume_on_changed_interactions_is_refused(tmp_path, capsys):
    from train_cli import RL_TINY, rl_arguments

    from training.rl import main as rl_main

    data_dir = tmp_path / "data"
    write_sid_dataset(make_synthetic_dataset(num_items=60, num_users=40, codebook_size=8), data_dir, "toy")
    source, workdir = tmp_path / "source", tmp_path / "rl"
    supervised = [*TINY_RUN, f"data.data_dir={data_dir}", "checkpoint.async_save=false"]
    with kept_logging():
        train(load_config_file(SMOKE, [*supervised, "num_steps=2", "eval_every=2"]), source)
        rl = [*supervised, *RL_TINY, "rl.num_steps=2"]
        assert rl_main(rl_arguments(source, workdir, rl)) == 0
    capsys.readouterr()
    (source / "data_fingerprint.json").unlink()  # a start written before the record: only the resume can tell
    _drop_users(data_dir, 30)
    with kept_logging():
        status = rl_main(rl_arguments(source, workdir, [*supervised, *RL_TINY, "rl.num_steps=4"]))
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "rl/data_fingerprint.json" in err and "30 users" in err, err


def test_the_fingerprint_is_the_interactions_not_the_catalogue_row_order():
    import dataclasses

    import numpy as np

    from genrec.run_files import DATA_FINGERPRINT_VERSION, check_same_data, data_fingerprint

    data = make_synthetic_dataset(num_items=40, num_users=12, codebook_size=8, seed=0)
    perm = np.random.default_rng(1).permutation(len(data.item_ids))  # row r of the copy is row perm[r] here
    row_in_copy = np.argsort(perm)
    shuffled = dataclasses.replace(data, item_ids=data.item_ids[perm], sid_codes=data.sid_codes[perm],
                                   sequences=[row_in_copy[s] for s in data.sequences])
    record = data_fingerprint(data)
    assert record["version"] == DATA_FINGERPRINT_VERSION
    assert data_fingerprint(shuffled) == record
    swapped = list(data.sequences)
    swapped[3] = swapped[3][::-1].copy()  # one user's order
    with pytest.raises(ValueError, match="other data than this config's"):
        check_same_data(record, dataclasses.replace(data, sequences=swapped), "run:", "fix")
    # A record of another formula is not compared: its run resumes unchecked, as one from before records.
    check_same_data(dict(record, version=DATA_FINGERPRINT_VERSION + 1, digest="sha256:0"), data, "run:", "fix")


def test_a_dataset_is_hashed_once(monkeypatch):
    # A warm start or RL run checks its start's record, then writes (or on resume checks) its own: one hash.
    import genrec.run_files as run_files

    calls = []
    compute = run_files._compute_data_fingerprint
    monkeypatch.setattr(run_files, "_compute_data_fingerprint", lambda data: calls.append(1) or compute(data))
    data = make_synthetic_dataset(num_items=40, num_users=12, codebook_size=8, seed=0)
    first = run_files.data_fingerprint(data)
    first["digest"] = "changed by a caller"
    assert run_files.data_fingerprint(data)["digest"].startswith("sha256:") and len(calls) == 1
