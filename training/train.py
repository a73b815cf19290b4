"""Trains a generative-retrieval recommender: ``genrec train --config FILE --workdir DIR``.

Reads top to bottom: config -> data -> model -> optimizer -> loop ->
evaluators -> checkpoints. One jitted step serves every loss kind
(training/train_step.py); evaluation is constrained beam search over the
catalogue trie (training/evaluate.py); checkpoints are Orbax
(training/checkpoint.py). docs/training.md describes the run end to end.

    python -m training.train --config tpu_configs/cpu_smoke.py --workdir runs/smoke \
        [--set optimizer.learning_rate=1e-3 ...] [--no-resume] [--init-from RUN]

Outputs in the workdir: ``config.json``, ``vocab.json``, ``catalogue.npz``,
``checkpoints/``, ``best/``, ``metrics.jsonl`` (one JSON record per logged
step / evaluation), ``tensorboard/`` (the same scalars as TensorBoard event
files, tags ``kind/key``, when tensorboardX is installed: training/tb_events.py),
``results.json`` (test metrics of the best checkpoint), ``test_ranks.npy``
(each test user's rank of the target in the beam, 0 = missed) and
``curves.png`` when matplotlib is installed; with ``--init-from RUN``,
``init_from.json`` (the start: RUN, its best checkpoint's step, a digest of its
parameters).

A warm start (``--init-from RUN``) begins from RUN's best checkpoint with a
fresh optimizer state and this config's schedule, and validates that start at
step 0, so the best checkpoint and early stopping include it (the CE-only
control of the RL study, docs/training.md#warm-start).

Resume is exact: a run killed at any point and restarted with the same
command continues from its newest checkpoint and reaches bit-identical
parameters (batch ``k``, dropout masks and negatives are pure functions of
``(seed, k)``; parameters, optimizer state and early-stopping counters are in
the checkpoint). SIGTERM (preemption, a scheduler, ``timeout``) does not
lose the steps since the last periodic checkpoint: the loop finishes its step,
saves it and exits with status 143 (training/preemption.py). The log window's
step metrics are in the checkpoint too, so metrics.jsonl reads as one
uninterrupted run. After the last checkpoint (the final test evaluation) a
SIGTERM stops at once, exit 143, and rerunning the command only evaluates.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import numbers
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from constrained.decode import build_eval_index
from genrec.array_digest import tree_digest
from genrec.atomic_files import atomic_open, write_json_atomic
from genrec.batching import BatchIterator
from genrec.checkpoint_checksums import CheckpointDamaged
from genrec.console import Diverged, UserError, add_verbose_flag, run_command, setup_logging
from genrec.datasets import InteractionData
from genrec.locks import DirectoryLock
from genrec.models import build_model, count_params
from genrec.progress import progress_bar
from genrec.run_files import (
    BEST_DIR,
    CATALOGUE_FILE,
    CONFIG_FILE,
    DATA_FINGERPRINT_FILE,
    PERIODIC_DIR,
    all_finite,
    check_same_data,
    checkpoint_dir,
    damaged_run_file,
    has_checkpoint,
    load_run_data,
    read_catalogue,
    read_data_fingerprint,
    restore_params,
)
from genrec.split import LeaveOneOutSplit, SplitArrays, check_training_examples, leave_one_out_split, subset_examples
from training.checkpoint import (
    Checkpointer,
    TrainingProgress,
    read_run_config,
    write_data_fingerprint,
    write_run_files,
)
from training.config import (
    VALID_CE,
    DataConfig,
    EvalConfig,
    TrainConfig,
    flat_settings,
    load_config_file,
    override_keys,
    score_normalization,
)
from training.evaluate import EvalResult, evaluate_split, popularity_baseline, validation_ce
from training.optim import make_optimizer
from training.preemption import StopOnSignal, TrainingInterrupted
from training.tb_events import EventWriter, open_event_writer
from training.train_step import (
    init_opt_state,
    make_catalogue,
    make_data_mesh,
    make_train_step,
    replicate,
    shard_batch,
)

__all__ = ["TrainResult", "check_same_start", "damaged_best_error", "end_step", "holds_checkpoint", "load_data",
           "main", "remove_run_outputs", "report_run", "resume_changes", "train", "window_from_json",
           "window_to_json"]

logger = logging.getLogger("genrec.train")

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
TEST_RANKS_FILE = "test_ranks.npy"
INIT_FROM_FILE = "init_from.json"
# genrec rl's record of its supervised start (training/rl.py): its presence marks an RL workdir.
RL_INIT_FILE = "rl_init.json"
# What --no-resume removes from a workdir (only files this module writes).
_RUN_OUTPUTS = ("checkpoints", "best", METRICS_FILE, RESULTS_FILE, CURVES_FILE, TENSORBOARD_DIR, TEST_RANKS_FILE,
                INIT_FROM_FILE)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished run reports (also in ``workdir/results.json``).

    Attributes:
      workdir: the run's directory.
      final_step: optimizer steps done.
      early_stopped: the run ended by early stopping.
      best_step: step of the best validation ``eval.selection_metric`` (ndcg@10 by default) (None without evaluation).
      best_valid_metrics: validation metrics at ``best_step``.
      test_metrics: test-split metrics of the best checkpoint (of the final
        parameters if there is none).
      popularity_test_metrics: the most-popular-SIDs baseline on the test split
        (``training.evaluate.popularity_baseline``).
    """

    workdir: Path
    final_step: int
    early_stopped: bool
    best_step: int | None
    best_valid_metrics: dict[str, float] | None
    test_metrics: dict[str, float]
    popularity_test_metrics: dict[str, float]


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def load_data(config: DataConfig) -> InteractionData:
    """The dataset of ``config``: files from ``data_dir``, or the synthetic one
    (``genrec.run_files.load_run_data``, which serving applies to config.json)."""
    return load_run_data(dataclasses.asdict(config))


# ---------------------------------------------------------------------------
# metrics.jsonl
# ---------------------------------------------------------------------------


def read_metrics_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(line, record)`` of each record of a metrics.jsonl file, in order; a torn line (a crash mid-write) or
    one that is not an object is skipped; nothing if the file is absent."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a torn last line from a crash
            continue
        if isinstance(record, dict):
            yield line, record


