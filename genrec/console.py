"""What a genrec command shows in a terminal: its own progress lines, not the
libraries' INFO chatter; a user's mistake as one line, not a traceback.

Every ``genrec`` subcommand (serving/cli.py) runs through :func:`run_command`
after :func:`setup_logging`, as do the ``python -m`` mains of
training/train.py, genrec/rqkmeans.py and genrec/synthetic.py. ``--verbose``
brings back the libraries' INFO logs and the tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import linecache
import logging
import os
import select
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["UserError", "Diverged", "setup_logging", "user_error_message", "run_command", "add_verbose_flag",
           "int_at_least", "seed_integer", "MAX_SEED", "print_interrupted", "interrupted_message", "command_argv",
           "INTERRUPTED_EXIT_CODE", "BROKEN_PIPE_EXIT_CODE", "OWN_LOGGERS", "LIBRARY_LOGGERS"]

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


class _BeamRootWarnings(logging.Filter):
    """Drops what Apache Beam logs below ERROR through the root logger rather than its own: notes on
    optional pieces it lacks ("apitools not found", "Resource module is not available ...", twice a job),
    not the job's business; ``--verbose`` shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno < logging.ERROR and f"{os.sep}apache_beam{os.sep}" in record.pathname)


class _StdoutHandler(logging.StreamHandler):
    """Log lines on stdout; where stdout's reader has gone (``genrec train | head``), the BrokenPipeError of
    the main thread propagates to :func:`run_command`, which stops the command quietly (logging printed a
    ``--- Logging error ---`` traceback for each line); other threads' lines are dropped."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, BrokenPipeError):
            if threading.current_thread() is threading.main_thread():
                raise error
            return
        super().handleError(record)


def setup_logging(verbose: bool = False) -> None:
    """genrec's own log lines at INFO on stdout; other libraries' only from WARNING up, unless ``verbose``."""
    library_level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=library_level, format=LOG_FORMAT, handlers=[_StdoutHandler(sys.stdout)], force=True)
    root = logging.getLogger()
    for old in [f for f in root.filters if isinstance(f, _BeamRootWarnings)]:
        root.removeFilter(old)
    if not verbose:
        root.addFilter(_BeamRootWarnings())  # a logger's filters see only records logged to it: root's own
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
BROKEN_PIPE_EXIT_CODE = 141  # what a shell reports for a process ended by SIGPIPE (128 + 13)
TERMINATED_EXIT_CODE = 143  # what a shell reports for a process ended by SIGTERM (128 + 15)


class _Terminated(BaseException):
    """SIGTERM under ``run_command(..., stop_on_sigterm=True)``: a BaseException, so that no
    ``except Exception`` of the command swallows it, as KeyboardInterrupt is one."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reader has closed it (poll's POLLERR on its descriptor); True
    where that cannot be asked (no poll), False where stdout has no descriptor."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _discard_stdout() -> None:
    """Points stdout's file descriptor at os.devnull, so that what is still buffered for a reader that has gone
    (and the interpreter's flush at exit) is dropped, not a second BrokenPipeError (the recipe of the Python
    docs, "Note on SIGPIPE"). Nothing to do where stdout has no descriptor (a test's capture)."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


# The argv of the genrec command running now (serving/cli.py main sets it); None: sys.argv[1:].
_command_argv: list[str] | None = None


@contextlib.contextmanager
def command_argv(argv: Sequence[str]) -> Iterator[None]:
    """While open, :func:`print_interrupted` reads the command's flags from ``argv`` (not ``sys.argv``)."""
    global _command_argv
    previous, _command_argv = _command_argv, list(argv)
    try:
        yield
    finally:
        _command_argv = previous


def _flag_values(argv: Sequence[str], flag: str) -> list[str | None]:
    """Each use of ``flag`` in ``argv`` (an argparse abbreviation too, ``--flag=VALUE`` too), before any ``--``:
    its value (the next argument, or after ``=``), or None at the end."""
    values: list[str | None] = []
    for position, argument in enumerate(argv):
        if argument == "--":
            break
        name, equals, value = argument.partition("=")
        if name.startswith("--") and len(name) > 2 and flag.startswith(name):
            values.append(value if equals else (argv[position + 1] if position + 1 < len(argv) else None))
    return values


def interrupted_message(prog: str, argv: Sequence[str]) -> str:
    """What a command stopped by Ctrl-C says: whether and how rerunning resumes depends on the command and its
    flags (``argv``): train, rl, demo and recommend (local runner) resume from their outputs; with
    ``--no-resume`` / ``--fresh`` the same command would start over; recommend's beam runner does not resume
    (it refuses a non-empty --out); the others have nothing to resume."""
    last = prog.split()[-1] if prog.split() else ""  # "genrec train", or "python -m training.train"
    command = {"training.train": "train", "training.rl": "rl", "serving.batch_job": "recommend"}.get(last, last)
    stopped = f"{prog}: interrupted (Ctrl-C)"
    if command in ("train", "rl", "demo"):
        flag = "--fresh" if command == "demo" else "--no-resume"
        if _flag_values(argv, flag):
            return f"{stopped}; to resume, run the command again without {flag} (with it, it starts over)"
        return f"{stopped}; run the same command again to resume"
    if command == "recommend":
        runners = _flag_values(argv, "--runner")
        if runners and runners[-1] == "beam":
            return (f"{stopped}; the beam runner does not resume: remove the partial --out directory "
                    "or give another --out, then run again")
        return f"{stopped}; run the same command again to resume"
    return stopped


def print_interrupted(prog: str, argv: Sequence[str] | None = None) -> None:
    """The one line a command stopped by Ctrl-C prints on stderr (its outputs are kept): see
    :func:`interrupted_message`; ``argv`` defaults to the running genrec command's (:func:`command_argv`)."""
    if argv is None:
        argv = _command_argv if _command_argv is not None else sys.argv[1:]
    print(interrupted_message(prog, argv), file=sys.stderr, flush=True)


def run_command(
    prog: str,
    body: Callable[[], int],
    *,
    outputs: Sequence[str | os.PathLike | None] = (),
    verbose: bool = False,
    keep_outputs: Callable[[], bool] | None = None,
    resumable_markers: Sequence[str] = (),
    stop_on_sigterm: bool = False,
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
      resumable_markers: file names (e.g. a batch job's ``manifest.json``) whose presence anywhere under
        a created output directory keeps it, as a lock file (``.genrec.lock``) does: another process made
        the directory after this one started and works there, or this job wrote resumable output before
        its error (a full disk). Only a directory holding neither is removed.
      stop_on_sigterm: SIGTERM (a scheduler stopping the job) stops the command as Ctrl-C does, in
        the main thread: one line, exit status 143, outputs kept (commands that resume from what they
        wrote; training has its own handler, which checkpoints first). The previous handler is put back.

    A :class:`Diverged` run prints its message as one line and returns 1,
    outputs kept (the metrics show the divergence).
    Ctrl-C (``KeyboardInterrupt``) prints one line (:func:`print_interrupted`:
    how to resume, if the command and its flags can) and returns 130, outputs
    kept (a resumable command continues from them); with ``verbose`` its
    traceback shows.
    Output piped to a reader that has gone (``genrec build-sids ... | head``,
    a ``BrokenPipeError`` while stdout's reader is gone): the command stops quietly, stdout pointed at
    os.devnull, and returns 141 (128 + SIGPIPE, as a shell tool ends), outputs
    kept.
    Bugs (any other exception) propagate with their traceback, outputs kept.
    """
    created = {missing for missing in map(_first_missing, filter(None, outputs)) if missing is not None}
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated) if stop_on_sigterm else None
    try:
        status = body()
        sys.stdout.flush()  # a reader that has gone shows here, not at the interpreter's exit
        return status
    except _Terminated:
        if verbose:
            raise
        print(f"{prog}: stopped by SIGTERM; run the same command again to resume", file=sys.stderr)
        return TERMINATED_EXIT_CODE
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # another pipe (a bug): its traceback shows
        _discard_stdout()
        return BROKEN_PIPE_EXIT_CODE
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
                    if not _holds_a_job(path, (LOCK_FILE, *resumable_markers)):
                        shutil.rmtree(path, ignore_errors=True)
                elif os.path.lexists(path):
                    path.unlink()
        if verbose:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    finally:
        if stop_on_sigterm:
            signal.signal(signal.SIGTERM, previous_sigterm)


LOCK_FILE = ".genrec.lock"  # genrec.locks.DirectoryLock's file in a directory it locks


def _holds_a_job(directory: Path, markers: Sequence[str]) -> bool:
    """Whether any of ``markers`` (file names) is somewhere under ``directory``."""
    return any(next(directory.rglob(name), None) is not None for name in markers)


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


MAX_SEED = 2**32 - 1  # seeds are 32-bit unsigned integers: NumPy refuses negative ones, JAX's keys larger ones


def seed_integer(text: str) -> int:
    """An argparse ``type`` for every ``--seed``: an integer from 0 to :data:`MAX_SEED`, else the usage
    error ``argument --seed: must be an integer from 0 to 4294967295, got TEXT`` (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, got {text}")
    return value
