"""Writing a training workdir (run files, Orbax checkpoints) and restoring it to resume a run.

Where it sits: train loop -> **checkpoint** -> run files -> index -> decode -> serve.
``training/train.py`` saves through :class:`Checkpointer` and
:func:`write_run_files`; the layout and the read side for inference
(``load_model_for_inference``, ``read_catalogue``) live in ``genrec/run_files.py``,
so serving reads a workdir without importing training.

``opt_state`` is the optax state pytree (restored onto the same structure,
only by a resuming run). The three run files are written atomically (temp
file + ``os.replace``); Orbax itself commits a step directory only when it is
complete, so a crash at any moment leaves the last complete checkpoint intact.
Every checkpoint's ``meta`` also records a checksum of each array it holds
(genrec/checkpoint_checksums.py); restoring verifies them, and a resumed run
falls back past a damaged checkpoint to the newest intact one (docs/training.md).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from genrec.atomic_files import atomic_open, write_json_atomic
from genrec.checkpoint_checksums import CHECKSUMS_KEY, CheckpointDamaged, checksum_record, reading_error
from genrec.console import UserError
from genrec.datasets import InteractionData
from genrec.models import ModelConfig
from genrec.run_files import (
    BEST_DIR,
    BEST_ITEMS,
    CATALOGUE_FILE,
    CONFIG_FILE,
    DATA_FINGERPRINT_FILE,
    PERIODIC_DIR,
    PERIODIC_ITEMS,
    VOCAB_FILE,
    abstract_tree,
    data_fingerprint,
    model_config_from_json,
    model_config_to_json,
    read_config_json,
    restore_params_from,
    restore_verified,
    state_with_values,
)
from genrec.vocab import SIDVocabulary
from training.config import CheckpointConfig, TrainConfig, config_from_json, config_to_json

__all__ = [
    "Checkpointer",
    "TrainingProgress",
    "read_run_config",
    "write_data_fingerprint",
    "write_run_files",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Run files: config.json, vocab.json, catalogue.npz
# ---------------------------------------------------------------------------


def _write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def write_run_files(
    workdir: str | Path,
    config: TrainConfig,
    model_config: ModelConfig,
    vocab: SIDVocabulary,
    sid_codes: np.ndarray,
    item_ids: np.ndarray,
) -> None:
    """Writes ``config.json``, ``vocab.json`` and ``catalogue.npz`` (each atomically).

    Args:
      sid_codes: ``int[num_items, L]`` SID codes of every item row.
      item_ids: ``num_items`` original item ids (written as strings).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    payload = config_to_json(config)
    payload["model_config"] = model_config_to_json(model_config)
    write_json_atomic(workdir / CONFIG_FILE, payload, indent=1)
    vocab.save(workdir / VOCAB_FILE)
    _write_npz_atomic(
        workdir / CATALOGUE_FILE,
        sid_codes=np.asarray(sid_codes, np.int32),
        item_ids=np.asarray([str(i) for i in item_ids]),
    )


def write_data_fingerprint(workdir: str | Path, data: InteractionData) -> None:
    """Writes ``data_fingerprint.json`` (atomically): the identity of the data a run starts on, which a
    resume checks (``genrec.run_files.check_same_data``). Written when a run starts, never when it resumes."""
    write_json_atomic(Path(workdir) / DATA_FINGERPRINT_FILE, data_fingerprint(data), indent=1)


