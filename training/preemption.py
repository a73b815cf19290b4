"""Stopping a training run cleanly on SIGTERM (and on a first Ctrl-C).

Preemptible TPU VMs and spot GPU hosts, batch schedulers and ``timeout`` all
send SIGTERM before they kill a job. Without a handler the process dies at
once and the run loses everything since its last periodic checkpoint (an
epoch by default). With :class:`StopOnSignal` active, SIGTERM only sets a
flag; the train loop checks it after every step, saves a checkpoint of that
step, waits for it to be committed and raises :class:`TrainingInterrupted`.
Running the same command again resumes exactly from that step. A first
Ctrl-C (SIGINT) does the same; a second one raises ``KeyboardInterrupt`` at
once, for when the step itself hangs.

After the last step's checkpoint is committed nothing is left to save, so the
final test evaluation stops at once (:meth:`StopOnSignal.stop_at_once`):
:class:`TrainingInterrupted` is raised from the handler, the command exits
143, and rerunning it (training finished) runs only the final evaluation.

Single process: the handlers are Python signal handlers, installed only when
training runs in the main thread (Python allows no other), and the previous
handlers are restored on exit. Several processes (``jax.distributed``): every
process must save at the same step, so the decision comes from JAX's
preemption sync service (``multihost_utils.reached_preemption_sync_point``),
which receives the notice on any process and picks one step for all; no
Python handler is installed there, as it would replace the service's own
(Ctrl-C then keeps Python's default, ``KeyboardInterrupt``).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils

logger = logging.getLogger(__name__)

EXIT_CODE = 128 + signal.SIGTERM  # genrec train's exit status after SIGTERM (as a shell reports a kill by it)


class TrainingInterrupted(Exception):
    """The run stopped on a signal after saving a checkpoint of step ``step``; rerun to resume.

    ``exit_code`` is what a shell reports for a process ended by that signal
    (143 for SIGTERM, 130 for SIGINT); ``genrec train`` exits with it.
    """

    def __init__(self, step: int, signum: int = signal.SIGTERM):
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}, checkpoint saved; run the same command to resume")
        self.step = step
        self.exit_code = 128 + signum


class StopOnSignal:
    """Context manager: while active, SIGTERM or a first SIGINT asks the train loop to stop
    after its current step.

    ``requested(step)`` is called once per step, with the same step on every
    process; it returns True at the step where the run should checkpoint and stop.
    """

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._previous: dict[int, object] = {}
        self.signum: int = signal.SIGTERM  # the signal that asked to stop (preemption: SIGTERM)
        self._multiprocess = False
        self._warned = False
        self._at_once_step: int | None = None

    def __enter__(self) -> StopOnSignal:
        self._multiprocess = jax.process_count() > 1
        if not self._multiprocess and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        name = signal.Signals(signum).name
        if self._at_once_step is not None:
            self.signum = signum
            self._flag.set()
            logger.warning("%s received: stopping now (the checkpoint of step %d is committed)", name,
                           self._at_once_step)
            raise TrainingInterrupted(self._at_once_step, signum)
        if self._flag.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        logger.warning("%s received: stopping after the current step with a checkpoint%s", name,
                       " (Ctrl-C again to abort at once)" if signum == signal.SIGINT else "")
        self.signum = signum
        self._flag.set()

    def stop_at_once(self, step: int) -> None:
        """From now on a signal raises :class:`TrainingInterrupted` of ``step`` at once, from the handler.

        For the time after the run's last checkpoint (step ``step``) is committed,
        when nothing is in flight that a stop could lose (the final evaluation).
        A signal that already came (during the last step or validation, which
        finish the run) raises here. Single process only: with several processes
        the preemption service decides at step boundaries, and this does nothing.
        """
        if self._multiprocess:
            return
        self._at_once_step = step
        if self._flag.is_set():
            raise TrainingInterrupted(step, self.signum)

    def requested(self, step: int) -> bool:
        """Whether to checkpoint and stop after ``step`` (a SIGTERM arrived, on any process)."""
        if not self._multiprocess:
            return self._flag.is_set()
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError as error:  # the preemption service is off in this jax.distributed setup
            if not self._warned:
                logger.warning("no preemption sync service (%s): SIGTERM will not checkpoint", error)
                self._warned = True
            return False
