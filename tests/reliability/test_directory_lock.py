"""Fault suite: two processes on one directory; the second stops naming the first's pid."""

import os
import subprocess
import sys
import textwrap

import pytest
from logging_state import kept_logging

from genrec.locks import DirectoryInUseError, DirectoryLock

HOLD = textwrap.dedent("""
    import sys, time
    from genrec.locks import DirectoryLock
    lock = DirectoryLock(sys.argv[1], "test holder").acquire()
    print("held", flush=True)
    time.sleep(60)
""")


def test_second_holder_is_refused_with_the_first_pid_and_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryInUseError) as error:
            DirectoryLock(tmp_path, "training").acquire()
        assert f"process {holder.pid} (test holder)" in str(error.value)
        assert "\n" not in str(error.value)
    finally:
        holder.kill()  # kill -9: the kernel releases the lock
        holder.wait()
    with DirectoryLock(tmp_path, "training") as lock:
        assert lock.path.read_text().strip() == f"{os.getpid()} training"


def test_lock_is_reentrant_in_one_object_and_exclusive_between_objects(tmp_path):
    first = DirectoryLock(tmp_path / "new", "a").acquire()
    assert first.acquire() is first
    with pytest.raises(DirectoryInUseError):  # flock locks are per open file, so this conflicts
        DirectoryLock(tmp_path / "new", "b").acquire()
    first.release()
    DirectoryLock(tmp_path / "new", "b").acquire().release()


def _hold(directory):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_train_and_the_batch_job_refuse_a_directory_in_use(tmp_path, capsys):
    from serving.batch_job import run_batch_job
    from serving.cli import main
    from training.config import load_config_file
    from training.train import train

    holder = _hold(tmp_path)
    try:
        with pytest.raises(DirectoryInUseError, match=f"process {holder.pid}"):
            train(load_config_file("tpu_configs/cpu_smoke.py"), tmp_path)
        with pytest.raises(DirectoryInUseError, match=f"process {holder.pid}"):
            run_batch_job(None, None, tmp_path)  # refused before the model or the data is touched
        with kept_logging():
            assert main(["train", "--config", "tpu_configs/cpu_smoke.py", "--workdir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"in use by process {holder.pid} (test holder)" in err
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".genrec.lock"]  # nothing written while refused
