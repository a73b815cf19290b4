"""Fault suite: two processes on one directory; the second stops naming the first's pid."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from logging_state import kept_logging

import genrec.locks as locks
from genrec.locks import LOCK_FILE, DirectoryInUseError, DirectoryLock

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


def test_the_lock_file_goes_with_its_holder(tmp_path):
    """Released, the lock leaves nothing in the directory (its .genrec.lock stayed in every workdir and
    output directory); a file left by a holder killed with -9 (it holds no lock) is taken over and goes too."""
    directory = tmp_path / "d"
    with DirectoryLock(directory, "a") as lock:
        assert lock.path.read_text() == f"{os.getpid()} a\n"
    assert list(directory.iterdir()) == []
    (directory / LOCK_FILE).write_text("12345 killed holder\n")
    with DirectoryLock(directory, "b") as lock:
        assert lock.path.read_text() == f"{os.getpid()} b\n"
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("meanwhile", ["first-releases", "first-releases-and-third-takes"])
def test_a_process_that_opened_the_removed_lock_file_never_shares_the_directory(tmp_path, monkeypatch, meanwhile):
    """The race that removing the file at release opens: B opens .genrec.lock, then the holder A releases
    (removing it) before B locks what it opened, a file no other process can open any more. B must not
    hold that: it takes the lock on the file the path names (a later C is refused naming B), or is refused
    naming the process D that created and locked the new file meanwhile."""
    directory = tmp_path / "d"
    first = DirectoryLock(directory, "a").acquire()
    lock_path = str(first.path)
    real_open, third = os.open, []

    def open_then_interleave(path, flags, mode=0o777, **kwargs):
        fd = real_open(path, flags, mode, **kwargs)
        if str(path) == lock_path and not third:  # B has opened the file: now A releases (and D takes it)
            third.append(None)
            first.release()
            if meanwhile == "first-releases-and-third-takes":
                third[0] = DirectoryLock(directory, "d").acquire()
        return fd

    monkeypatch.setattr(locks.os, "open", open_then_interleave)
    if meanwhile == "first-releases":
        second = DirectoryLock(directory, "b").acquire()
        monkeypatch.undo()
        assert Path(lock_path).read_text() == f"{os.getpid()} b\n"
        with pytest.raises(DirectoryInUseError, match=r"\(b\)"):
            DirectoryLock(directory, "c").acquire()
        second.release()
    else:
        with pytest.raises(DirectoryInUseError, match=r"\(d\)"):
            DirectoryLock(directory, "b").acquire()
        monkeypatch.undo()
        with pytest.raises(DirectoryInUseError, match=r"\(d\)"):
            DirectoryLock(directory, "c").acquire()
        third[0].release()
    assert list(directory.iterdir()) == []


COUNT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from genrec.locks import DirectoryInUseError, DirectoryLock
    directory, counter, done = sys.argv[1], Path(sys.argv[1]) / "counter", 0
    while done < int(sys.argv[2]):
        try:
            lock = DirectoryLock(directory, "counter").acquire()
        except DirectoryInUseError:
            time.sleep(0.0005)
            continue
        value = int(counter.read_text())
        time.sleep(0.0002)  # a read-modify-write that two holders at once would lose
        counter.write_text(str(value + 1))
        lock.release()
        done += 1
""")


def test_processes_taking_and_releasing_the_lock_never_hold_it_together(tmp_path):
    """4 processes each add 1 to a counter 100 times under the lock, which every release removes: no increment
    is lost (two holders at once would lose some), and none of them fails."""
    (tmp_path / "counter").write_text("0")
    workers = [subprocess.Popen([sys.executable, "-c", COUNT, str(tmp_path), "100"],
                                env={**os.environ, "PYTHONPATH": os.getcwd()}) for _ in range(4)]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0, 0]
    assert (tmp_path / "counter").read_text() == "400"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter"]


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


def test_a_lock_file_that_cannot_be_removed_does_not_hide_the_jobs_error(tmp_path, monkeypatch):
    """A directory made read-only under a running job: the job's PermissionError on its shard was replaced
    by release()'s on the lock file, so the one line sent the user to the lock file. The job's own error
    goes out; the lock is dropped all the same (the file left is a stale lock the next run takes)."""
    unlink = os.unlink

    def read_only(path, *args, **kwargs):
        if Path(path).name == LOCK_FILE:
            raise PermissionError(13, "Permission denied", str(path))
        return unlink(path, *args, **kwargs)

    with pytest.raises(PermissionError, match="shard-00000.jsonl"):
        with DirectoryLock(tmp_path, "genrec recommend"):
            monkeypatch.setattr(os, "unlink", read_only)
            raise PermissionError(13, "Permission denied", str(tmp_path / "shard-00000.jsonl"))
    monkeypatch.setattr(os, "unlink", unlink)
    with DirectoryLock(tmp_path, "genrec recommend"):  # not held any more
        pass
