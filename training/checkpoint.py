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
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from genrec.atomic_files import atomic_open, write_json_atomic
from genrec.models import ModelConfig
from genrec.run_files import (
    BEST_DIR,
    BEST_ITEMS,
    CATALOGUE_FILE,
    CONFIG_FILE,
    PERIODIC_DIR,
    PERIODIC_ITEMS,
    VOCAB_FILE,
    abstract_tree,
    model_config_from_json,
    model_config_to_json,
    read_config_json,
    restore_params_from,
    state_with_values,
)
from genrec.vocab import SIDVocabulary
from training.config import CheckpointConfig, TrainConfig, config_from_json, config_to_json

__all__ = [
    "Checkpointer",
    "TrainingProgress",
    "read_run_config",
    "write_run_files",
]


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


def read_run_config(workdir: str | Path) -> tuple[TrainConfig, ModelConfig]:
    """``(TrainConfig, ModelConfig)`` from ``workdir/config.json``.

    Raises:
      FileNotFoundError: not a training workdir.
      ValueError: written by another genrec version, or with unknown fields.
    """
    payload = read_config_json(workdir)
    return config_from_json(payload, str(Path(workdir) / CONFIG_FILE)), model_config_from_json(payload["model_config"])


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
        training/train.py ``_window_to_json``), so a resumed run's first log
        averages the same steps as an uninterrupted run's; empty in older checkpoints.
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

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
        """Saves a periodic checkpoint at ``progress.step`` (async if configured).

        A step that is already saved (a resumed run passing it again) is skipped.
        """
        if progress.step in self._periodic.all_steps():
            return
        self._periodic.save(
            progress.step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(nnx.to_pure_dict(params)),
                opt_state=ocp.args.StandardSave(opt_state),
                meta=ocp.args.JsonSave(progress.to_json()),
            ),
        )

    def save_best(self, params: nnx.State, progress: TrainingProgress, metrics: dict[str, float]) -> None:
        """Replaces the best checkpoint with ``params`` at ``progress.step``."""
        if progress.step in self._best.all_steps():
            return
        meta = {"progress": progress.to_json(), "valid_metrics": metrics}
        self._best.save(
            progress.step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(nnx.to_pure_dict(params)),
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
        """Restores a periodic checkpoint (the latest by default) onto the given templates.

        Args:
          params: the model's ``nnx.Param`` state; gives the structure, dtypes
            and shardings (its values are not used).
          opt_state: the optimizer state of the same run configuration.

        Returns:
          ``(params, opt_state, progress)``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.workdir / PERIODIC_DIR}")
        restored = self._periodic.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_tree(nnx.to_pure_dict(params))),
                opt_state=ocp.args.StandardRestore(abstract_tree(opt_state)),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return state_with_values(params, restored.params), restored.opt_state, TrainingProgress.from_json(restored.meta)

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
        return self._best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