def read_run_config(workdir: str | Path) -> tuple[TrainConfig, ModelConfig]:
    """``(TrainConfig, ModelConfig)`` from ``workdir/config.json``.

    Raises:
      FileNotFoundError: not a training workdir.
      ValueError: written by another genrec version, or damaged: malformed
        JSON, an unknown field (at the top level or in any section), a section
        missing, a value refused (one line naming the file and the fix).
    """
    path = Path(workdir) / CONFIG_FILE
    payload = read_config_json(workdir)
    return config_from_json(payload, str(path)), model_config_from_json(payload["model_config"], path)


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainingProgress:
    """Everything besides arrays that a resumed run needs (the ``meta`` item).

    Attributes:
      step: optimizer steps done.
      data_step: position of the training ``BatchIterator`` (next batch index).
      rng_key: ``jax.random.key_data`` of the run's base key (uint32 words);
        step ``s`` uses ``fold_in(key, s)``.
      best_metric: best validation eval.selection_metric so far (None before the first evaluation).
      best_step: step of ``best_metric``.
      evals_without_improvement: evaluations since ``best_step`` (early stopping).
      finished: the loop ended (last step reached or stopped early).
      early_stopped: it ended by early stopping.
      log_window: the step metrics since the last metrics.jsonl log (strict JSON,
        training/train.py ``window_to_json``), so a resumed run's first log
        averages the same steps as an uninterrupted run's (genrec train and genrec rl); empty in older checkpoints.
      start_valid_metrics: genrec rl's validation metrics of its start (step 0), which its result reports
        (kept here, not only in metrics.jsonl, so a resumed run has them); None in genrec train's checkpoints,
        an RL run's without validation (``rl.eval_every=0``) and older ones.
    """

    step: int
    data_step: int
    rng_key: tuple[int, ...]
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    finished: bool = False
    early_stopped: bool = False
    log_window: tuple[dict[str, Any], ...] = ()
    start_valid_metrics: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def after_validation(self, step: int, score: float, lower_is_better: bool = False) -> tuple[TrainingProgress, bool]:
        """``(progress, improved)`` once a validation at ``step`` scored ``score``: a new best (the first
        validation always is) resets the early-stopping count, any other adds one to it."""
        if self.best_metric is None:
            improved = True
        else:
            improved = score < self.best_metric if lower_is_better else score > self.best_metric
        if improved:
            return dataclasses.replace(self, best_metric=score, best_step=step, evals_without_improvement=0), True
        return dataclasses.replace(self, evals_without_improvement=self.evals_without_improvement + 1), False

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "TrainingProgress":
        values = dict(values)
        values["rng_key"] = tuple(values["rng_key"])
        values["log_window"] = tuple(values.get("log_window", ()))
        return cls(**values)


