"""TensorBoard scalars of a training run, written by tensorboardX (optional: ``pip install -e ".[tb]"``).

Where it sits: train -> **logs**. ``metrics.jsonl`` is the run's record and is
always written; this module copies its numbers into TensorBoard event files
(training/train.py's ``MetricsLog``). Without tensorboardX, :func:`open_event_writer`
returns None, logs one INFO line, and training runs as before.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["EventWriter", "open_event_writer"]

logger = logging.getLogger("genrec.train")

# Seconds between flushes of tensorboardX's writer thread (its default, 120 s, leaves
# TensorBoard minutes behind a run); close() and interpreter exit flush too.
FLUSH_SECS = 10

# Distinguishes the files of writers opened by one process within the same second
# (tensorboardX names files by the second and the host only).
_file_counter = itertools.count()


class EventWriter:
    """Appends scalar summaries to a new ``events.out.tfevents.*`` file in ``logdir``.

    Each :meth:`add_scalars` is one Event whose tags are kept verbatim
    (``valid/ndcg@10``; tensorboardX's ``add_scalar`` would rename ``@`` to
    ``_``). Writes are queued to tensorboardX's writer thread and reach the
    file within ``FLUSH_SECS`` and at :meth:`close`.

    Raises:
      ImportError: tensorboardX is not installed (see :func:`open_event_writer`).
    """

    def __init__(self, logdir: str | Path):
        from tensorboardX import FileWriter
        from tensorboardX.proto.summary_pb2 import Summary

        self._summary = Summary
        self.logdir = Path(logdir)
        self._writer = FileWriter(str(self.logdir), flush_secs=FLUSH_SECS,
                                  filename_suffix=f".{os.getpid()}.{next(_file_counter)}")

    def add_scalars(self, step: int, values: Mapping[str, float], wall_time: float | None = None) -> None:
        """Writes ``values`` (tag -> number) at ``step``, stored as float32; NaN and inf are kept."""
        if not values:
            return
        summary = self._summary(value=[self._summary.Value(tag=str(tag), simple_value=float(value))
                                       for tag, value in values.items()])
        self._writer.add_summary(summary, global_step=int(step), walltime=wall_time)

    def close(self) -> None:
        """Writes what is queued and closes the file (idempotent)."""
        self._writer.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def open_event_writer(logdir: str | Path) -> EventWriter | None:
    """An :class:`EventWriter` on ``logdir``, or None (with one INFO line) when tensorboardX is not installed."""
    try:
        return EventWriter(logdir)
    except ImportError:
        logger.info("tensorboardX is not installed: TensorBoard events are off (pip install -e \".[tb]\"); "
                    "metrics.jsonl has every number")
        return None
