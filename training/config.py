"""Training configuration: frozen dataclasses, config files and ``--set`` overrides.

Where it sits: ``tpu_configs/<name>.py::get_config()`` -> :class:`TrainConfig`
(+ ``--set key=value`` overrides, :func:`apply_overrides`) -> ``training.train.train``.
Nothing below ``train.py`` reads flags or environment variables: every setting a
run depends on is a field here, and the whole config is written to
``workdir/config.json`` next to the checkpoints.

A config file is plain Python::

    from training.config import TrainConfig, ModelSpec

    def get_config() -> TrainConfig:
        \"\"\"What it reproduces, the expected result, the exact command.\"\"\"
        return TrainConfig(model=ModelSpec(preset="tiny"), batch_size=256)

Overrides are dotted paths to a field, parsed against the field's type::

    --set optimizer.learning_rate=1e-3 --set loss.kind=apao_pointwise
    --set data.data_dir=/data/office --set eval.max_examples=none --set eval.ks=5,10,20

An unknown key fails with the list of valid keys; a value that does not parse
as the field's type (or is not one of a ``Literal``'s choices) names the key,
the type and the value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.machinery
import importlib.util
import inspect
import json
import math
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from genrec.console import MAX_SEED
from genrec.models import ModelConfig
from genrec.run_files import CONFIG_FORMAT_VERSION, damaged_run_file, resolve_score_normalization
from genrec.split import SUBSET_RULES
from training.losses import LossConfig

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "EvalConfig",
    "ModelSpec",
    "OptimizerConfig",
    "RLConfig",
    "SyntheticDataConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_json",
    "config_to_json",
    "flat_settings",
    "load_config_file",
    "override_keys",
]

ModelPreset = Literal["tiny", "t5_small_rec", "llama_small_rec"]
ComputeDtype = Literal["float32", "bfloat16"]
ScheduleKind = Literal["cosine", "linear", "constant"]


# ---------------------------------------------------------------------------
# The config dataclasses
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SyntheticDataConfig:
    """Arguments of ``genrec.synthetic.make_synthetic_dataset`` (used when ``data_dir`` is None)."""

    num_items: int = 2000
    num_users: int = 3000
    num_levels: int = 3
    codebook_size: int = 16
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the examples come from.

    Attributes:
      data_dir: directory with ``NAME.inter.json`` + ``NAME.index.rq-kmeans.json``
        (docs/data.md); None trains on the built-in synthetic dataset.
      name: dataset file stem; inferred when the directory holds one dataset.
      max_history: most recent history items per example (the paper: 20).
      synthetic: the synthetic dataset's parameters (only when ``data_dir`` is None).
    """

    data_dir: str | None = None
    name: str | None = None
    max_history: int = 20
    synthetic: SyntheticDataConfig = SyntheticDataConfig()


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model preset of ``genrec.models.ModelConfig`` plus overrides.

    ``vocab_size`` and ``num_levels`` come from the data; every ``None`` field
    keeps the preset's value.

    Attributes:
      preset: ``"tiny" | "t5_small_rec" | "llama_small_rec"``.
      arch: for ``"tiny"`` only: ``"encoder_decoder"`` (default) or ``"decoder_only"``.
      dtype: compute dtype; parameters and optimizer state stay float32.
      fuse_qkv_projections: ``ModelConfig.fuse_qkv_projections`` (same
        parameters, one matmul for an attention input's projections).
      attention_dropout, ffn_dropout, attention_logit_scale, init: the Hugging
        Face T5 options of ``ModelConfig`` (T5 presets only; docs/models.md).
    """

    preset: ModelPreset = "t5_small_rec"
    arch: Literal["encoder_decoder", "decoder_only"] | None = None
    dtype: ComputeDtype = "float32"
    d_model: int | None = None
    num_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    num_encoder_layers: int | None = None
    num_decoder_layers: int | None = None
    dropout_rate: float | None = None
    ffn_activation: Literal["geglu", "swiglu", "relu"] | None = None
    tie_embeddings: bool | None = None
    fuse_qkv_projections: bool | None = None
    attention_dropout: float | None = None
    ffn_dropout: float | None = None
    attention_logit_scale: Literal["inv_sqrt_d", "unscaled"] | None = None
    init: Literal["default", "hf_t5"] | None = None

    def build(self, vocab_size: int, num_levels: int, max_history: int) -> ModelConfig:
        """The ``ModelConfig`` for a vocabulary and a history length (``max_history`` items)."""
        overrides: dict[str, Any] = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in ("preset", "arch", "dtype") and getattr(self, field.name) is not None
        }
        overrides["dtype"] = self.dtype
        if self.preset == "tiny":
            config = ModelConfig.tiny(vocab_size, num_levels, arch=self.arch or "encoder_decoder", **overrides)
        else:
            preset_arch = "encoder_decoder" if self.preset == "t5_small_rec" else "decoder_only"
            if self.arch is not None and self.arch != preset_arch:
                raise ValueError(
                    f"model.arch={self.arch!r} contradicts model.preset={self.preset!r} ({preset_arch}); "
                    "arch only selects the family of the 'tiny' preset"
                )
            config = getattr(ModelConfig, self.preset)(vocab_size, num_levels, **overrides)
        history_tokens = max_history * num_levels
        if history_tokens > config.max_history_tokens:
            config = dataclasses.replace(config, max_history_tokens=history_tokens)
        return config


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with linear warmup, a decay schedule and global-norm clipping (training/optim.py).

    Attributes:
      learning_rate: peak learning rate, reached after the warmup.
      weight_decay: decoupled weight decay, applied to matrices and embeddings
        only (not to 1-D norm scales, as Hugging Face's Trainer does for T5).
      warmup_fraction: share of all training steps spent warming up linearly from 0.
      schedule: decay after the warmup: ``"cosine"`` or ``"linear"`` to
        ``end_learning_rate`` at the last step, or ``"constant"``.
      end_learning_rate: learning rate at the last step (cosine / linear).
      grad_clip_norm: clip gradients to this global norm; None disables.
      b1, b2, eps: Adam moments (Hugging Face / PyTorch AdamW defaults).
      max_consecutive_nonfinite: a step with a non-finite gradient is skipped
        (and counted); this many in a row stops training with an error.
    """

    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.01
    schedule: ScheduleKind = "cosine"
    end_learning_rate: float = 0.0
    grad_clip_norm: float | None = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    max_consecutive_nonfinite: int = 100


# Validation metric name of the mean token cross-entropy (lower is better).
VALID_CE = "valid_ce"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Constrained-beam-search evaluation (``training.evaluate.evaluate_split``).

    Attributes:
      num_beams: beam width (the paper: 20).
      batch_size: users decoded per call.
      max_examples: validation examples per evaluation, for speed; None
        uses all. The final test evaluation always uses all.
      subset: which ``max_examples`` validation examples
        (``genrec.split.subset_examples``): ``"spread"``, evenly spaced over
        all users, or ``"first"``, the leading ones. The first users of a
        dataset file need not be typical, which biases checkpoint selection
        (docs/results.md, "Beauty's first 5,000 validation users are not a
        sample of the rest").
      ks: cut-offs of Recall@k / NDCG@k.
      score_normalization: softmax support of the beam scores (see
        ``constrained.beam_search``): ``"vocab"``, ``"trie"`` (valid children
        only), or ``"auto"``: ``"trie"`` for a model trained with the ``msl``
        loss (which only ever normalised over valid children), else ``"vocab"``.
        An RL run uses its start's (``training.rl.with_start_normalization``).
      selection_metric: what picks the best checkpoint and drives early
        stopping: ``"recall@k"`` / ``"ndcg@k"`` of the constrained beam search
        (higher is better; ``k`` must be in ``ks``), or ``"valid_ce"``, the
        mean token cross-entropy of the validation targets (lower is better;
        the APAO reference code keeps the checkpoint of lowest validation loss).
    """

    num_beams: int = 20
    batch_size: int = 256
    max_examples: int | None = None
    subset: Literal["spread", "first"] = "spread"
    ks: tuple[int, ...] = (5, 10, 20)
    score_normalization: Literal["auto", "vocab", "trie"] = "auto"
    selection_metric: str = "ndcg@10"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpoints under ``workdir/checkpoints`` (periodic) and ``workdir/best``.

    Attributes:
      every_steps: save every this many steps; None saves at every evaluation.
        The last step is always saved.
      keep: periodic checkpoints kept (the best one is kept separately).
      async_save: write checkpoints in a background thread while training continues.
    """

    every_steps: int | None = None
    keep: int = 3
    async_save: bool = True


RolloutKind = Literal["beam", "sample", "ved"]
SequenceRewardKind = Literal["exact", "prefix_credit", "ranking"]


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """The V-STAR reinforcement-learning stage (``genrec rl``, docs/rl.md); unused by ``genrec train``.

    The RL run starts from a supervised workdir's checkpoint and keeps its data,
    model and evaluation settings (``TrainConfig.data`` / ``model`` / ``eval``);
    everything specific to RL is here.

    Attributes:
      rollouts: how the ``num_rollouts`` SIDs of a request are drawn: ``"beam"``
        (the top of a constrained beam search), ``"sample"`` (constrained
        sampling) or ``"ved"`` (value-guided decoding, V-STAR).
      num_rollouts: ``G``, rollouts per request.
      budget: rollout budget in backbone forward tokens (docs/rl.md, "Budget");
        None = one constrained beam search of width ``num_rollouts``,
        ``1 + (L - 1) * num_rollouts``, for every arm. VED's budget is at most the
        catalogue trie's prefixes shorter than L (each is evaluated at most once) or the
        default, whichever is larger; ``genrec rl`` refuses more.
      temperature, top_k, top_p: constrained sampling (``rollouts="sample"`` only: VED draws children
        from the policy itself and beam rollouts take the beam search's top: neither reads them).
      ved_lambda, ved_beta: VED's entropy weight and exploration constant.
      ved_init_beam_width: width of the beam search that seeds VED's tree.
      ved_nodes_per_iteration: nodes VED expands per batched model call.
      reward: sequence reward of a rollout: ``"exact"`` (1 for the target item),
        ``"prefix_credit"`` (the weight of the deepest matched level) or
        ``"ranking"`` (exact, plus a rank-discounted penalty on the misses of a
        group that holds the target: ``training.rl_losses.sequence_rewards``).
      level_weights: per-level rewards ``w_1..w_L`` of the value target; None
        = ``training.rl_losses.default_level_weights(L)``.
      gamma: TD discount of the value target.
      grpo_weight, sibling_weight, value_weight, kl_weight: weights of the
        four loss terms (0 turns a term off; the value head is trained and
        used only when ``value_weight > 0`` or ``rollouts="ved"``).
      kl_estimator: the KL to the supervised model that is penalised: ``"exact"`` (over each visited
        prefix's valid children; the default) or ``"k3"`` (on the chosen codes, the paper's, an estimate of
        the KL only for rollouts drawn from the policy: not VED's, docs/rl.md); both are logged.
      clip_eps: PPO clip range of the policy ratio.
      inner_epochs: gradient steps on each batch of rollouts (1: the ratio is 1, the clip inactive).
      value_grad_to_trunk: the value loss's gradient reaches the shared trunk.
      init_checkpoint: which checkpoint of the supervised workdir to start from.
      batch_size: requests per RL step (global; split over the devices).
      num_steps: RL optimizer steps.
      eval_every: validation (constrained beam search, ``TrainConfig.eval``) every this many steps, step 0
        (the start) included; 0 = never, not even step 0: no selection, the final weights are reported and served.
      optimizer: the RL stage's own optimizer (a small, constant learning rate by default).
    """

    rollouts: RolloutKind = "ved"
    num_rollouts: int = 16
    budget: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    ved_lambda: float = 0.1
    ved_beta: float = 1.0
    ved_init_beam_width: int = 4
    ved_nodes_per_iteration: int = 8
    reward: SequenceRewardKind = "exact"
    level_weights: tuple[float, ...] | None = None
    gamma: float = 0.99
    grpo_weight: float = 1.0
    sibling_weight: float = 1.0
    value_weight: float = 1.0
    kl_weight: float = 1e-3
    kl_estimator: Literal["k3", "exact"] = "exact"
    clip_eps: float = 0.2
    inner_epochs: int = 1
    value_grad_to_trunk: bool = True
    init_checkpoint: Literal["best", "latest"] = "best"
    batch_size: int = 64
    num_steps: int = 1000
    eval_every: int = 100
    optimizer: OptimizerConfig = OptimizerConfig(
        learning_rate=1e-5, warmup_fraction=0.0, schedule="constant", weight_decay=0.0)

    def __post_init__(self):
        for key in ("num_rollouts", "ved_init_beam_width", "ved_nodes_per_iteration", "inner_epochs",
                    "batch_size", "num_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"TrainConfig.rl.{key}={getattr(self, key)} must be >= 1")
        for key in ("budget", "top_k"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"TrainConfig.rl.{key}={getattr(self, key)} must be >= 1 or None")
        if self.eval_every < 0:
            raise ValueError(f"TrainConfig.rl.eval_every={self.eval_every} must be >= 0 (0 = never)")
        if self.level_weights is not None and (
                not self.level_weights or not all(math.isfinite(w) and w >= 0 for w in self.level_weights)):
            raise ValueError(f"TrainConfig.rl.level_weights={self.level_weights} must be finite non-negative weights")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on.

    Attributes:
      data, model, loss, optimizer, eval, checkpoint: see their classes.
      batch_size: global batch (split evenly over ``num_devices``).
      num_epochs: passes over the training examples; ignored if ``num_steps`` is set.
      num_steps: total optimizer steps; overrides ``num_epochs``.
      eval_every: evaluate on the validation split every this many steps;
        None = once per epoch; 0 = never (no best checkpoint, no early stopping).
      early_stopping_patience: stop after this many evaluations without a new
        best validation ``eval.selection_metric``; None never stops early.
      seed: model init, data order, dropout and negative sampling.
      log_every: print a progress line (and a metrics.jsonl record) every this many steps.
      num_devices: data-parallel devices (the first ones of ``jax.devices()``);
        None uses all.
      rl: the RL stage (``genrec rl`` only; ``genrec train`` ignores it).
    """

    data: DataConfig = DataConfig()
    model: ModelSpec = ModelSpec()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    batch_size: int = 1024
    num_epochs: int = 200
    num_steps: int | None = None
    eval_every: int | None = None
    early_stopping_patience: int | None = 20
    seed: int = 42
    log_every: int = 50
    num_devices: int | None = None
    rl: RLConfig = RLConfig()

    def __post_init__(self):
        positive = {
            "batch_size": self.batch_size,
            "num_epochs": self.num_epochs,
            "log_every": self.log_every,
            "data.max_history": self.data.max_history,
            "eval.num_beams": self.eval.num_beams,
            "eval.batch_size": self.eval.batch_size,
            "checkpoint.keep": self.checkpoint.keep,
            "optimizer.max_consecutive_nonfinite": self.optimizer.max_consecutive_nonfinite,
        }
        optional_positive = {
            "num_steps": self.num_steps,
            "early_stopping_patience": self.early_stopping_patience,
            "num_devices": self.num_devices,
            "eval.max_examples": self.eval.max_examples,
            "checkpoint.every_steps": self.checkpoint.every_steps,
        }
        for key, value in {**positive, **optional_positive}.items():
            if value is not None and value < 1:
                raise ValueError(f"TrainConfig.{key}={value} must be >= 1")
        if self.eval_every is not None and self.eval_every < 0:
            raise ValueError(f"TrainConfig.eval_every={self.eval_every} must be >= 0 (0 = never) or None")
        for key, seed in (("seed", self.seed), ("data.synthetic.seed", self.data.synthetic.seed)):
            if not 0 <= seed <= MAX_SEED:  # NumPy's generators take no other: a crash after the model was built
                raise ValueError(f"TrainConfig.{key}={seed} must be in [0, {MAX_SEED}]")
        if self.data.data_dir is None and self.data.name is not None:
            # Silently ignored before: the run trained on the built-in synthetic data.
            raise ValueError(f"TrainConfig.data.name={self.data.name!r} names a dataset in data.data_dir, which is "
                             "not set: set data.data_dir=DIR too, or leave data.name out for the built-in "
                             "synthetic data")
        if not self.eval.ks or min(self.eval.ks) < 1:
            raise ValueError(f"TrainConfig.eval.ks={self.eval.ks} must be non-empty positive cut-offs")
        if max(self.eval.ks) > self.eval.num_beams:
            raise ValueError(
                f"TrainConfig.eval.ks={self.eval.ks} has a cut-off above eval.num_beams={self.eval.num_beams} "
                f"(Recall@{max(self.eval.ks)} needs that many beams); raise eval.num_beams or set eval.ks"
            )
        if self.eval.subset not in SUBSET_RULES:
            raise ValueError(f"TrainConfig.eval.subset={self.eval.subset!r}; expected one of {SUBSET_RULES}")
        metric = self.eval.selection_metric
        if metric != VALID_CE:
            name, _, k = metric.partition("@")
            if name not in ("recall", "ndcg") or not k.isdigit():
                raise ValueError(
                    f"TrainConfig.eval.selection_metric={metric!r}; expected 'recall@k', 'ndcg@k' or '{VALID_CE}'"
                )
            if int(k) not in self.eval.ks:
                raise ValueError(
                    f"TrainConfig.eval.ks={self.eval.ks} must contain {k}: model selection and early "
                    f"stopping use validation {metric}"
                )
        _check_numeric_ranges(self)


# Allowed ranges of the float settings, as (low, high, low inclusive, high inclusive);
# every other float setting must just be finite. NaN fails every comparison, so
# a range check written as "reject if out of range" would let it through.
_FLOAT_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "optimizer.learning_rate": (0.0, math.inf, False, False),
    "optimizer.weight_decay": (0.0, math.inf, True, False),
    "optimizer.warmup_fraction": (0.0, 1.0, True, False),
    "optimizer.end_learning_rate": (0.0, math.inf, True, False),
    "optimizer.grad_clip_norm": (0.0, math.inf, False, False),
    "optimizer.b1": (0.0, 1.0, True, False),
    "optimizer.b2": (0.0, 1.0, True, False),
    "optimizer.eps": (0.0, math.inf, False, False),
    "model.dropout_rate": (0.0, 1.0, True, False),
    "model.attention_dropout": (0.0, 1.0, True, False),
    "model.ffn_dropout": (0.0, 1.0, True, False),
    "rl.temperature": (0.0, math.inf, False, False),
    "rl.top_p": (0.0, 1.0, False, True),
    "rl.ved_lambda": (0.0, math.inf, True, False),
    "rl.ved_beta": (0.0, math.inf, True, False),
    "rl.gamma": (0.0, 1.0, True, True),
    "rl.grpo_weight": (0.0, math.inf, True, False),
    "rl.sibling_weight": (0.0, math.inf, True, False),
    "rl.value_weight": (0.0, math.inf, True, False),
    "rl.kl_weight": (0.0, math.inf, True, False),
    "rl.clip_eps": (0.0, 1.0, False, False),
}


def flat_settings(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf setting of a config tree (e.g. a :class:`TrainConfig`), by dotted key."""
    flat = {}
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if dataclasses.is_dataclass(value):
            flat.update(flat_settings(value, f"{prefix}{field.name}."))
        else:
            flat[f"{prefix}{field.name}"] = value
    return flat


def _check_numeric_ranges(config: "TrainConfig") -> None:
    """One ValueError naming the key, unless every float setting is finite and in its range."""
    floats = {key: value for key, value in flat_settings(config).items() if isinstance(value, float)}
    for key, value in floats.items():
        if not math.isfinite(value):
            raise ValueError(f"TrainConfig.{key}={value} must be a finite number")
        range_key = key.removeprefix("rl.") if key.startswith("rl.optimizer.") else key
        if range_key in _FLOAT_RANGES:
            low, high, low_closed, high_closed = _FLOAT_RANGES[range_key]
            above = value >= low if low_closed else value > low
            below = value <= high if high_closed else value < high
            if not (above and below):
                interval = f"{'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"
                raise ValueError(f"TrainConfig.{key}={value} must be in {interval}")


# ---------------------------------------------------------------------------
# Config files
# ---------------------------------------------------------------------------


def score_normalization(config: TrainConfig) -> str:
    """The beam-score normalisation a run's model is evaluated and served with.

    ``config.eval.score_normalization`` unless it is ``"auto"``, which gives
    ``"trie"`` for the ``msl`` loss and ``"vocab"`` otherwise
    (``genrec.run_files.resolve_score_normalization``, which serving applies to config.json).
    """
    return resolve_score_normalization(config.eval.score_normalization, config.loss.kind)


_REPOSITORY = Path(__file__).resolve().parents[1]  # holds tpu_configs/ (the shipped run configs)


def load_config_file(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Imports a config file, calls its ``get_config`` and applies ``overrides``.

    ``path`` is ``FILE`` or ``FILE:ARG`` (big_vision's convention): with an
    argument the file's ``get_config(ARG)`` gets the text after the colon, e.g.
    ``tpu_configs/office_t5.py:loss=apao,dtype=bfloat16`` (the file parses it);
    without one, ``get_config()``. The files of one folder load as one package,
    so a config imports its shared pieces with ``from . import common``.
    A relative ``FILE`` missing from the current directory is looked up in the
    repository, so ``tpu_configs/...`` names a shipped config from anywhere.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not a ``.py`` file, has no ``get_config``, it does not return a
        :class:`TrainConfig`, or it rejects ``ARG`` (the message names the file);
        or an override is invalid (:func:`apply_overrides`).
    """
    path, arg = _split_config_arg(path)
    if not path.is_file() and not path.is_absolute() and (_REPOSITORY / path).is_file():
        path = _REPOSITORY / path  # a shipped config (tpu_configs/...) named from another directory
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found (configs live in tpu_configs/)")
    module = _import_config_module(path)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ValueError(f"{path}: a config file must define get_config() -> TrainConfig")
    if arg and not inspect.signature(get_config).parameters:
        raise ValueError(f"{path}: get_config() takes no argument; drop ':{arg}'")
    try:
        config = get_config(arg) if arg else get_config()
    except ValueError as error:
        raise ValueError(f"{path}{':' + arg if arg else ''}: {error}") from error
    if not isinstance(config, TrainConfig):
        raise ValueError(f"{path}: get_config() returned {type(config).__name__}, expected TrainConfig")
    return apply_overrides(config, overrides)


def _split_config_arg(spec: str | Path) -> tuple[Path, str]:
    """``"FILE:ARG"`` -> ``(Path(FILE), "ARG")``; a spec naming an existing file (even with a
    colon in its name) or without a colon has the argument ``""``."""
    text = str(spec)
    if ":" in text and not Path(text).is_file() and not (_REPOSITORY / text).is_file():
        file_text, _, arg = text.rpartition(":")
        return Path(file_text), arg
    return Path(text), ""


def _import_config_module(path: Path) -> types.ModuleType:
    """``path`` executed as a module of a package made of its folder, so that its
    relative imports (``from . import common``) find its sibling files wherever
    genrec is installed. One package per folder; a sibling is imported once."""
    folder = path.resolve().parent
    package = "genrec_configs_" + hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    if package not in sys.modules:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[package] = importlib.util.module_from_spec(spec)
    spec = importlib.util.spec_from_file_location(f"{package}.{path.stem}", path)
    if spec is None or path.suffix != ".py":  # README.md: no loader (a spec of None) for a file not named .py
        raise ValueError(f"{path}: not a Python config file; give a .py file that defines get_config() -> "
                         "TrainConfig, e.g. tpu_configs/cpu_smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------


def override_keys(config_class: type = TrainConfig, prefix: str = "") -> list[str]:
    """Every settable dotted key of ``config_class`` (nested dataclasses expanded)."""
    keys = []
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(override_keys(hint, f"{prefix}{field.name}."))
        else:
            keys.append(f"{prefix}{field.name}")
    return keys


def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """``config`` with each ``"dotted.key=value"`` of ``overrides`` applied, in order.

    Values are parsed against the field's annotated type: ``int``, ``float``,
    ``bool`` (true/false/1/0/yes/no), ``str``, ``Literal[...]`` (one of the
    choices), ``X | None`` (``none`` / ``null`` give None) and ``tuple[int, ...]``
    (comma-separated). The result is validated like any new config.

    Raises:
      ValueError: malformed override, unknown key (the message lists the valid
        keys), or a value that does not parse as the field's type.
    """
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {override!r} must look like key=value, e.g. optimizer.learning_rate=1e-3")
        config = _replace_path(config, key.split("."), text.strip(), key)
    # Checks that tie fields together (eval.ks vs eval.num_beams, ...) run once, on
    # the final config, so the order of the overrides does not matter.
    return _validated(config)


def _unvalidated_replace(node: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` without ``__post_init__`` (see :func:`_validated`)."""
    new = object.__new__(type(node))
    for field in dataclasses.fields(node):
        object.__setattr__(new, field.name, changes.get(field.name, getattr(node, field.name)))
    return new


def _validated(node: Any) -> Any:
    """``node`` rebuilt through its constructor at every level, so every ``__post_init__`` check runs."""
    return type(node)(**{
        field.name: _validated(value) if dataclasses.is_dataclass(value := getattr(node, field.name)) else value
        for field in dataclasses.fields(node)
    })


def _replace_path(node: Any, path: list[str], text: str, full_key: str) -> Any:
    fields = {f.name for f in dataclasses.fields(node)}
    name = path[0]
    if name not in fields:
        valid = "\n  ".join(override_keys(TrainConfig))
        raise ValueError(f"unknown config key {full_key!r}; valid keys are:\n  {valid}")
    hint = typing.get_type_hints(type(node))[name]
    if len(path) == 1:
        if dataclasses.is_dataclass(hint):
            sub_keys = ", ".join(override_keys(hint, f"{full_key}."))
            raise ValueError(f"config key {full_key!r} is a group; set one of its fields: {sub_keys}")
        value = _parse_value(text, hint, full_key)
    else:
        if not dataclasses.is_dataclass(hint):
            valid = "\n  ".join(override_keys(TrainConfig))
            raise ValueError(f"unknown config key {full_key!r} ({name!r} has no fields); valid keys are:\n  {valid}")
        value = _replace_path(getattr(node, name), path[1:], text, full_key)
    return _unvalidated_replace(node, **{name: value})


def _parse_value(text: str, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(text, arg, key)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError("; ".join(errors) + (" (or 'none')" if type(None) in args else ""))
    if origin is Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ValueError(f"config key {key!r}: {text!r} is not one of {list(args)}")
    if hint is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"config key {key!r} is a bool; got {text!r} (use true or false)")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"config key {key!r} is an int; got {text!r}") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"config key {key!r} is a float; got {text!r}") from None
    if hint is str:
        return text
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        items = [item.strip() for item in text.split(",") if item.strip()]
        return tuple(_parse_value(item, args[0], key) for item in items)
    raise ValueError(f"config key {key!r} has type {hint!r}, which --set cannot parse")


# ---------------------------------------------------------------------------
# JSON (workdir/config.json)
# ---------------------------------------------------------------------------


def config_to_json(config: TrainConfig) -> dict[str, Any]:
    """A JSON-able dict of ``config`` (tuples become lists)."""
    return {"format_version": CONFIG_FORMAT_VERSION, "train_config": dataclasses.asdict(config)}


# The train_config sections that every config.json has held since format_version 1
# (a section added later, like rl, may be absent: it takes its defaults).
_FORMAT_1_SECTIONS = ("data", "model", "loss", "optimizer", "eval", "checkpoint")


def config_from_json(payload: dict[str, Any], source: str = "<json>") -> TrainConfig:
    """Inverse of :func:`config_to_json`.

    Raises:
      ValueError: unsupported ``format_version``, unknown fields, a section
        missing or not a JSON object, or a value the config refuses: one line naming ``source``.
    """
    if not isinstance(payload, dict):
        raise damaged_run_file(source, f"holds a JSON {type(payload).__name__}, not an object")
    if payload.get("format_version") != CONFIG_FORMAT_VERSION:
        raise ValueError(
            f"{source}: config format_version {payload.get('format_version')!r} is not "
            f"{CONFIG_FORMAT_VERSION}; it was written by another genrec version"
        )
    if not isinstance(payload.get("train_config"), dict):
        raise damaged_run_file(source, "train_config is missing or not a JSON object")
    train_config = dict(payload["train_config"])
    missing = [f"train_config.{name}" for name in _FORMAT_1_SECTIONS if name not in train_config]
    if missing:
        raise damaged_run_file(source, f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    if isinstance(train_config.get("eval"), dict) and "subset" not in train_config["eval"]:
        # Written before eval.subset existed, when the leading slice was the only
        # rule: a resumed run keeps validating on the examples it started with.
        train_config["eval"] = {**train_config["eval"], "subset": "first"}
    try:
        return _from_dict(TrainConfig, train_config, source)
    except (TypeError, ValueError) as error:  # a value of the wrong type or out of range
        if str(error).startswith(source):
            raise
        raise damaged_run_file(source, f"a train_config value is refused ({error})") from error


def _from_dict(cls: type, values: dict[str, Any], source: str, where: str = "train_config") -> Any:
    if not isinstance(values, dict):
        raise damaged_run_file(source, f"{where} is a JSON {type(values).__name__}, not an object")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise damaged_run_file(source, f"unknown {cls.__name__} fields {sorted(unknown)} in {where}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _from_dict(hint, value, source, f"{where}.{name}")
        elif not _json_fits(value, hint):
            raise damaged_run_file(source, f"{where}.{name} is {json.dumps(value)}, not {_json_type_name(hint)}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _json_fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value is one of a config field's type (an int is a float; a hint not known here fits)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_json_fits(value, arg) for arg in args)
    if origin is Literal:
        return value in args and type(value) in {type(arg) for arg in args}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return isinstance(value, (list, tuple)) and all(_json_fits(item, args[0]) for item in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _json_type_name(hint: Any) -> str:
    """A config field's type as its JSON reads (``"a number or null"``, ``"one of ['ce', 'msl']"``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_json_type_name(arg) for arg in args)
    if origin is Literal:
        return f"one of {list(args)}"
    if origin is tuple:
        return f"a list of {_json_type_name(args[0])}"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))

