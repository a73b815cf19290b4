"""Fault suite: user errors of `genrec train`, `eval`, `recommend` and `build-index`
that used to crash, hang or speak unclearly are one line on stderr, exit status 2,
nothing left behind (docs/reliability.md; tests/test_cli_errors.py has the rest).

- resuming a workdir with another model names the fields that differ (it printed
  two whole model configs, about 1,500 characters);
- a workdir whose checkpoint directory cannot be written (``checkpoints`` is a
  file, a read-only ``checkpoints/``) is refused before training: Orbax's failed
  save printed its error, then kept the process waiting 300 s for its threads;
- an output file that cannot be written (in a read-only directory, under a file)
  is refused before the work, naming the path given (eval evaluated everything,
  then named a temporary file).
"""

import json
import os
import shutil
import subprocess
import sys
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
TINY = ["num_steps=1", "eval_every=0", *TINY_RUN]
SETS = [a for o in TINY for a in ("--set", o)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A trained tiny workdir (latest checkpoint only)."""
    workdir = tmp_path_factory.mktemp("run")
    with kept_logging():
        train(load_config_file(SMOKE, TINY), workdir)
    return workdir


def _one_error_line(err: str, command: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"genrec {command}: error: "), err
    return lines[0]


def test_resume_with_another_model_names_the_differing_fields(workdir, capsys):
    with kept_logging():
        assert main(["train", "--config", SMOKE, "--workdir", str(workdir), *SETS,
                     "--set", "model.num_encoder_layers=2"]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "config.json holds a different model" in line and "num_encoder_layers 1 -> 2" in line, line
    assert len(line) < 300, line


def test_checkpoints_path_that_is_a_file_is_refused_at_once(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("")  # the periodic checkpoints' directory is a file
    command = [sys.executable, "-m", "serving.cli", "train", "--config", SMOKE, "--workdir", str(run), *SETS]
    try:
        done = subprocess.run(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the process did not end after its error: {hung.stderr}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "checkpoints" in _one_error_line(done.stderr, "train")


def test_output_under_a_file_is_refused_before_evaluating(workdir, tmp_path, monkeypatch, capsys):
    import training.evaluate

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before checking --save-ranks")

    monkeypatch.setattr(training.evaluate, "evaluate_workdir", no_evaluation)
    (tmp_path / "a_file").write_text("")
    before = sorted(tmp_path.rglob("*"))
    with kept_logging():
        assert main(["eval", "--workdir", str(workdir), "--which", "latest",
                     "--save-ranks", str(tmp_path / "a_file" / "ranks.npy")]) == 2
    assert "a_file" in _one_error_line(capsys.readouterr().err, "eval")
    assert sorted(tmp_path.rglob("*")) == before


# Runs genrec commands in one process and prints [exit status, stderr] per command as JSON lines.
_DRIVER = """
import contextlib, io, json, sys
from serving.cli import main
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    print(json.dumps([code, err.getvalue()]))
"""


def _without_write_permission() -> list[str] | None:
    """A command prefix under which a mode-0555 directory cannot be written, or None.

    Root ignores permission bits: there the commands run without the capabilities that let it
    (util-linux setpriv), still as root, so the test's files stay readable.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    probe = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", "true"], capture_output=True)
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"] if probe.returncode == 0 else None


def test_outputs_in_a_read_only_directory_are_one_line(workdir, tmp_path):
    prefix = _without_write_permission()
    if prefix is None:
        pytest.skip("running as root without setpriv: a read-only directory cannot be made")
    write_sid_dataset(make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8), tmp_path / "data", "toy")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only_checkpoints = tmp_path / "run" / "checkpoints"
    read_only_checkpoints.mkdir(parents=True)
    for directory in (read_only, read_only_checkpoints):
        directory.chmod(0o555)
    cases = [  # (argv, the path its error line must name)
        (["train", "--config", SMOKE, "--workdir", str(read_only / "run"), *SETS], read_only / "run"),
        (["train", "--config", SMOKE, "--workdir", str(tmp_path / "run"), *SETS], read_only_checkpoints),
        (["recommend", "--workdir", str(workdir), "--which", "latest", "--num-beams", "4", "--top-k", "4",
          "--out", str(read_only / "recs")], read_only / "recs"),
        (["eval", "--workdir", str(workdir), "--which", "latest", "--save-ranks", str(read_only / "ranks.npy")],
         read_only / "ranks.npy"),
        (["build-index", "--data", str(tmp_path / "data"), "--out", str(read_only / "index.npz")],
         read_only / "index.npz"),
    ]
    try:
        done = subprocess.run([*prefix, sys.executable, "-c", _DRIVER, json.dumps([argv for argv, _ in cases])],
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                              text=True, timeout=300)
    finally:
        for directory in (read_only, read_only_checkpoints):
            directory.chmod(0o755)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(results) == len(cases), done.stdout
    for (argv, named), (code, err) in zip(cases, results):
        line = _one_error_line(err, argv[0])
        assert code == 2 and str(named) in line and ".tmp" not in line, line
    assert list(read_only.iterdir()) == [] and list(read_only_checkpoints.iterdir()) == []
