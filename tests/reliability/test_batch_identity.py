"""Fault suite: a resumed ``genrec recommend`` never mixes two models, two
inputs or damaged shards into one output. The manifest binds the job to the
checkpoint (step and weights' digest) and to the input (user ids and
histories); a rerun after retraining or with changed histories is refused in
one line, and a listed shard that is missing, truncated or altered is written
again, so the output equals an uninterrupted run's byte for byte."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from logging_state import kept_logging, restore_logging  # noqa: F401 (autouse)
from train_cli import TINY_RUN, latest_params

from genrec.array_digest import tree_digest
from genrec.models import build_model
from genrec.run_files import load_run_data, read_run_info
from genrec.synthetic import write_sid_dataset
from serving.batch_job import MANIFEST_FILE
from serving.cli import main
from training.checkpoint import Checkpointer, TrainingProgress, read_run_config, write_run_files
from training.config import CheckpointConfig, load_config_file
from training.train import load_data

REPO = Path(__file__).resolve().parents[2]
# The tiny run's settings (40 users, 60 items); 4 shards of 10 users.
JOB = ["--which", "latest", "--num-beams", "4", "--top-k", "4", "--batch-size", "10", "--users-per-shard", "10"]



def save_checkpoint(workdir: Path, step: int, seed: int) -> None:
    """A periodic checkpoint at ``step`` holding the weights of a model initialised with ``seed``:
    what a training run saves, without the minute of compiling one (serving reads only the weights)."""
    _, model_config = read_run_config(workdir)
    params = nnx.state(build_model(model_config, rngs=nnx.Rngs(params=seed, dropout=seed)), nnx.Param)
    checkpointer = Checkpointer(workdir, CheckpointConfig(async_save=False))
    checkpointer.save(params, {"count": np.zeros((), np.int32)},
                      TrainingProgress(step=step, data_step=step, rng_key=(0, seed)))
    checkpointer.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A workdir of the tiny run (tests/train_cli.TINY_RUN) whose latest checkpoint is step 2."""
    workdir = tmp_path_factory.mktemp("run")
    config = load_config_file(REPO / "tpu_configs/cpu_smoke.py", TINY_RUN)
    data = load_data(config.data)
    model_config = config.model.build(data.vocab.vocab_size, data.num_levels, config.data.max_history)
    write_run_files(workdir, config, model_config, data.vocab, data.sid_codes, data.item_ids)
    save_checkpoint(workdir, step=2, seed=0)
    return workdir


def _recommend(capsys, workdir: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    """``genrec recommend`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(["recommend", "--workdir", str(workdir), "--out", str(out), *JOB, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _outputs(out: Path) -> dict[str, bytes]:
    """The job's files (shards and manifest), by name."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.startswith("shard-")
            or p.name == MANIFEST_FILE}


@pytest.fixture(scope="module")
def uninterrupted(workdir, tmp_path_factory):
    """The files of the job run in one go on ``workdir``."""
    out = tmp_path_factory.mktemp("uninterrupted") / "recs"
    with kept_logging():
        assert main(["recommend", "--workdir", str(workdir), "--out", str(out), *JOB]) == 0
    return _outputs(out)


@pytest.mark.parametrize("new_step", [4, 2], ids=["trained-further", "retrained-to-the-same-step"])
def test_a_job_resumed_after_retraining_is_refused(tmp_path, workdir, capsys, new_step):
    retrained = tmp_path / "run"
    shutil.copytree(workdir, retrained)
    out = tmp_path / "recs"
    assert _recommend(capsys, retrained, out, "--max-shards", "2")[0] == 0
    first = _outputs(out)
    if new_step == 2:  # retrained from scratch: the step number alone would not tell
        shutil.rmtree(retrained / "checkpoints")
    save_checkpoint(retrained, step=new_step, seed=1)

    code, _, err = _recommend(capsys, retrained, out)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "a job of checkpoint 'latest' step 2 (params sha256:" in err
    assert f"the workdir's latest is now step {new_step} (params sha256:" in err
    assert "use another output directory or delete this one" in err
    assert _outputs(out) == first  # nothing of the new model was written


def test_a_job_resumed_with_changed_histories_is_refused(tmp_path, workdir, capsys):
    data_dir = tmp_path / "data"
    write_sid_dataset(load_run_data(read_run_info(workdir).data), data_dir, "users")
    out = tmp_path / "recs"
    assert _recommend(capsys, workdir, out, "--data", str(data_dir), "--max-shards", "1")[0] == 0
    first = _outputs(out)
    # The same users and items; one history of a shard not yet written is in another order.
    inter_path = data_dir / "users.inter.json"
    histories = json.loads(inter_path.read_text())
    last_user = list(histories)[-1]
    histories[last_user] = histories[last_user][::-1]
    inter_path.write_text(json.dumps(histories))

    code, _, err = _recommend(capsys, workdir, out, "--data", str(data_dir))
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "holds a job over input sha256:" in err and "(40 users of dataset 'users')" in err
    assert "its users or their histories changed" in err
    assert _outputs(out) == first


def test_an_identical_rerun_resumes_and_equals_the_uninterrupted_job(tmp_path, workdir, uninterrupted, capsys):
    out = tmp_path / "recs"
    assert _recommend(capsys, workdir, out, "--max-shards", "2")[0] == 0
    code, log, _ = _recommend(capsys, workdir, out)
    assert code == 0 and "resuming: 2 of 4 shards already complete" in log
    assert _outputs(out) == uninterrupted
    manifest = json.loads(uninterrupted[MANIFEST_FILE])
    assert manifest["model"] == {"checkpoint": "latest", "step": 2, "params": tree_digest(latest_params(workdir))}
    assert manifest["input"]["num_users"] == 40 and manifest["input"]["sha256"].startswith("sha256:")
    assert manifest["completed"] == [0, 1, 2, 3]
    assert sorted(manifest["shards"]) == [f"shard-{s:05d}.jsonl" for s in range(4)]
    for name, record in manifest["shards"].items():
        assert record["bytes"] == len(uninterrupted[name])


def test_damaged_shards_are_written_again(tmp_path, workdir, uninterrupted, capsys):
    out = tmp_path / "recs"
    assert _recommend(capsys, workdir, out, "--max-shards", "3")[0] == 0
    truncated, altered, missing = (out / f"shard-{s:05d}.jsonl" for s in range(3))
    truncated.write_bytes(truncated.read_bytes()[:-7])
    content = bytearray(altered.read_bytes())
    digit = next(i for i, byte in enumerate(content) if chr(byte).isdigit() and i > content.index(b'"scores"'))
    content[digit] = ord("7" if content[digit] != ord("7") else "3")  # one byte, same length
    altered.write_bytes(bytes(content))
    missing.unlink()

    code, log, _ = _recommend(capsys, workdir, out)
    assert code == 0 and _outputs(out) == uninterrupted
    assert "shard-00000.jsonl is truncated" in log
    assert "shard-00001.jsonl is altered" in log
    assert "shard-00002.jsonl is missing" in log


def test_an_old_format_manifest_is_refused_in_one_line(tmp_path, workdir, capsys):
    out = tmp_path / "recs"
    out.mkdir()
    (out / MANIFEST_FILE).write_text(json.dumps({"kind": "genrec.batch_job", "format_version": 1,
                                                 "settings": {}, "completed": [0], "finished": False}))
    code, _, err = _recommend(capsys, workdir, out)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "format version 1" in err and "use another output directory or delete this one" in err
