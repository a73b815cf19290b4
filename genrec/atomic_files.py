"""Atomic file writes: every file genrec writes (vocabulary, index,
checkpoints' side files, metrics, batch-job shards) goes through
:func:`atomic_open`, so a reader or a crash never sees a half-written file.
The files get the usual permissions (0666 less the umask), like any other
program's output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from pathlib import Path
from typing import IO, Any, Iterator


def _create_temp_beside(path: Path) -> tuple[int, Path]:
    """Creates a new, empty temporary file next to ``path``; returns its descriptor and path.

    Unlike ``tempfile.mkstemp`` (always 0600) the file is created with mode
    0666, which the kernel narrows by the umask (and a default ACL), as for
    ``open(path, "w")``; no process-wide umask is read or changed.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp_path = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp_path, flags, 0o666), tmp_path
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary file name for {path.name}; remove stale .*.tmp files")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on a clean exit it is flushed,
    fsync-ed and ``os.replace``-d over ``path``, on an error it is removed.

    Args:
      path: the destination; its parent directory is created.
      mode: ``"w"`` (text, UTF-8) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the whole write, naming the temporary file
        raise IsADirectoryError(errno.EISDIR, "is a directory; give a file path", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = _create_temp_beside(path)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if tmp_path.exists():
            tmp_path.unlink()
        raise


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int | None = None) -> Path:
    """Writes ``payload`` as JSON to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as f:
        json.dump(payload, f, indent=indent)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)
