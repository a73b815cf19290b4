"""Exclusive locks on a working directory (a training workdir, a batch job's
output directory), so two processes never write into one.

Two ``genrec train`` runs on one workdir would overwrite each other's
checkpoints and interleave metrics, both exiting 0. The lock is an advisory
``fcntl.flock`` on ``<dir>/.genrec.lock``: the kernel drops it when its holder
exits, however it exits (kill -9 included), so a stale lock never blocks a
resume. The file holds the holder's pid and purpose, for the error message.

The holder removes the file when it releases the lock (one a kill -9 left
behind goes with the next holder). Removing it opens a race, closed here: a
process that opened the file before it was removed can lock it after, a file
no other process can open any more; so a process that got the lock checks
that the path still names the file it locked (device and inode), and
otherwise opens the path again. The holder removes the file while it still
holds the lock, so the path never names a file that two processes hold.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from genrec.console import LOCK_FILE, UserError


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
        while True:  # again only when the file opened was removed meanwhile (a holder released it)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown process"
                current = self._names(fd)
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if not current:  # a removed file, locked for a moment by another process that opened it
                    continue
                pid, _, purpose = holder.partition(" ")
                raise DirectoryInUseError(
                    f"{self.directory} is in use by process {pid} ({purpose or 'genrec'}); "
                    f"wait for it to end or stop it, or use another directory"
                ) from None
            if self._names(fd):
                break
            os.close(fd)  # the lock of a removed file guards nothing: drop it, open the path's file
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.purpose}\n".encode(), 0)
        self._fd = fd
        return self

    def _names(self, fd: int) -> bool:
        """Whether the lock file's path names the file open as ``fd`` (not removed or replaced since)."""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        """Removes the lock file, then drops the lock: a process that opened the file before and locks it
        after finds it removed and opens the path again (:meth:`acquire`)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._names(fd):  # not a file another process made after this one's was removed by hand
                # A directory made read-only under the holder: the file stays as a stale lock (the next
                # run takes it), and the holder's own error, not this one, is what the user sees.
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
