"""Atomic writes: a failed write leaves the old file intact and no temp file;
every writer's files get the umask's permissions, like any other program's."""

import os
import stat

import numpy as np
import pytest

from constrained.index import build_index
from genrec.atomic_files import atomic_open, write_json_atomic, write_text_atomic
from genrec.rqkmeans import write_index
from genrec.synthetic import make_synthetic_dataset, write_sid_dataset
from training.checkpoint import write_run_files
from training.config import TrainConfig


def test_success_replaces_and_failure_keeps_old_content(tmp_path):
    path = tmp_path / "sub" / "file.txt"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write("half-written")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["file.txt"]
    write_json_atomic(path, {"a": 1})
    assert path.read_text() == '{"a": 1}'
    with atomic_open(path, "wb") as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=oct)
def umask(request):
    """Runs the test under this umask (restored afterwards)."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _write_everything(out_dir):
    """Calls each genrec writer into ``out_dir``: dataset files (JSON + vocabulary), RQ-KMeans
    index, trie index .npz, a training workdir's run files (JSON + catalogue .npz)."""
    data = make_synthetic_dataset(num_items=40, num_users=10, num_levels=2, codebook_size=8, seed=0)
    write_sid_dataset(data, out_dir / "dataset", "toy")
    write_index(out_dir / "sids" / "toy.index.rq-kmeans.json", data.item_ids.tolist(), data.sid_codes, data.vocab)
    build_index(data.sid_codes, np.arange(data.num_items), codebook_sizes=data.vocab.codebook_sizes).save(
        out_dir / "index.npz")
    model_config = TrainConfig().model.build(data.vocab.vocab_size, data.vocab.num_levels, 10)
    write_run_files(out_dir / "workdir", TrainConfig(), model_config, data.vocab, data.sid_codes, data.item_ids)
    with atomic_open(out_dir / "ranks.npy", "wb") as f:
        np.save(f, np.zeros(3))


def test_written_files_honour_the_umask(tmp_path, umask):
    _write_everything(tmp_path)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 10
    assert {p.relative_to(tmp_path).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {
        p.relative_to(tmp_path).as_posix(): oct(0o666 & ~umask) for p in files}