class Checkpointer:
    """Periodic and best checkpoints of one workdir (layout: ``genrec/run_files.py``).

    Args:
      workdir: the run's directory.
      config: how many to keep, sync or async.
    """

    def __init__(self, workdir: str | Path, config: CheckpointConfig):
        self.workdir = Path(workdir).absolute()
        options = dict(enable_async_checkpointing=config.async_save, create=True)
        self._periodic = ocp.CheckpointManager(
            self.workdir / PERIODIC_DIR,
            options=ocp.CheckpointManagerOptions(max_to_keep=config.keep, **options),
            item_names=PERIODIC_ITEMS,
        )
        self._best = ocp.CheckpointManager(
            self.workdir / BEST_DIR,
            options=ocp.CheckpointManagerOptions(max_to_keep=1, **options),
            item_names=BEST_ITEMS,
        )

    # -- saving

    def save(self, params: nnx.State, opt_state: Any, progress: TrainingProgress) -> None:
        """Saves a periodic checkpoint at ``progress.step`` (async if configured),
        with the checksums of its arrays in its ``meta``.

        The checksums are computed here, before the (possibly async) write: one
        host copy and one SHA-256 pass over params and opt_state per save. A
        step that is already saved (a resumed run passing it again) is skipped.
        """
        if progress.step in self._periodic.all_steps():
            return
        pure_params = nnx.to_pure_dict(params)
        meta = {**progress.to_json(), CHECKSUMS_KEY: checksum_record(params=pure_params, opt_state=opt_state)}
        self._periodic.save(
            progress.step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(pure_params),
                opt_state=ocp.args.StandardSave(opt_state),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def save_best(self, params: nnx.State, progress: TrainingProgress, metrics: dict[str, float]) -> None:
        """Replaces the best checkpoint with ``params`` at ``progress.step`` (with their checksums)."""
        if progress.step in self._best.all_steps():
            return
        pure_params = nnx.to_pure_dict(params)
        meta = {"progress": progress.to_json(), "valid_metrics": metrics,
                CHECKSUMS_KEY: checksum_record(params=pure_params)}
        self._best.save(
            progress.step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(pure_params),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def wait(self) -> None:
        """Blocks until pending async saves are committed."""
        self._periodic.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._periodic.close()
        self._best.close()

    # -- restoring

    def latest_step(self) -> int | None:
        """Step of the newest complete periodic checkpoint, or None."""
        return self._periodic.latest_step()

    def best_step(self) -> int | None:
        """Step of the best checkpoint, or None."""
        return self._best.latest_step()

    def restore(
        self, params: nnx.State, opt_state: Any, step: int | None = None
    ) -> tuple[nnx.State, Any, TrainingProgress]:
        """Restores a periodic checkpoint (the latest by default) onto the given templates,
        verified against the checksums saved with it.

        Args:
          params: the model's ``nnx.Param`` state; gives the structure, dtypes
            and shardings (its values are not used).
          opt_state: the optimizer state of the same run configuration.

        Returns:
          ``(params, opt_state, progress)``.

        Raises:
          FileNotFoundError: no checkpoint.
          CheckpointDamaged: the step cannot be read or differs from its checksums.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.workdir / PERIODIC_DIR}")
        arrays, meta = restore_verified(
            self._periodic, step, self.workdir / PERIODIC_DIR,
            params=abstract_tree(nnx.to_pure_dict(params)), opt_state=abstract_tree(opt_state),
        )
        try:
            progress = TrainingProgress.from_json(meta)
        except (TypeError, ValueError, KeyError) as error:
            reason = f"its meta is not a training progress record: {error}"
            raise CheckpointDamaged(f"{self.workdir / PERIODIC_DIR}: checkpoint step {step} is damaged ({reason})",
                                    step=step, reason=reason) from error
        return state_with_values(params, arrays["params"]), arrays["opt_state"], progress

    def restore_newest_intact(self, params: nnx.State, opt_state: Any) -> tuple[nnx.State, Any, TrainingProgress]:
        """:meth:`restore` of the newest periodic checkpoint that reads back intact (resuming a run).

        Damaged newer checkpoints are moved aside (``checkpoints/<step>.damaged``:
        kept for inspection, and out of Orbax's way when the resumed run saves
        that step again), with one warning line naming them and why.

        Raises:
          FileNotFoundError: no periodic checkpoint.
          UserError: every periodic checkpoint is damaged (one line).
        """
        directory = self.workdir / PERIODIC_DIR
        steps = sorted(self._periodic.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {directory}")
        damaged: list[CheckpointDamaged] = []
        for step in steps:
            try:
                restored = self.restore(params, opt_state, step)
            except CheckpointDamaged as error:
                damaged.append(error)
                continue
            if damaged:
                moved_to = self._move_aside([error.step for error in damaged])
                logger.warning("%s; moved to %s; resuming from step %d", _damaged_list(damaged),
                               ", ".join(str(path) for path in moved_to), step)
            return restored
        raise UserError(f"{directory}: no intact checkpoint to resume from: {_damaged_list(damaged)}; start over "
                        "with --no-resume (it deletes them) or use another --workdir")

    def _move_aside(self, steps: list[int]) -> list[Path]:
        """Renames damaged step directories to ``<step>.damaged`` (a name Orbax does not take for a step)."""
        directory = self.workdir / PERIODIC_DIR
        targets = []
        for step in steps:
            target = directory / f"{step}.damaged"
            suffix = 1
            while target.exists():
                target, suffix = directory / f"{step}.damaged.{suffix}", suffix + 1
            targets.append(target)
            if jax.process_index() == 0:
                (directory / str(step)).rename(target)
        if jax.process_count() > 1:  # every process sees the renamed steps before listing them again
            multihost_utils.sync_global_devices("genrec.checkpoint: damaged steps moved aside")
        self._periodic.reload()
        return targets

    def restore_params(self, params: nnx.State, which: Literal["best", "latest"]) -> tuple[nnx.State, int]:
        """Only the parameters of the best or latest checkpoint: ``(params, step)``."""
        if which == "best":
            return restore_params_from(self._best, params, which, self.workdir / BEST_DIR)
        return restore_params_from(self._periodic, params, which, self.workdir / PERIODIC_DIR)

    def best_metadata(self) -> dict[str, Any] | None:
        """The best checkpoint's ``meta`` (progress and validation metrics), or None."""
        step = self._best.latest_step()
        if step is None:
            return None
        try:
            meta = dict(self._best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)
        except Exception as error:  # whatever the reader raises, the step is unusable
            reason = reading_error(error)
            raise CheckpointDamaged(f"{self.workdir / BEST_DIR}: the best checkpoint (step {step}) is damaged "
                                    f"({reason})", step=step, reason=reason) from error
        meta.pop(CHECKSUMS_KEY, None)
        return meta


def _damaged_list(damaged: list[CheckpointDamaged]) -> str:
    """``checkpoint step 4 is damaged (why)`` or ``checkpoint steps 6, 4 are damaged (6: why; 4: why)``."""
    if len(damaged) == 1:
        return f"checkpoint step {damaged[0].step} is damaged ({damaged[0].reason})"
    steps = ", ".join(str(error.step) for error in damaged)
    reasons = "; ".join(f"{error.step}: {error.reason}" for error in damaged)
    return f"checkpoint steps {steps} are damaged ({reasons})"
