"""Checkpoints and run files in a training workdir, and loading a trained model back.

Where it sits: train loop -> **checkpoint** -> index -> decode -> serve.
``training/train.py`` saves through :class:`Checkpointer`; serving and
``training/evaluate.py`` load with :func:`load_model_for_inference`, which needs
nothing but the workdir (no data directory).

Workdir layout::

    workdir/
      config.json        {"format_version", "train_config": TrainConfig, "model_config": ModelConfig}
      vocab.json         genrec.vocab.SIDVocabulary (token layout)
      catalogue.npz      sid_codes int32[num_items, L], item_ids str[num_items]
      checkpoints/<step>/  periodic Orbax checkpoints (the last ``keep``):
                           params, opt_state, meta (JSON: TrainingProgress)
      best/<step>/         the best one by eval.selection_metric (validation ndcg@10 by default): params, meta
      metrics.jsonl, results.json, curves.png  (written by train.py)

``params`` are stored as a plain nested dict of arrays (``nnx.to_pure_dict``),
so a checkpoint does not depend on how a Flax version wraps its variables;
``opt_state`` is the optax state pytree (restored onto the same structure,
only by a resuming run). The three run files are written atomically (temp
file + ``os.replace``); Orbax itself commits a step directory only when it is
complete, so a crash at any moment leaves the last complete checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from genrec.atomic_files import atomic_open, write_json_atomic
from genrec.models import ModelConfig, Recommender, build_model
from genrec.vocab import SIDVocabulary
from training.config import CheckpointConfig, TrainConfig, config_from_json, config_to_json

__all__ = [
    "CATALOGUE_FILE",
    "CONFIG_FILE",
    "Checkpointer",
    "TrainingProgress",
    "VOCAB_FILE",
    "load_model_for_inference",
    "model_config_from_json",
    "model_config_to_json",
    "read_catalogue",
    "read_run_config",
    "write_run_files",
]

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
CATALOGUE_FILE = "catalogue.npz"
PERIODIC_DIR = "checkpoints"
BEST_DIR = "best"


# ---------------------------------------------------------------------------
# Run files: config.json, vocab.json, catalogue.npz
# ---------------------------------------------------------------------------


def model_config_to_json(config: ModelConfig) -> dict[str, Any]:
    """``ModelConfig`` as JSON (dtypes by name)."""
    values = dataclasses.asdict(config)
    values["dtype"] = jnp.dtype(config.dtype).name
    values["param_dtype"] = jnp.dtype(config.param_dtype).name
    return values


def model_config_from_json(values: dict[str, Any]) -> ModelConfig:
    """Inverse of :func:`model_config_to_json`."""
    return ModelConfig(**values)


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
    """
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a genrec training workdir")
    payload = json.loads(path.read_text(encoding="utf-8"))
    return config_from_json(payload, str(path)), model_config_from_json(payload["model_config"])


def read_catalogue(workdir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(sid_codes int32[num_items, L], item_ids str[num_items])`` from ``workdir/catalogue.npz``."""
    path = Path(workdir) / CATALOGUE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {workdir} is not a genrec training workdir")
    with np.load(path, allow_pickle=False) as arrays:
        return arrays["sid_codes"], arrays["item_ids"]


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
    """

    step: int
    data_step: int
    rng_key: tuple[int, ...]
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    finished: bool = False
    early_stopped: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "TrainingProgress":
        values = dict(values)
        values["rng_key"] = tuple(values["rng_key"])
        return cls(**values)


def _abstract(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays: the restore target."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
    """Periodic and best checkpoints of one workdir (layout in the module docstring).

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
            item_names=("params", "opt_state", "meta"),
        )
        self._best = ocp.CheckpointManager(
            self.workdir / BEST_DIR,
            options=ocp.CheckpointManagerOptions(max_to_keep=1, **options),
            item_names=("params", "meta"),
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
                params=ocp.args.StandardRestore(_abstract(nnx.to_pure_dict(params))),
                opt_state=ocp.args.StandardRestore(_abstract(opt_state)),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return _with_values(params, restored.params), restored.opt_state, TrainingProgress.from_json(restored.meta)

    def restore_params(self, params: nnx.State, which: Literal["best", "latest"]) -> tuple[nnx.State, int]:
        """Only the parameters of the best or latest checkpoint: ``(params, step)``."""
        manager = self._best if which == "best" else self._periodic
        step = manager.latest_step()
        if step is None:
            if which == "best":
                raise FileNotFoundError(
                    f"no best checkpoint in {self.workdir / BEST_DIR}: no validation evaluation ran "
                    "(eval_every=0, or training stopped before the first one); use which='latest'"
                )
            raise FileNotFoundError(f"no checkpoint in {self.workdir / PERIODIC_DIR}")
        restored = manager.restore(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(nnx.to_pure_dict(params)))),
        )
        return _with_values(params, restored.params), step

    def best_metadata(self) -> dict[str, Any] | None:
        """The best checkpoint's ``meta`` (progress and validation metrics), or None."""
        step = self._best.latest_step()
        if step is None:
            return None
        return self._best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def _with_values(template: nnx.State, pure: dict[str, Any]) -> nnx.State:
    """``template`` (an ``nnx.State``) holding the arrays of the pure dict ``pure``."""
    state = jax.tree.map(lambda x: x, template)  # a fresh State; the template is untouched
    nnx.replace_by_pure_dict(state, pure)
    return state


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------


def load_model_for_inference(
    workdir: str | Path, which: Literal["best", "latest"] = "best"
) -> tuple[Recommender, ModelConfig, SIDVocabulary, np.ndarray, np.ndarray]:
    """A trained model and its catalogue, from a training workdir alone.

    Args:
      workdir: the directory ``genrec train --workdir`` wrote.
      which: ``"best"`` (best by the run's eval.selection_metric) or ``"latest"`` (newest periodic).

    Returns:
      ``(model, model_config, vocab, sid_codes, item_ids)``: the model on the
      default device (call it with ``deterministic=True``, the default), its
      config, the token layout, ``sid_codes int32[num_items, L]`` and the
      original ``item_ids str[num_items]`` of each item row.

    Raises:
      FileNotFoundError: not a workdir, or no checkpoint of that kind.
      ValueError: ``which`` is neither "best" nor "latest".
    """
    if which not in ("best", "latest"):
        raise ValueError(f"which={which!r}; use 'best' or 'latest'")
    workdir = Path(workdir)
    _, model_config = read_run_config(workdir)
    vocab = SIDVocabulary.load(workdir / VOCAB_FILE)
    sid_codes, item_ids = read_catalogue(workdir)

    model = build_model(model_config, rngs=nnx.Rngs(params=0, dropout=0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    checkpointer = Checkpointer(workdir, CheckpointConfig(async_save=False))
    try:
        params, _ = checkpointer.restore_params(params, which)
    finally:
        checkpointer.close()
    return nnx.merge(graphdef, params, rest), model_config, vocab, sid_codes, item_ids
