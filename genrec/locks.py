"""Exclusive locks on a working directory (a training workdir, a batch job's
output directory), so two processes never write into one.

Two ``genrec train`` runs on one workdir would overwrite each other's
checkpoints and interleave metrics, both exiting 0. The lock is an advisory
``fcntl.flock`` on ``<dir>/.genrec.lock``: the kernel drops it when its holder
exits, however it exits (kill -9 included), so a stale lock never blocks a
resume. The file holds the holder's pid and purpose, for the error message.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from genrec.console import UserError

LOCK_FILE = ".genrec.lock"


class DirectoryInUseError(UserError):
    """Another live process holds the directory's lock (a command prints it as one line)."""


class DirectoryLock:
    """Holds ``<directory>/.genrec.lock`` from ``acquire()`` (or ``with``) to ``release()``.

    Args:
      directory: the directory to guard; created if missing.
      purpose: what the holder does there, for messages (e.g. ``"training"``).
    """

    def __init__(self, directory: str | Path, purpose: str):
        self.directory = Path(directory)
        self.purpose = purpose
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.directory / LOCK_FILE

    def acquire(self) -> "DirectoryLock":
        """Takes the lock or raises :class:`DirectoryInUseError` naming the holder's pid."""
        if self._fd is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            pid, _, purpose = holder.partition(" ")
            raise DirectoryInUseError(
                f"{self.directory} is in use by process {pid} ({purpose or 'genrec'}); "
                f"wait for it to end or stop it, or use another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.purpose}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drops the lock (the file stays: removing it would race with a new holder)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