class MetricsLog:
    """Appends one JSON record per line to ``workdir/metrics.jsonl`` (each line one ``write``).

    On resume, records past the restored step are dropped first (atomic
    rewrite), so the file reads as one uninterrupted run.

    With ``tensorboard_dir`` and tensorboardX installed, every record's numbers also
    go to a new TensorBoard event file there (:func:`_tensorboard_scalars` names the tags).
    Event files are never rewritten: after a resume, steps that the killed run
    logged past its restored checkpoint appear in both files (TensorBoard plots
    both; metrics.jsonl stays the reference).
    """

    def __init__(self, path: Path, *, keep_up_to_step: int | None, enabled: bool = True,
                 tensorboard_dir: Path | None = None):
        self.path = path
        self.enabled = enabled
        self.events: EventWriter | None = None
        if not enabled:
            return
        kept = []
        if keep_up_to_step is not None:
            kept = [line + "\n" for line, record in read_metrics_records(path)
                    if record.get("step", 0) <= keep_up_to_step and record.get("kind") != "test"]
        with atomic_open(path, "w") as f:
            f.writelines(kept)
        if tensorboard_dir is not None:
            self.events = open_event_writer(tensorboard_dir)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = (json.dumps(record) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        if self.events is not None:
            self.events.add_scalars(record["step"], _tensorboard_scalars(record))

    def close(self) -> None:
        """Closes the event file, writing its queued scalars (metrics.jsonl lines are written at once)."""
        if self.events is not None:
            self.events.close()

    def records(self) -> list[dict[str, Any]]:
        """The file's records, in order, through :func:`read_metrics_records` (a torn last line is skipped)."""
        return [record for _, record in read_metrics_records(self.path)]


# What decides which checkpoint is best: a change across a resume makes the
# validation scores before and after it incomparable.
SELECTION_FIELDS = ("num_beams", "max_examples", "subset", "ks", "selection_metric", "score_normalization")


# Settings a resumed run may change: they cannot change what the run computes
# (logging, evaluation batching, checkpoint housekeeping), or they are checked
# apart (eval.*: a warning, see validation_changes; the run's length: only longer). rl.* is genrec rl's.
RESUMABLE_CHANGES = ("log_every", "checkpoint.async_save", "checkpoint.keep", "checkpoint.every_steps",
                     "num_steps", "num_epochs", "early_stopping_patience")


def _total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The run's length in optimizer steps: ``num_steps``, else ``num_epochs`` epochs."""
    return config.num_steps or config.num_epochs * steps_per_epoch


def check_resume_changes(saved: TrainConfig, current: TrainConfig, steps_per_epoch: int,
                         source: Path) -> dict[str, tuple[Any, Any]]:
    """The settings ``current`` changes from the ``saved`` run's, ``{key: (old, new)}``, if resuming may.

    Raises:
      ValueError: a change that would alter what the run computes (batch size,
        learning rate, loss, seed, data, model, ...), or a shorter run; the
        message lists the keys.
    """
    return resume_changes(
        saved, current, lambda key: key in RESUMABLE_CHANGES or key.startswith(("eval.", "rl.")),
        _total_steps(saved, steps_per_epoch), _total_steps(current, steps_per_epoch), source)


def resume_changes(saved: TrainConfig, current: TrainConfig, may_change: Callable[[str], bool],
                   saved_steps: int, current_steps: int, source: Path) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` of the settings ``current`` changes, if each key passes ``may_change`` and the
    run (``saved_steps`` long before, ``current_steps`` now) does not get shorter (genrec train and genrec rl).

    Raises:
      ValueError: a refused change (the message lists the keys) or a shorter run.
    """
    old, new = saved_settings(saved, current), flat_settings(current)
    changes = {key: (old[key], new[key]) for key in old if old[key] != new.get(key)}
    refused = [key for key in changes if not may_change(key)]
    if refused:
        listed = describe_changes({key: changes[key] for key in refused})
        raise ValueError(f"{source}: resuming would change {listed}; a resumed run keeps its settings: "
                         "use the run's settings, another --workdir, or --no-resume")
    if current_steps < saved_steps:
        raise ValueError(f"{source}: resuming would shorten the run from {saved_steps} to "
                         f"{current_steps} steps; a resumed run may only get longer")
    return changes


def check_resumed_data(workdir: Path, data: InteractionData) -> None:
    """Refuses to resume ``workdir``'s run on other interactions than it started on (its
    ``data_fingerprint.json``; a workdir written before genrec recorded it is not checked: genrec train and rl).

    Raises:
      ValueError: one line naming the record, both datasets' sizes, and the fix.
    """
    record = read_data_fingerprint(workdir)
    if record is None:
        logger.info("%s: no %s (an older genrec wrote it): the data is not checked against the run's",
                    workdir, DATA_FINGERPRINT_FILE)
    check_same_data(record, data, f"{workdir / DATA_FINGERPRINT_FILE}: this run started on",
                    "a resumed run keeps its data: restore the data files, or use another --workdir or --no-resume")


def absolute_data_dir(config: TrainConfig) -> TrainConfig:
    """``config`` with ``data.data_dir`` made absolute (against the current directory), as a run records it in
    config.json: genrec eval and serving then read the same data from any directory."""
    if config.data.data_dir is None:
        return config
    data_dir = os.path.abspath(os.path.expanduser(config.data.data_dir))  # "~/x" is the user's, as in a shell
    if data_dir == config.data.data_dir:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir=data_dir))


def saved_settings(saved: TrainConfig, current: TrainConfig) -> dict[str, Any]:
    """:func:`training.config.flat_settings` of a workdir's ``saved`` config, for comparing with ``current``:
    a ``data.data_dir`` that names the same directory as ``current``'s (a relative path recorded before
    runs recorded absolute ones, resolved against the current directory) counts as ``current``'s spelling, and
    so does one that does not exist here (the checkout or workdir moved to another path or machine): the data
    itself is checked by its fingerprint (data_fingerprint.json) where the run recorded one."""
    old = flat_settings(saved)
    before, now = saved.data.data_dir, current.data.data_dir
    if before is not None and now is not None and before != now and (
            _same_directory(before, now) or not os.path.isdir(before)):
        old["data.data_dir"] = now
    # A model override left None (the preset's value) and one set to the preset's own value are one model.
    if saved.model.preset == current.model.preset and saved.model.arch == current.model.arch:
        new = flat_settings(current)
        for key in [key for key in old if key.startswith("model.") and old[key] != new.get(key)]:
            spelled, other = (new[key], old[key]) if old[key] is None else (old[key], new[key])
            if other is None and spelled == _preset_value(current.model, key.removeprefix("model.")):
                old[key] = new[key]
    return old


def _preset_value(spec: Any, field: str) -> Any:
    """The value ``spec``'s preset gives ``ModelConfig.<field>`` (a placeholder when it has none)."""
    preset = dataclasses.replace(spec, **{f.name: None for f in dataclasses.fields(spec)
                                          if f.name not in ("preset", "arch", "dtype")})
    try:
        return getattr(preset.build(vocab_size=64, num_levels=3, max_history=1), field)
    except (AttributeError, ValueError):
        return object()  # equal to nothing


def _same_directory(a: str, b: str) -> bool:
    """Whether two spellings of a path name one directory (equal absolute paths, or the same existing one)."""
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """``"key old -> new, ..."`` of ``{key: (old, new)}``, for one-line errors."""
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())


def remove_run_outputs(workdir: Path, names: Sequence[str]) -> None:
    """Deletes the files and folders ``names`` of ``workdir`` that exist (``--no-resume``)."""
    for name in names:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def validation_changes(saved: EvalConfig, current: EvalConfig) -> list[str]:
    """``"eval.field: old -> new"`` for each checkpoint-selection setting that differs
    (``subset`` only where a subset is taken, i.e. ``max_examples`` is set)."""
    def setting(config: EvalConfig, name: str) -> Any:
        return None if name == "subset" and config.max_examples is None else getattr(config, name)

    return [f"eval.{name}: {setting(saved, name)!r} -> {setting(current, name)!r}"
            for name in SELECTION_FIELDS if setting(saved, name) != setting(current, name)]


def _tensorboard_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of a metrics.jsonl record: ``kind/key``, and ``kind/key/i`` (from 1) for lists.

    ``prefix_losses/1`` is the loss of the length-1 prefix. Booleans, strings
    and None (NaN in a list) are skipped; NaN and inf numbers are kept.
    """
    scalars: dict[str, float] = {}

    def add(tag: str, value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for i, element in enumerate(value, start=1):
                add(f"{tag}/{i}", element)
        elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            scalars[tag] = float(value)

    for key, value in record.items():
        if key not in ("step", "kind"):
            add(f"{record['kind']}/{key}", value)
    return scalars


def _to_json_value(value: Any) -> Any:
    """A scalar or (nested) list for JSON; NaN becomes None (null)."""
    array = np.asarray(value, np.float64)
    as_list = np.where(np.isnan(array), None, array).tolist()
    return as_list


# ---------------------------------------------------------------------------
# Warm start (--init-from)
# ---------------------------------------------------------------------------


def _check_warm_start_source(config: TrainConfig, init_from: Path, workdir: Path) -> None:
    """Refuses, in one line, a source that is no workdir, is ``workdir`` itself, has another model or data, or
    has no best checkpoint (a warm start begins from it; genrec train has no setting for another one)."""
    if not (init_from / CONFIG_FILE).exists():
        raise UserError(f"--init-from {init_from}: not a genrec workdir (no {CONFIG_FILE}); give the --workdir "
                        "of a genrec train run")
    if init_from.resolve() == workdir.resolve():
        raise UserError(f"--init-from {init_from} is --workdir itself; a warm start writes a new --workdir")
    changes = model_or_data_changes(init_from, config)
    if changes:
        raise UserError(f"{init_from / CONFIG_FILE}: this config changes the run's {describe_changes(changes)}; "
                        f"a warm start continues that run's model on its data: {use_its_config(changes)}")
    if not has_checkpoint(init_from, "best"):
        raise UserError(f"--init-from {init_from}: no best checkpoint in {checkpoint_dir(init_from, 'best')} (no "
                        "validation evaluation ran: "
                        "eval_every=0, or training stopped before the first one); a warm start begins from a best "
                        "checkpoint: start from a run that has one")


# ModelSpec's Hugging Face T5 options, which a T5 run config sets together with its ``model=`` argument.
_HF_T5_SETTINGS = ("model.attention_dropout", "model.ffn_dropout", "model.attention_logit_scale", "model.init")


def use_its_config(changes: dict[str, tuple[Any, Any]]) -> str:
    """The advice that ends a refused warm start or RL run (``changes``: :func:`model_or_data_changes`); names
    the ``model=`` argument where the run differs only in a T5 config's numerics (both T5 bases' default
    became ``model=hf``, docs/results.md)."""
    if changes and all(key in _HF_T5_SETTINGS for key in changes):
        return "use its config file with the model= it trained with (tpu_configs T5 bases: model=hf or model=default)"
    return "use its config file"


def model_or_data_changes(source: Path, config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` of the ``data.*`` / ``model.*`` settings of ``config`` that differ from the run in
    ``source`` (empty when none): what a run continuing another's model (a warm start, RL) may not change."""
    saved, _ = read_run_config(source)
    old, new = saved_settings(saved, config), flat_settings(config)
    return {key: (old.get(key), new[key]) for key in new
            if key.startswith(("data.", "model.")) and old.get(key) != new[key]}


def load_start(source: Path, params: nnx.State, data: InteractionData, which: Literal["best", "latest"] = "best",
               *, damaged_fix: str = "train that run again, or start from another") -> tuple[nnx.State, dict[str, Any]]:
    """The parameters of ``source``'s ``which`` checkpoint (in the structure of ``params``) and the record of
    the start (``init_from.json`` of a warm start, ``rl_init.json`` of RL): workdir, checkpoint, step, digest.

    Args:
      source: a genrec train workdir with the same model and data (checked by
        :func:`model_or_data_changes`).
      params: this run's freshly initialised ``nnx.Param`` state.
      data: this run's dataset: its catalogue must be the source's, and its interactions those the source
        started on (where the source recorded them: ``data_fingerprint.json``).
      which: the checkpoint to start from.
      damaged_fix: what the one line says to do when that checkpoint is damaged, in the command's options
        (genrec rl can start from the other checkpoint; a warm start only from the best one).

    Raises:
      UserError: another catalogue, no such checkpoint, a damaged one, or non-finite weights (one line).
      ValueError: the source run started on other interactions (one line).
    """
    saved_codes, _ = read_catalogue(source)
    if not np.array_equal(saved_codes, data.sid_codes):
        raise UserError(f"{source}: its catalogue differs from the data of this config; use the run's config")
    check_same_data(read_data_fingerprint(source), data, f"{source}: that run trained on",
                    "a run continuing its model must train on its data: restore the data files, or train the "
                    "start again on these")
    try:
        params, step = restore_params(source, params, which)
    except FileNotFoundError as error:  # restore_params's message suggests which='latest', no command's option
        raise UserError(f"--init-from {source}: no {which} checkpoint in {checkpoint_dir(source, which)}; start "
                        "from a run that has one") from error
    except CheckpointDamaged as damaged:  # its message names genrec eval's --which, no option of these commands
        raise UserError(f"--init-from {source}: its {which} checkpoint (step {damaged.step}) is damaged "
                        f"({damaged.reason}); {damaged_fix}") from damaged
    if not all_finite(params):
        raise UserError(f"{source}: its {which} checkpoint (step {step}) holds non-finite weights; start from a "
                        "sound run")
    return params, {"workdir": str(source.resolve()), "checkpoint": which, "step": int(step),
                    "params": tree_digest(nnx.to_pure_dict(params))}


def _read_init_from(path: Path) -> dict[str, Any] | None:
    """A workdir's ``init_from.json`` (None when the run started from scratch); a damaged one is one line."""
    return read_start_record(path, "a warm start") if path.exists() else None


def read_start_record(path: Path, what: str) -> dict[str, Any]:
    """The record of the run a workdir started from (``init_from.json``, RL's ``rl_init.json``): workdir,
    checkpoint, step and params digest; a damaged one is one line naming it and ``what`` it records."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise damaged_run_file(path, f"not JSON ({error})") from error
    if not isinstance(record, dict) or not {"workdir", "checkpoint", "step", "params"} <= record.keys():
        raise damaged_run_file(path, f"not the record of {what} (workdir, checkpoint, step, params)")
    return record


def _start_name(record: dict[str, Any] | None) -> str:
    """How an error names a run's start: ``scratch`` or ``RUN (best step S, params DIGEST...)``."""
    if record is None:
        return "scratch (no --init-from)"
    return f"{record['workdir']} ({record['checkpoint']} step {record['step']}, params {record['params'][:19]})"


# What a start is (init_from.json, rl_init.json): its checkpoint, step and weights' digest; its workdir is only
# where it lies now.
_START_IDENTITY = ("checkpoint", "step", "params")


def check_same_start(saved: dict[str, Any] | None, current: dict[str, Any] | None, *, where: Path, fix: str,
                     log: logging.Logger = logger) -> None:
    """Refuses to resume a run from another start than the one it recorded (genrec train's warm start, genrec rl).

    The start is its checkpoint, step and weights' digest, wherever its workdir now is: a moved one is accepted
    (as a moved data directory is, by its fingerprint) with one INFO line to ``log`` (the command's logger), and
    the caller records its new place.

    Args:
      saved: the run's record of its start (:func:`read_start_record`); None for a run from scratch.
      current: :func:`load_start`'s record of the start given now; None for none.
      where: what the error names (the workdir, or its record file).
      fix: what the error ends with, in the command's options.

    Raises:
      UserError: another start (one line naming both).
    """
    if (saved is None) != (current is None) or (
            saved is not None and any(saved[key] != current[key] for key in _START_IDENTITY)):
        raise UserError(f"{where}: this run started from {_start_name(saved)}, not from {_start_name(current)}; "
                        f"{fix}")
    if saved is not None and saved["workdir"] != current["workdir"]:
        log.info("the start moved from %s to %s (the same %s checkpoint, step %d, params %s): resuming from it "
                 "there", saved["workdir"], current["workdir"], current["checkpoint"], current["step"],
                 current["params"][:19])


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def train(
    config: TrainConfig,
    workdir: str | Path,
    *,
    resume: bool = True,
    on_step_end: Callable[[int], None] | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Trains ``config`` in ``workdir`` (see the module docstring), resuming by default.

    Args:
      config: the run.
      workdir: output directory (created).
      resume: continue from the newest checkpoint in ``workdir`` if any;
        False deletes the previous run's checkpoints, metrics and results there,
        once every check that can refuse the run has passed (a refused run leaves them).
      init_from: a genrec train workdir with this config's model and data: a
        fresh run starts from its best checkpoint's parameters (fresh optimizer
        state, this config's schedule) and validates that start at step 0. A
        resumed run continues from its own checkpoint; it must name the start it
        recorded in ``init_from.json`` (None for a run started from scratch), or that
        start moved elsewhere (the same checkpoint, step and weights: :func:`check_same_start`).
      on_step_end: called with the step number at the end of every training
        step, once that step's checkpoint (if one was due) is committed, so
        the hook may even end the process (the kill-and-resume tests do).

    Returns:
      The :class:`TrainResult`.

    Raises:
      UserError: ``init_from`` is no workdir, is ``workdir``, has another model,
        data or catalogue, no best checkpoint or non-finite weights; or a resume
        names another start than the run's.
      genrec.locks.DirectoryInUseError: another process is training in ``workdir``.
      TrainingInterrupted: SIGTERM (or a first Ctrl-C) arrived; the step it stopped at is
        checkpointed and calling ``train`` again (``resume=True``) continues (after the
        last step: it stopped at once, and calling again runs the final evaluation).
      Diverged (a FloatingPointError): the weights or every loss of a log window became
        non-finite, or ``optimizer.max_consecutive_nonfinite`` steps in a row had non-finite
        gradients; nothing of the diverged steps is saved.
    """
    workdir = Path(workdir)
    if (workdir / RL_INIT_FILE).exists():  # its checkpoints hold RL state: never resume (they read as damaged) or wipe
        raise UserError(f"--workdir {workdir} holds a genrec rl run ({RL_INIT_FILE} is there); resume it with genrec "
                        "rl (the same --config, --init-from and --workdir), or use another --workdir")
    config = absolute_data_dir(config)  # config.json records where the data is, whatever the current directory
    init_from = None if init_from is None else Path(init_from)
    if init_from is not None:  # before anything is created
        _check_warm_start_source(config, init_from, workdir)
    # One process per workdir: a second run there would overwrite this one's
    # checkpoints and interleave its metrics (process 0 holds it for all).
    lock = DirectoryLock(workdir, "genrec train").acquire() if jax.process_index() == 0 else None
    try:
        # What the run opens (checkpointer, metrics log, signal handlers) is closed however it ends.
        with contextlib.ExitStack() as cleanup:
            return _train_locked(config, workdir, resume=resume, on_step_end=on_step_end, cleanup=cleanup,
                                 init_from=init_from)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(
    config: TrainConfig, workdir: Path, *, resume: bool, on_step_end: Callable[[int], None] | None,
    cleanup: contextlib.ExitStack, init_from: Path | None = None,
) -> TrainResult:
    """:func:`train` once the workdir's lock is held; ``cleanup`` closes what it opens."""
    workdir.mkdir(parents=True, exist_ok=True)
    is_primary = jax.process_index() == 0
    if is_primary:  # --no-resume replaces checkpoints/ and best/ (below): then only the workdir itself must be writable
        _check_writable_directories(workdir, subdirectories=resume)

    # --- Data --------------------------------------------------------------
    data = load_data(config.data)
    vocab = data.vocab
    split: LeaveOneOutSplit = leave_one_out_split(data.sequences, config.data.max_history)
    check_training_examples(split, config.data.data_dir, data.name)
    train_batches = BatchIterator.from_split(
        split.train, data.sid_codes, vocab, config.batch_size,
        shuffle=True, seed=config.seed, drop_remainder=False,
    )
    steps_per_epoch = train_batches.steps_per_epoch
    total_steps = _total_steps(config, steps_per_epoch)
    eval_every = steps_per_epoch if config.eval_every is None else config.eval_every
    checkpoint_every = config.checkpoint.every_steps or eval_every or steps_per_epoch
    logger.info(
        "data %s: %d items, %d users, %d/%d/%d train/valid/test examples; %d steps/epoch, %d steps",
        data.name or config.data.data_dir, data.num_items, data.num_users, split.train.num_examples,
        split.valid.num_examples, split.test.num_examples, steps_per_epoch, total_steps,
    )

    # --- Model -------------------------------------------------------------
    model_config = config.model.build(vocab.vocab_size, vocab.num_levels, config.data.max_history)
    model = build_model(model_config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed))
    logger.info("model %s (%s): %d parameters", config.model.preset, model_config.arch, count_params(model))
    graphdef, state = nnx.split(model)
    del model
    start: dict[str, Any] | None = None  # init_from.json's record of a warm start
    if init_from is not None:
        params, rest = nnx.split_state(state, nnx.Param, ...)
        params, start = load_start(init_from, params, data)
        state = nnx.merge_state(params, rest)
        logger.info("warm start from %s: best checkpoint, step %d, params %s", start["workdir"], start["step"],
                    start["params"][:19])

    # --- Optimizer ---------------------------------------------------------
    optimizer, schedule = make_optimizer(config.optimizer, total_steps)
    params = nnx.split_state(state, nnx.Param, ...)[0]
    opt_state = init_opt_state(optimizer, params, config.loss, data.sid_codes.shape[1])

    # --- Devices: batch sharded over "data", everything else replicated ------
    mesh = make_data_mesh(config.batch_size, config.num_devices)
    catalogue = replicate(make_catalogue(data.sid_codes, vocab, config.loss), mesh)
    state, opt_state = replicate((state, opt_state), mesh)
    train_step = make_train_step(config.loss, optimizer, mesh)
    logger.info("data parallel over %d %s device(s), %d examples each",
                mesh.size, mesh.devices.flat[0].platform, config.batch_size // mesh.size)
    # Every check that can refuse a fresh run came before: only now does --no-resume clear the previous run
    # (before, a refused command deleted it). The resume checks below apply only when nothing was cleared.
    if not resume and is_primary:
        remove_run_outputs(workdir, _RUN_OUTPUTS)
        _check_writable_directories(workdir)
    if jax.process_count() > 1:  # nobody touches the workdir before process 0 has cleared it
        multihost_utils.sync_global_devices("genrec.train: workdir ready")

    # --- Checkpoints: run files, then resume -------------------------------
    resume_changes: dict[str, tuple[Any, Any]] = {}
    resuming = resume and (workdir / CONFIG_FILE).exists()
    if resuming:
        saved_config, saved_model_config = read_run_config(workdir)
        for change in validation_changes(saved_config.eval, config.eval):
            logger.warning("resuming with another validation setting (%s): the best checkpoint so far "
                           "was chosen under the old one", change)
        if saved_model_config != model_config:
            differences = ", ".join(
                f"{field.name} {getattr(saved_model_config, field.name)!r} -> {getattr(model_config, field.name)!r}"
                for field in dataclasses.fields(model_config)
                if getattr(saved_model_config, field.name) != getattr(model_config, field.name))
            raise ValueError(f"{workdir}/{CONFIG_FILE} holds a different model than this config ({differences}); "
                             "use the run's settings, another --workdir, or --no-resume")
        saved_sid_codes, _ = read_catalogue(workdir)
        if not np.array_equal(saved_sid_codes, data.sid_codes):
            raise ValueError(
                f"{workdir}/{CATALOGUE_FILE} holds another catalogue than the data of this config; "
                "use another --workdir or --no-resume"
            )
        resume_changes = check_resume_changes(saved_config, config, steps_per_epoch, workdir / CONFIG_FILE)
        check_resumed_data(workdir, data)
        # A moved start with the same weights is accepted; init_from.json then records its new place (below).
        check_same_start(_read_init_from(workdir / INIT_FROM_FILE), start, where=workdir,
                         fix="resume it with the same --init-from, or use another --workdir or --no-resume")
    if is_primary:
        if not resuming:  # the data the run starts on; a resume keeps the record of the run's start
            write_data_fingerprint(workdir, data)
        write_run_files(workdir, config, model_config, vocab, data.sid_codes, data.item_ids)
        if start is not None:
            write_json_atomic(workdir / INIT_FROM_FILE, start, indent=1)
    checkpointer = Checkpointer(workdir, config.checkpoint)
    cleanup.callback(_close_quietly, checkpointer)
    base_key = jax.random.key(config.seed)
    progress = TrainingProgress(step=0, data_step=0, rng_key=tuple(int(w) for w in jax.random.key_data(base_key)))
    if resume and checkpointer.latest_step() is not None:
        params, rest = nnx.split_state(state, nnx.Param, ...)
        try:  # the newest checkpoint that reads back intact (a damaged one is named and moved aside)
            params, opt_state, progress = checkpointer.restore_newest_intact(params, opt_state)
        except UserError:
            checkpointer.close()
            raise
        state = nnx.merge_state(params, rest)
        base_key = jax.random.wrap_key_data(np.asarray(progress.rng_key, np.uint32))
        logger.info("resumed from step %d in %s", progress.step, workdir)
        if progress.finished and not progress.early_stopped and progress.step < total_steps:
            logger.info("the run ended at step %d; continuing to the config's %d steps", progress.step, total_steps)
            progress = dataclasses.replace(progress, finished=False)
    # A warm start that never checkpointed starts its log afresh (its step-0 validation is redone).
    keep_log = resume and (progress.step > 0 or start is None)
    metrics_log = MetricsLog(workdir / METRICS_FILE, keep_up_to_step=progress.step if keep_log else None,
                             enabled=is_primary, tensorboard_dir=workdir / TENSORBOARD_DIR)
    cleanup.callback(_close_quietly, metrics_log)
    if resume_changes:  # every accepted change of settings stays on record
        logger.info("resuming with changed settings: %s", ", ".join(
            f"{key} {old!r} -> {new!r}" for key, (old, new) in resume_changes.items()))
        metrics_log.write({"step": progress.step, "kind": "resume_changes",
                           "changes": {key: [old, new] for key, (old, new) in resume_changes.items()}})

    # --- Evaluators: constrained beam search over the catalogue trie ---------
    selection_metric = config.eval.selection_metric
    valid_examples = subset_examples(split.valid, config.eval.max_examples, config.eval.subset)
    eval_index, _ = build_eval_index(data.sid_codes, vocab)

    def evaluate(state: nnx.State, split_arrays: SplitArrays, with_ce: bool = False) -> EvalResult:
        eval_model = nnx.merge(graphdef, state)
        result = evaluate_split(
            eval_model, eval_index, data, split_arrays,
            num_beams=config.eval.num_beams, batch_size=config.eval.batch_size,
            ks=tuple(config.eval.ks), normalization=score_normalization(config),
        )
        metrics = dict(result.metrics)
        if with_ce:
            # Logged at every validation (cheap: one teacher-forced pass); selects
            # the best checkpoint when eval.selection_metric == "valid_ce".
            metrics[VALID_CE] = validation_ce(eval_model, data, split_arrays, batch_size=config.eval.batch_size)
        return dataclasses.replace(result, metrics={key: float(value) for key, value in metrics.items()})

    # --- Loop --------------------------------------------------------------
    train_batches = BatchIterator.from_split(
        split.train, data.sid_codes, vocab, config.batch_size,
        shuffle=True, seed=config.seed, drop_remainder=False, start_step=progress.data_step,
    )
    def stop_if_diverged(window_losses: np.ndarray | None = None) -> None:
        """Raises Diverged before a checkpoint or a "best" of diverged weights is saved."""
        reason = _divergence(state, window_losses)
        if reason:
            checkpointer.close()
            metrics_log.close()
            raise Diverged(_diverged_message(step, reason))

    def consider(step: int, valid_metrics: dict[str, float]) -> None:
        """Logs a validation of ``state`` at ``step``; saves it as the best checkpoint if it beats the best so far."""
        nonlocal progress
        metrics_log.write({"step": step, "kind": "valid", **valid_metrics})
        progress, improved = progress.after_validation(step, valid_metrics[selection_metric],
                                                       lower_is_better=selection_metric == VALID_CE)
        best_note = f"(best {progress.best_metric:.4f} at step {progress.best_step})"
        logger.info("step %d valid %s %s", step, _format_metrics(valid_metrics),
                    "(new best)" if improved else best_note)
        if improved:
            checkpointer.save_best(nnx.split_state(state, nnx.Param, ...)[0], dataclasses.replace(progress, step=step),
                                   valid_metrics)

    # A warm start validates its start first (once: a resumed run has it in its checkpoint), so the best
    # checkpoint and early stopping count it, as genrec rl does.
    if start is not None and eval_every and progress.step == 0 and progress.best_metric is None:
        consider(0, evaluate(state, valid_examples, with_ce=True).metrics)

    # The step metrics since the last log, those before a resume included (the checkpoint holds them), so
    # the first log after a resume averages the same steps as an uninterrupted run's; throughput counts
    # only this process's steps.
    window: list[dict[str, Any]] = window_from_json(progress.log_window)
    restored_in_window = len(window)
    progress = dataclasses.replace(progress, log_window=())
    window_start = time.perf_counter()
    step = progress.step
    # SIGTERM (preemption, timeout, scheduler) stops the loop after a step, with a checkpoint.
    stop_signal = cleanup.enter_context(StopOnSignal())
    # One bar over the whole run (ETA to the end, right after a resume too), the epoch in its label.
    with progress_bar(total_steps, unit="step", initial=step, enabled=None if is_primary else False) as bar:
        while not progress.finished and step < total_steps:
            batch = shard_batch(next(train_batches), mesh)
            state, opt_state, step_metrics = train_step(
                graphdef, state, opt_state, batch, jax.random.fold_in(base_key, step), catalogue
            )
            step += 1
            window.append(step_metrics)
            bar.set_description(f"train epoch {(step - 1) // steps_per_epoch + 1}", refresh=False)
            bar.update(1)

            if step % config.log_every == 0 or step == total_steps:
                host_window = jax.device_get(window)  # waits for the window's steps to finish
                record = _summarize(host_window, step, steps_per_epoch, schedule, config.batch_size,
                                    timed_steps=len(host_window) - restored_in_window,
                                    seconds=time.perf_counter() - window_start)
                metrics_log.write(record)
                logger.info(_progress_line(record, total_steps))
                bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
                stop_if_diverged(np.array([float(m["loss"]) for m in host_window]))
                if record["nonfinite_consecutive"] >= config.optimizer.max_consecutive_nonfinite:
                    checkpointer.close()
                    metrics_log.close()
                    raise Diverged(
                        f"{record['nonfinite_consecutive']} consecutive steps had non-finite gradients "
                        f"(up to step {step}); lower optimizer.learning_rate or check the data"
                    )
                window, window_start, restored_in_window = [], time.perf_counter(), 0

            stop_early = False
            if eval_every and (step % eval_every == 0 or step == total_steps):
                stop_if_diverged()
                eval_start = time.perf_counter()
                valid_metrics = evaluate(state, valid_examples, with_ce=True).metrics
                window_start += time.perf_counter() - eval_start  # throughput counts training time only
                consider(step, valid_metrics)
                patience = config.early_stopping_patience
                stop_early = patience is not None and progress.evals_without_improvement >= patience

            finished = stop_early or step == total_steps
            interrupted = not finished and stop_signal.requested(step)
            progress = dataclasses.replace(progress, step=step, data_step=train_batches.step,
                                           finished=finished, early_stopped=stop_early)
            if finished or interrupted or step % checkpoint_every == 0:
                stop_if_diverged()
                checkpointer.save(nnx.split_state(state, nnx.Param, ...)[0], opt_state,
                                  dataclasses.replace(progress, log_window=window_to_json(jax.device_get(window))))
            if stop_early:
                logger.info("early stopping at step %d: no better validation %s in %d evaluations",
                            step, selection_metric, config.early_stopping_patience)
            end_step(step, checkpointer, metrics_log, on_step_end, stop_signal.signum if interrupted else None)
    checkpointer.wait()
    # Training is finished and its last checkpoint committed: a signal from here on stops at once (exit 143)
    # and rerunning the command runs only this final evaluation.
    stop_signal.stop_at_once(progress.step)

    # --- Final evaluation: test split, best checkpoint ----------------------
    params, rest = nnx.split_state(state, nnx.Param, ...)
    try:  # never a test evaluation of damaged weights
        best_meta = checkpointer.best_metadata()
        if best_meta is not None:
            params, _ = checkpointer.restore_params(params, "best")
            state = nnx.merge_state(params, rest)
    except CheckpointDamaged as damaged:
        checkpointer.close()
        metrics_log.close()
        raise damaged_best_error(workdir, damaged, run="the", rerun="retrain") from damaged
    test_result = evaluate(state, split.test)
    test_metrics = test_result.metrics
    if is_primary:  # per-user ranks, for paired comparisons of runs (research/compare_runs.py)
        with atomic_open(workdir / TEST_RANKS_FILE, "wb") as f:
            np.save(f, test_result.ranks)
    metrics_log.write({"step": progress.step, "kind": "test", **test_metrics})
    logger.info("test (%s checkpoint, step %s): %s", "best" if best_meta else "final",
                best_meta["progress"]["step"] if best_meta else progress.step, _format_metrics(test_metrics))
    popularity = popularity_baseline(data.sid_codes, split.train.targets, split.test.targets, ks=config.eval.ks)
    logger.info("popularity baseline, test: %s", _format_metrics(popularity))
    checkpointer.close()
    metrics_log.close()

    result = TrainResult(
        workdir=workdir,
        final_step=progress.step,
        early_stopped=progress.early_stopped,
        best_step=None if best_meta is None else best_meta["progress"]["step"],
        best_valid_metrics=None if best_meta is None else best_meta["valid_metrics"],
        test_metrics=test_metrics,
        popularity_test_metrics=popularity,
    )
    if is_primary:
        payload = dataclasses.asdict(result)
        payload["workdir"] = str(workdir)
        write_json_atomic(workdir / RESULTS_FILE, payload, indent=1)
        _plot_curves(metrics_log.records(), workdir / CURVES_FILE)
    return result


# ---------------------------------------------------------------------------
# Logging helpers
# ---------------------------------------------------------------------------


def _divergence(state: nnx.State, window_losses: np.ndarray | None = None) -> str | None:
    """Why the run has diverged (non-finite parameters, or no finite loss in the log window), or None."""
    if not all_finite(state):
        return "its parameters are not finite"
    if window_losses is not None and not np.isfinite(window_losses).any():
        return "every loss since the last log is not finite"
    return None


def _diverged_message(step: int, reason: str) -> str:
    return (f"training diverged by step {step}: {reason}; nothing of it was saved. Lower "
            "optimizer.learning_rate or check the data, then rerun with --no-resume or another --workdir (a "
            "resume repeats the divergence)")


def _summarize(host, step, steps_per_epoch, schedule, batch_size, *, timed_steps, seconds) -> dict[str, Any]:
    """One metrics.jsonl record: means of the window's step metrics (on host), learning rate, and
    throughput (``timed_steps`` of the window's steps took ``seconds``)."""
    record: dict[str, Any] = {"step": step, "kind": "train", "epoch": step / steps_per_epoch}
    for key in host[-1]:
        values = np.stack([np.asarray(m[key], np.float64) for m in host])
        if key in ("nonfinite_total", "nonfinite_consecutive"):
            record[key] = int(values[-1])
        elif key == "update_skipped":
            record["skipped_in_window"] = int(values.sum())
        else:
            record[key] = _to_json_value(_nan_mean(values))
    record["learning_rate"] = float(schedule(step - 1))
    record["steps_per_s"] = timed_steps / seconds
    record["samples_per_s"] = timed_steps * batch_size / seconds
    return record


def window_to_json(host_window: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log window's step metrics (host arrays) as strict JSON for the checkpoint's ``meta``
    (``TrainingProgress.log_window``, genrec train's and genrec rl's): float64 values (exact for the float32 /
    int32 metrics), non-finite ones as ``"nan"``, ``"inf"``, ``"-inf"``."""
    def encode(value: Any) -> Any:
        array = np.asarray(value, np.float64)
        values = array.astype(object)
        values[~np.isfinite(array)] = array[~np.isfinite(array)].astype(str)
        return values.tolist()

    return [{key: encode(value) for key, value in metrics.items()} for metrics in host_window]


def window_from_json(saved: Sequence[dict[str, Any]]) -> list[dict[str, np.ndarray]]:
    """Inverse of :func:`window_to_json` (float64 arrays; :func:`_summarize` reads them as it reads the steps')."""
    return [{key: np.asarray(np.array(value, dtype=object), np.float64) for key, value in metrics.items()}
            for metrics in saved]


def _check_writable_directories(workdir: Path, *, subdirectories: bool = True) -> None:
    """Refuses a workdir whose checkpoint directories cannot be written, before the run starts
    (``subdirectories=False``: only ``workdir`` itself, for a run that will replace them).

    A failed Orbax save (``checkpoints`` a file, a read-only ``best/``) printed its
    error and then left the process waiting 300 s for its save threads.
    """
    for directory in (workdir, workdir / PERIODIC_DIR, workdir / BEST_DIR) if subdirectories else (workdir,):
        if not directory.exists():
            continue
        if not directory.is_dir():
            raise ValueError(f"{directory}: is a file, not a directory; remove it or use another --workdir")
        try:  # root ignores permission bits and os.access does not know it: try what the saves will do
            fd, probe = tempfile.mkstemp(prefix=".genrec-write-check-", dir=directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise ValueError(f"{directory}: cannot write there ({error.strerror}); "
                             "change its permissions or use another --workdir") from None


def _close_quietly(resource: Any) -> None:
    """Closes ``resource`` on the way out; a second close, or one after its error, is not a new error."""
    with contextlib.suppress(Exception):
        resource.close()


def _nan_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN (e.g. a prefix AUC with no competing negative); NaN if all are."""
    finite = ~np.isnan(values)
    total = np.where(finite, values, 0.0).sum(axis=0)
    count = finite.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _progress_line(record: dict[str, Any], total_steps: int) -> str:
    return (
        f"step {record['step']}/{total_steps} | epoch {record['epoch']:.2f} | loss {record['loss']:.4f} "
        f"| ce {record['ce_loss']:.4f} | lr {record['learning_rate']:.2e} | grad_norm {record['grad_norm']:.3f} "
        f"| skipped {record['nonfinite_total']} | {record['steps_per_s']:.2f} steps/s "
        f"| {record['samples_per_s']:.0f} samples/s"
    )


def _format_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{key} {value:.4f}" for key, value in metrics.items() if "@" in key)


def _plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Training loss and validation ndcg@10 against the step, if matplotlib is importable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no %s", path.name)
        return
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot([r["step"] for r in train], [r["loss"] for r in train], label="loss")
    loss_axis.plot([r["step"] for r in train], [r["ce_loss"] for r in train], label="ce_loss")
    loss_axis.set_xlabel("step")
    loss_axis.legend()
    for key in ("ndcg@10", "recall@10"):
        metric_axis.plot([r["step"] for r in valid], [r.get(key) for r in valid], marker=".", label=f"valid {key}")
    metric_axis.set_xlabel("step")
    metric_axis.legend()
    figure.tight_layout()
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png")
    plt.close(figure)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def initialize_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """``jax.distributed.initialize`` (arguments None = detect the cluster: TPU VMs, SLURM, ...).

    On CPU hosts the cross-process collectives go through Gloo (JAX's CPU
    backend has no other), which is what the multi-process tests use.
    """
    if num_processes is not None and num_processes < 1:
        raise UserError(f"--num-processes {num_processes}: a run has at least 1 process")
    if process_id is not None and (process_id < 0 or (num_processes is not None and process_id >= num_processes)):
        bound = "" if num_processes is None else f" and below --num-processes {num_processes}"
        raise UserError(f"--process-id {process_id}: process ids count from 0{bound}")
    if os.environ.get("JAX_PLATFORMS") == "cpu" or getattr(jax.config, "jax_platforms", None) == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    except ValueError as error:  # no cluster detected to fill in what the options leave out
        raise UserError(f"--distributed: {str(error).rstrip('.')}: no cluster (TPU pod, SLURM, ...) was detected "
                        "to fill it in; give --coordinator HOST:PORT --num-processes N --process-id I") from error
    logger.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
                jax.local_device_count(), jax.device_count())


def check_single_process(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Refuses the cluster options of a run without ``--distributed`` (they were ignored: one process trained).

    Raises:
      UserError: one line naming the options given.
    """
    given = [f"{option} {value}" for option, value in (("--coordinator", coordinator),
             ("--num-processes", num_processes), ("--process-id", process_id)) if value is not None]
    if given:
        raise UserError(f"{' '.join(given)}: multi-host options need --distributed (or GENREC_DISTRIBUTED=1); "
                        "add it, or leave them out to train as one process")


def damaged_best_error(workdir: Path, damaged: CheckpointDamaged, *, run: str, rerun: str) -> UserError:
    """The one line of a run whose own best checkpoint is damaged before its final test evaluation (genrec train's
    and genrec rl's wording): ``run`` names whose checkpoint it is, ``rerun`` how to run it again from the start
    (the line adds ``with --no-resume``); the fix is the command's, not ``genrec eval``'s ``which='latest'``."""
    return UserError(f"{workdir / BEST_DIR}: {run} best checkpoint (step {damaged.step}) is damaged "
                     f"({damaged.reason}), so the test split was not evaluated; {rerun} with --no-resume, or "
                     "evaluate the latest checkpoint: genrec eval --which latest")


def holds_checkpoint(workdir: str | Path) -> bool:
    """Whether ``workdir`` holds a periodic checkpoint (a failed command keeps such a workdir: rerunning resumes)."""
    return has_checkpoint(workdir, "latest")


def _result_line(result: TrainResult) -> str:
    """The last line ``genrec train`` prints: test recall@10 / ndcg@10 (or every cut-off), next to popularity."""
    keys = [key for key in ("recall@10", "ndcg@10") if key in result.test_metrics]
    keys = keys or [key for key in result.test_metrics if "@" in key]
    which = "final step" if result.best_step is None else f"best checkpoint, step {result.best_step}"

    def metrics(values: dict[str, float]) -> str:
        return " ".join(f"{key} {values[key]:.4f}" for key in keys)

    return (f"test {metrics(result.test_metrics)} ({which}); popularity {metrics(result.popularity_test_metrics)}; "
            f"all metrics in {result.workdir / RESULTS_FILE}")


def end_step(step: int, checkpointer: Checkpointer, metrics_log: MetricsLog,
             on_step_end: Callable[[int], None] | None, stop_signum: int | None,
             log: logging.Logger = logger) -> None:
    """The end of a training step, once its checkpoint (if due) is saved: the ``on_step_end`` hook, then,
    if a signal asked to stop (``stop_signum``), the checkpoint committed, the stop logged to ``log`` (the
    command's logger: genrec.train, genrec.rl) and ``TrainingInterrupted``."""
    if on_step_end is not None:
        checkpointer.wait()
        on_step_end(step)
    if stop_signum is not None:
        checkpointer.wait()
        checkpointer.close()
        metrics_log.close()
        log.warning("stopped at step %d with a checkpoint; run the same command to resume", step)
        raise TrainingInterrupted(step, stop_signum)


def report_run(job: Callable[[], Any], result_line: Callable[[Any], str]) -> int:
    """Runs a training job for a command line: prints its result line (exit 0), or, when SIGTERM
    stopped it, ``{"interrupted_at_step": N}`` (exit 143 / 130)."""
    try:
        result = job()
    except TrainingInterrupted as stopped:
        print(json.dumps({"interrupted_at_step": stopped.step}))
        return stopped.exit_code
    print(result_line(result), flush=True)
    return 0


def main(argv: Sequence[str] | None = None, *, on_step_end: Callable[[int], None] | None = None) -> int:
    """``genrec train`` / ``python -m training.train``: parse arguments, then :func:`train`
    (``on_step_end``: passed to :func:`train`).

    Exit status 0 done, 1 diverged (one line on stderr; the checkpoints before it
    kept), 2 a user's mistake (one line on stderr; a workdir this command created is
    removed again), 143 / 130 stopped by SIGTERM / Ctrl-C.
    """
    parser = argparse.ArgumentParser(
        prog="genrec train",
        description="Train a semantic-ID recommender from a config file (tpu_configs/*.py).",
        epilog="Settable keys: " + ", ".join(override_keys()),
    )
    parser.add_argument("--config", required=True, metavar="FILE[:ARG]",
                        help="config file with get_config() -> TrainConfig; FILE:ARG calls get_config(ARG), e.g. "
                             "tpu_configs/office_t5.py:loss=apao,dtype=bfloat16 (a file's docstring lists its "
                             "variants and their expected results)")
    parser.add_argument("--workdir", required=True, help="output directory (checkpoints, metrics, results)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set optimizer.learning_rate=1e-3 (repeatable)")
    parser.add_argument("--no-resume", action="store_true",
                        help="start from scratch, deleting the workdir's previous checkpoints and metrics")
    parser.add_argument("--init-from", default=None, metavar="RUN",
                        help="warm start: begin from the best checkpoint of the genrec train run RUN (same model "
                             "and data) with a fresh optimizer and this config's schedule, validating the start "
                             "at step 0 (docs/training.md#warm-start); a resume must name the same RUN (or RUN moved: "
                             "the same weights)")
    parser.add_argument("--distributed", action="store_true",
                        help="multi-host: call jax.distributed.initialize() first (also GENREC_DISTRIBUTED=1); "
                             "on TPU VMs and SLURM the cluster is detected, elsewhere give the three options below")
    parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                        help="only with --distributed: address of process 0's coordinator service")
    parser.add_argument("--num-processes", type=int, default=None, help="with --distributed: number of processes")
    parser.add_argument("--process-id", type=int, default=None, help="with --distributed: this process's id")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)

    setup_logging(args.verbose)

    def run() -> int:
        if args.distributed or os.environ.get("GENREC_DISTRIBUTED") == "1":
            initialize_distributed(args.coordinator, args.num_processes, args.process_id)
        else:
            check_single_process(args.coordinator, args.num_processes, args.process_id)
        config = load_config_file(args.config, args.overrides)
        return report_run(lambda: train(config, args.workdir, resume=not args.no_resume, on_step_end=on_step_end,
                                        init_from=args.init_from), _result_line)

    return run_command(parser.prog, run, outputs=[args.workdir], verbose=args.verbose,
                       keep_outputs=lambda: holds_checkpoint(args.workdir))


if __name__ == "__main__":
    raise SystemExit(main())
