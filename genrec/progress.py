"""Progress bars for long host loops (training epochs, evaluation, batch jobs).

A thin layer over tqdm: bars show rate and ETA on an interactive terminal and
are off when stderr is not a TTY (log files, CI), where the log lines of the
loop carry the progress instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """True when stderr is an interactive terminal."""
    return sys.stderr.isatty()


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 enabled: bool | None = None) -> tqdm:
    """A tqdm bar for ``total`` units; disabled (a no-op object) off a TTY or when ``enabled`` is False."""
    disable = not (progress_enabled() if enabled is None else enabled)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable, dynamic_ncols=True,
                leave=False)


def track(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
          enabled: bool | None = None) -> Iterator[T]:
    """``items`` with a progress bar around the iteration (see ``progress_bar``)."""
    with progress_bar(total=total, desc=desc, unit=unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update(1)
