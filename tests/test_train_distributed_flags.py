"""genrec train's multi-host options: --coordinator / --num-processes / --process-id without --distributed
are refused (they used to be ignored: the run trained as one process), and --distributed where no cluster
is detected and no address given is one line naming what is missing, not JAX's traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from logging_state import kept_logging

from training.train import main

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "tpu_configs" / "cpu_smoke.py")


@pytest.mark.parametrize("flags", [
    ["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "0"],
    ["--process-id", "1"],
])
def test_cluster_options_without_distributed_are_refused(tmp_path, flags, capsys):
    with kept_logging():
        assert main(["--config", SMOKE, "--workdir", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--distributed" in err and flags[0] in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, named", [
    (["--num-processes", "2", "--process-id", "2"], "--process-id 2"),
    (["--num-processes", "0"], "--num-processes 0"),
])
def test_impossible_process_numbers_are_refused(tmp_path, flags, named, capsys):
    with kept_logging():
        assert main(["--config", SMOKE, "--workdir", str(tmp_path / "run"), "--distributed",
                     "--coordinator", "localhost:1234", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err, err


def test_distributed_without_a_cluster_is_one_line(tmp_path):
    # A fresh process: jax.distributed.initialize must not run in the test process.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("JAX_COORDINATOR", "SLURM_", "OMPI_", "GENREC_DISTRIBUTED", "TPU_"))}
    done = subprocess.run([sys.executable, "-m", "training.train", "--config", SMOKE, "--workdir",
                           str(tmp_path / "run"), "--distributed"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "--coordinator" in done.stderr and "Traceback" not in done.stderr, \
        done.stderr
    assert not (tmp_path / "run").exists()
