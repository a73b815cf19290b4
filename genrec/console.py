"""What a genrec command shows in a terminal: its own progress lines, not the
libraries' INFO chatter; a user's mistake as one line, not a traceback.

Every ``genrec`` subcommand (serving/cli.py) runs through :func:`run_command`
after :func:`setup_logging`, as do the ``python -m`` mains of
training/train.py, genrec/rqkmeans.py and genrec/synthetic.py. ``--verbose``
brings back the libraries' INFO logs and the tracebacks.
"""

from __future__ import annotations

import argparse
import linecache
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["UserError", "Diverged", "setup_logging", "user_error_message", "run_command", "add_verbose_flag",
           "int_at_least", "print_interrupted", "INTERRUPTED_EXIT_CODE", "OWN_LOGGERS", "LIBRARY_LOGGERS"]

# Top-level packages of this repository: their loggers print progress, their input checks are user errors.
OWN_LOGGERS = ("genrec", "training", "serving", "constrained")
# Libraries that log at INFO on every run (Orbax through absl: ~200 lines per training run; JAX: backends it
# could not start, e.g. "Unable to initialize backend 'tpu'" where libtpu is missing).
LIBRARY_LOGGERS = ("absl", "jax", "jaxlib", "orbax", "tensorstore", "flax", "optax", "etils", "chex")
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"
_PACKAGE_DIRS = tuple(str(Path(__file__).resolve().parents[1] / name) + os.sep for name in OWN_LOGGERS)


class UserError(Exception):
    """A mistake in a command's input (a path, a file's content, a setting): the
    message names the file or item and the fix, and the command prints it as one line."""


class Diverged(FloatingPointError):
    """A run whose loss or weights became non-finite (a learning rate too high, bad data): the message
    names the step and the fix. The command prints it as one line and exits 1, keeping the run's
    workdir for inspection (its checkpoints predate the divergence; a resume with the same settings would
    diverge again, and a resume refuses other ones)."""


def setup_logging(verbose: bool = False) -> None:
    """genrec's own log lines at INFO on stdout; other libraries' only from WARNING up, unless ``verbose``."""
    library_level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=library_level, format=LOG_FORMAT, stream=sys.stdout, force=True)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)


def _raised_by_genrec(error: BaseException) -> bool:
    """Whether a ``raise`` statement in this repository's packages raised ``error`` (its input checks);
    a KeyError of a dict look-up or a ValueError inside NumPy is a bug, not a message for the user."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = os.path.realpath(tb.tb_frame.f_code.co_filename)
    return filename.startswith(_PACKAGE_DIRS) and linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def user_error_message(error: BaseException) -> str | None:
    """The one-line message of a user's mistake, or None for a bug (whose traceback should show).

    User mistakes: a :class:`UserError`; an ``OSError`` about a named file
    (missing, unreadable, a directory); a ``ValueError``, ``KeyError`` or
    ``OSError`` that genrec's own input checks raised (their messages name the
    file or item and the fix). Lines of a multi-line message are joined.
    """
    if isinstance(error, UserError):
        message = str(error)
    elif isinstance(error, FileExistsError) and error.filename is not None and not os.path.isdir(error.filename):
        message = f"{error.filename}: is a file, not a directory; choose another path"
    elif isinstance(error, PermissionError) and error.filename is not None:
        message = f"{error.filename}: permission denied; choose another path or change its permissions"
    elif isinstance(error, OSError) and error.filename is not None:
        message = f"{error.filename}: {error.strerror or error}"
    elif isinstance(error, (ValueError, KeyError, OSError)) and error.args and _raised_by_genrec(error):
        message = str(error.args[0]) if isinstance(error, KeyError) else str(error)
    else:
        return None
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return None
    return lines[0] + (" " + ", ".join(lines[1:]) if len(lines) > 1 else "")


def _first_missing(path: str | os.PathLike) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist (what writing ``path`` creates), or None."""
    missing = None
    for candidate in (Path(path).absolute(), *Path(path).absolute().parents):
        if os.path.lexists(candidate):
            return missing
        missing = candidate
    return missing


INTERRUPTED_EXIT_CODE = 130  # what a shell reports for a process ended by SIGINT (128 + 2)


def print_interrupted(prog: str) -> None:
    """The one line a command stopped by Ctrl-C prints on stderr (its outputs are kept)."""
    print(f"{prog}: interrupted (Ctrl-C); run the same command again to resume", file=sys.stderr, flush=True)


def run_command(
    prog: str,
    body: Callable[[], int],
    *,
    outputs: Sequence[str | os.PathLike | None] = (),
    verbose: bool = False,
    keep_outputs: Callable[[], bool] | None = None,
) -> int:
    """Runs a command's ``body`` and returns its exit status; a user's mistake
    becomes ``PROG: error: MESSAGE`` (one line on stderr) and exit status 2.

    Args:
      prog: the command's name, e.g. ``"genrec train"``.
      body: does the work; returns the exit status.
      outputs: files or directories the command writes (None entries are
        skipped). After a user's mistake, each one that did not exist before,
        with the parent directories made for it, is removed again: a failed
        command leaves nothing behind, and never removes what was there.
      verbose: a user's mistake also shows its traceback (after the clean-up).
      keep_outputs: after a user's mistake, keep the outputs if this says so
        (a training run that committed a checkpoint resumes from it).

    A :class:`Diverged` run prints its message as one line and returns 1,
    outputs kept (the metrics show the divergence).
    Ctrl-C (``KeyboardInterrupt``) prints one line and returns 130, outputs
    kept (a resumable command continues from them); with ``verbose`` its
    traceback shows.
    Bugs (any other exception) propagate with their traceback, outputs kept.
    """
    created = {missing for missing in map(_first_missing, filter(None, outputs)) if missing is not None}
    try:
        return body()
    except KeyboardInterrupt:
        if verbose:
            raise
        print_interrupted(prog)
        return INTERRUPTED_EXIT_CODE
    except Diverged as error:
        if verbose:
            raise
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except Exception as error:
        message = user_error_message(error)
        if message is None:
            raise
        if not (keep_outputs and keep_outputs()):
            for path in created:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.lexists(path):
                    path.unlink()
        if verbose:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """``--verbose``, the same on every genrec command."""
    parser.add_argument("--verbose", action="store_true",
                        help="also show the libraries' INFO logs (JAX, Orbax, absl) and the traceback of errors")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum``, else the usage error
    ``argument --X: must be an integer >= MINIMUM, got TEXT`` (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse
