"""The genrec commands configure logging for a terminal (genrec/console.py);
tests that run them in-process put it back with :func:`kept_logging`."""

import contextlib
import logging
from collections.abc import Iterator

import pytest

from genrec.console import LIBRARY_LOGGERS, OWN_LOGGERS


@contextlib.contextmanager
def kept_logging() -> Iterator[None]:
    """Restores the root logger's handlers, filters and level, and the levels of genrec's and the libraries'
    loggers."""
    root = logging.getLogger()
    handlers, filters, level = root.handlers[:], root.filters[:], root.level
    levels = {name: logging.getLogger(name).level for name in OWN_LOGGERS + LIBRARY_LOGGERS}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.filters[:] = filters
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Autouse in a test module that imports it: every test there runs inside :func:`kept_logging`."""
    with kept_logging():
        yield
