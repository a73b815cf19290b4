"""serving/batch_job.py: shard contents, and that an interrupted job resumed
later writes exactly the files of an uninterrupted one."""

import json
import os
import stat

import numpy as np
import pytest

from serving.batch_job import MANIFEST_FILE, run_batch_job, shard_path
from tests.batch_job_setup import USERS_PER_SHARD, batch_job_data, batch_job_recommender


@pytest.fixture(scope="module")
def data():
    return batch_job_data()


@pytest.fixture(scope="module")
def recommender(data):
    return batch_job_recommender(data)


def _run(recommender, data, out_dir, **kwargs):
    lines = []
    result = run_batch_job(recommender, data, out_dir, top_k=5, users_per_shard=USERS_PER_SHARD,
                           exclude_seen=True, log=lines.append, **kwargs)
    return result, lines


def _files(out_dir):
    return {p.name: p.read_bytes() for p in sorted(out_dir.iterdir())}


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, data, recommender):
    full, full_log = _run(recommender, data, tmp_path / "full")
    assert full.finished and full.num_shards == 5 and full.shards_written == 5
    assert any("users/s" in line for line in full_log)

    part = tmp_path / "part"
    first, _ = _run(recommender, data, part, max_shards=2)
    assert not first.finished and first.shards_written == 2
    assert sorted(p.name for p in part.glob("shard-*")) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert json.loads((part / MANIFEST_FILE).read_text())["completed"] == [0, 1]
    # A crash inside shard 3 leaves its temp file; a crash between writing shard 2 and
    # updating the manifest leaves a complete but unrecorded shard (with stale content).
    (part / ".shard-00003.jsonl.abc.tmp").write_text("partial")
    (part / f".{MANIFEST_FILE}.def.tmp").write_text("{")
    shard_path(part, 2).write_text("stale\n")

    resumed, resumed_log = _run(recommender, data, part)
    assert resumed.finished and resumed.shards_skipped == 2 and resumed.shards_written == 3
    assert any(line.startswith("resuming: 2 of 5") for line in resumed_log)
    # Exactly an uninterrupted run's files: the killed run's temporary files are removed (they were kept).
    assert sorted(p.name for p in part.iterdir()) == sorted(p.name for p in (tmp_path / "full").iterdir())
    assert _files(part) == _files(tmp_path / "full")

    # Running a finished job again writes nothing.
    again, _ = _run(recommender, data, part)
    assert again.finished and again.shards_written == 0


def test_shard_contents(tmp_path, data, recommender):
    _run(recommender, data, tmp_path)
    records = [json.loads(line) for s in range(5) for line in shard_path(tmp_path, s).read_text().splitlines()]
    assert [r["user"] for r in records] == data.user_ids
    catalogue = set(data.item_ids.tolist())
    for record, sequence in zip(records, data.sequences):
        assert 1 <= len(record["items"]) == len(record["scores"]) <= 5
        assert set(record["items"]) <= catalogue
        assert not set(record["items"]) & {data.item_ids[r] for r in sequence}  # exclude_seen
        assert np.all(np.diff(record["scores"]) <= 0)


def test_resume_with_other_settings_is_refused(tmp_path, data, recommender):
    _run(recommender, data, tmp_path, max_shards=1)
    with pytest.raises(ValueError, match="other settings.*top_k"):
        run_batch_job(recommender, data, tmp_path, top_k=4, users_per_shard=USERS_PER_SHARD,
                      exclude_seen=True, log=lambda line: None)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_shards_and_manifest_honour_the_umask(tmp_path, data, recommender, umask):
    previous = os.umask(umask)
    try:
        _run(recommender, data, tmp_path, max_shards=2)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert sorted(modes) == [MANIFEST_FILE, "shard-00000.jsonl", "shard-00001.jsonl"]  # the lock file went too
    assert set(modes.values()) == {0o666 & ~umask}


def test_batch_job_draws_no_bar_off_a_tty(tmp_path, data, recommender, capsys):
    lines = []  # capsys's stderr is not a TTY: the bar is off, the log lines stay
    run_batch_job(recommender, data, tmp_path, top_k=5, users_per_shard=4, log=lines.append)
    assert capsys.readouterr().err == ""
    assert any("users/s" in line for line in lines)


def test_batch_job_bar_counts_users_from_where_it_resumes(tmp_path, data, recommender, capsys, monkeypatch):
    monkeypatch.setattr("genrec.progress.progress_enabled", lambda: True)
    run_batch_job(recommender, data, tmp_path, top_k=5, users_per_shard=4, max_shards=2, log=lambda _: None)
    first = capsys.readouterr().err
    assert "recommend" in first and " 0/18 " in first and "user/s" in first
    run_batch_job(recommender, data, tmp_path, top_k=5, users_per_shard=4, log=lambda _: None)
    assert " 8/18 " in capsys.readouterr().err  # the two finished shards' 8 users count from the start


def _failing_on_call(fn, call: int, error: Exception):
    """``fn``, except that its ``call``-th call raises ``error``."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise error
        return fn(*args, **kwargs)

    return wrapper


def test_decode_error_keeps_the_shards_before_it_and_a_rerun_completes(tmp_path, data, recommender, monkeypatch):
    import serving.batch_job as batch_job

    decode = batch_job._recommend_shard
    monkeypatch.setattr(batch_job, "_recommend_shard", _failing_on_call(decode, 3, RuntimeError("device lost")))
    with pytest.raises(RuntimeError, match="device lost"):
        _run(recommender, data, tmp_path / "part")
    assert json.loads((tmp_path / "part" / MANIFEST_FILE).read_text())["completed"] == [0, 1]
    monkeypatch.setattr(batch_job, "_recommend_shard", decode)
    resumed, _ = _run(recommender, data, tmp_path / "part")
    assert resumed.shards_skipped == 2 and resumed.finished
    _run(recommender, data, tmp_path / "full")
    assert _files(tmp_path / "part") == _files(tmp_path / "full")


def test_write_error_is_raised_and_later_shards_are_not_recorded(tmp_path, data, recommender, monkeypatch):
    import serving.batch_job as batch_job

    monkeypatch.setattr(batch_job, "recommendation_records",
                        _failing_on_call(batch_job.recommendation_records, 2, OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        _run(recommender, data, tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["completed"] == [0] and not manifest["finished"]
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.jsonl"]
