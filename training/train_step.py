"""The one jitted train step, and the data-parallel layout it runs under.

Where it sits: data -> model -> loss -> **train step** -> train loop
(training/train.py). Every loss kind goes through this one step; the only
per-kind code is how the candidates are built and what the loss needs:

* ``ce`` / ``apao_pointwise``: candidates = the target SID ``[B, 1, L]``;
* ``msl``: same, plus ``constrained.masks.valid_next_token_mask`` of the
  targets (computed on device from the catalogue trie);
* ``apao_pairwise``: candidates = target + ``neg_k`` uniform negative items
  ``[B, 1 + neg_k, L]`` (``training.apao.sample_negatives``, fresh every step),
  their tokens gathered from the catalogue on device.

The model encodes each history once and decodes each candidate on top of
that encoding. With ``LossConfig.share_bos_position`` (not the default),
``apao_pairwise`` also decodes the BOS position (which depends on the history
only) once per example and broadcasts it to the ``1 + neg_k`` candidates
(``score_candidates``), so each candidate costs ``L - 1`` decoder positions,
not ``L``.
``training.objective.training_objective`` turns the log-probs into the loss.

Data parallelism: a 1-D ``jax.sharding.Mesh`` with axis ``"data"``; the batch
is sharded along its first axis, parameters, optimizer state and the catalogue
are replicated. The step is written for the global batch (means over all real
rows), so XLA's partitioner inserts the gradient all-reduce and the result
equals the single-device step up to float reassociation (tested on 8 fake CPU
devices). Multi-host: each process feeds its slice of the global batch
(:func:`shard_batch`); untested beyond one host.

Randomness: the step's ``rng`` (``fold_in(seed key, step)``, a pure function of
the step) is split into the dropout key, which reseeds every dropout stream of
the model, and the negative-sampling key, so a resumed run draws exactly what
the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from constrained.index import DeviceIndex
from training.apao import sample_negatives
from training.losses import LossConfig, token_log_probs
from training.objective import training_objective
from training.optim import nonfinite_counts
from training.prefix_counts import count_distinct_prefixes

__all__ = [
    "Catalogue",
    "DATA_AXIS",
    "TrainStepFn",
    "compute_loss",
    "make_catalogue",
    "make_data_mesh",
    "make_train_step",
    "replicate",
    "shard_batch",
    "step_loss_fn",
]

DATA_AXIS = "data"

# The keys of a genrec.batching batch the step reads.
STEP_BATCH_KEYS = ("history_tokens", "history_mask", "target_codes", "target_tokens", "target_items", "example_mask")

Batch = dict[str, jax.Array]
TrainStepFn = Callable[..., tuple[nnx.State, Any, dict[str, jax.Array]]]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Catalogue:
    """What the step needs to know about all items (replicated on every device).

    Attributes:
      sid_tokens: ``int32[num_items, L]`` model token ids of every item's SID
        (negatives' candidates for ``apao_pairwise``).
      num_distinct_prefixes: ``int32[L]``, distinct length-``t`` prefixes of
        the catalogue (``apao_pairwise``'s ``c_t``).
      trie: the catalogue trie on device (model-token offsets), for ``msl``'s
        valid-next-token masks; None for other kinds.
    """

    sid_tokens: jax.Array
    num_distinct_prefixes: jax.Array
    trie: DeviceIndex | None = None

    @property
    def num_items(self) -> int:
        return int(self.sid_tokens.shape[0])


def make_catalogue(sid_codes: np.ndarray, vocab, loss_config: LossConfig) -> Catalogue:
    """Builds the :class:`Catalogue` of ``sid_codes: int[num_items, L]`` (host NumPy -> device).

    The ``msl`` trie is built over the unique SIDs (items sharing a SID share
    its valid continuations).
    """
    sid_codes = np.asarray(sid_codes)
    trie = None
    if loss_config.kind == "msl":
        from constrained import build_index  # only MSL needs the trie

        trie = build_index(
            np.unique(sid_codes, axis=0),
            codebook_sizes=vocab.codebook_sizes,
            token_offsets=vocab.level_offsets,
        ).to_device()
    return Catalogue(
        sid_tokens=jnp.asarray(vocab.codes_to_tokens(sid_codes)),
        num_distinct_prefixes=jnp.asarray(count_distinct_prefixes(sid_codes), jnp.int32),
        trie=trie,
    )


# ---------------------------------------------------------------------------
# Loss of one batch
# ---------------------------------------------------------------------------


def compute_loss(
    model: nnx.Module,
    batch: Batch,
    catalogue: Catalogue,
    negatives_rng: jax.Array,
    loss_config: LossConfig,
    prior_prefix_weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Training loss of ``batch`` under ``model`` (in training mode) and the loss's aux dict.

    Args:
      model: a genrec recommender; dropout is active (``deterministic=False``).
      batch: ``genrec.batching`` arrays (``STEP_BATCH_KEYS``), global batch ``B``.
      catalogue: see :class:`Catalogue`.
      negatives_rng: key for ``apao_pairwise``'s negatives.
      loss_config: the objective (static).
      prior_prefix_weights: ``[P]`` carried adaptive weights, with
        ``loss_config.running_weights`` (see :class:`RunningWeightsState`).

    Returns:
      ``(loss, aux)`` of ``training.objective.training_objective``.
    """
    target_tokens = batch["target_tokens"]  # [B, L]
    example_mask = batch["example_mask"]  # [B]
    vocab_size = model.config.vocab_size
    kwargs: dict[str, Any] = {}
    pairwise = loss_config.kind == "apao_pairwise"
    if pairwise:
        neg_items = sample_negatives(
            negatives_rng, catalogue.num_items, batch["target_items"], loss_config.neg_k
        )  # [B, K]
        neg_tokens = jnp.take(catalogue.sid_tokens, neg_items, axis=0)  # [B, K, L]
        candidates = jnp.concatenate([target_tokens[:, None], neg_tokens], axis=1)  # [B, 1+K, L]
        kwargs.update(neg_tokens=neg_tokens, num_distinct_prefixes=catalogue.num_distinct_prefixes)
    else:
        candidates = target_tokens[:, None]  # [B, 1, L]
    if pairwise and loss_config.share_bos_position:
        # One encoding per history and one decode of the shared BOS position,
        # shared by every candidate; positions 1..L-1 per candidate.
        shared = model.encode(batch["history_tokens"], batch["history_mask"], deterministic=False)
        first_logits, rest_logits = model.score_candidates(shared, candidates, deterministic=False)
        pos_logits = jnp.concatenate([first_logits[:, None], rest_logits[:, 0]], axis=1)  # [B, L, V]
        first_logprobs = jax.nn.log_softmax(first_logits.astype(jnp.float32) / loss_config.ce_tau, axis=-1)
        neg_first = jnp.take_along_axis(first_logprobs, neg_tokens[:, :, 0], axis=1)  # [B, K]
        neg_rest = token_log_probs(rest_logits[:, 1:], neg_tokens[:, :, 1:], loss_config.ce_tau)  # [B, K, L-1]
        kwargs["neg_token_logprobs"] = jnp.concatenate([neg_first[:, :, None], neg_rest], axis=2)  # [B, K, L]
    else:
        # One encoding per history (model(...) = encode + score_targets); every
        # candidate decoded in full, with its own dropout masks.
        logits = model(batch["history_tokens"], batch["history_mask"], candidates, deterministic=False)  # [B, C, L, V]
        pos_logits = logits[:, 0]  # [B, L, V]
        if pairwise:
            kwargs["neg_logits"] = logits[:, 1:]  # [B, K, L, V]
    if loss_config.kind == "msl":
        if catalogue.trie is None:
            raise ValueError("loss.kind='msl' needs a Catalogue with a trie (make_catalogue builds it)")
        from constrained.masks import valid_next_token_mask

        kwargs["valid_next_mask"] = valid_next_token_mask(catalogue.trie, batch["target_codes"], vocab_size)
    return training_objective(pos_logits, target_tokens, config=loss_config, example_mask=example_mask,
                              prior_prefix_weights=prior_prefix_weights, **kwargs)


class RunningWeightsState(NamedTuple):
    """Optimizer state of a run with ``LossConfig.running_weights``: the optax
    state plus the adaptive prefix weights carried from step to step (a pytree,
    so checkpoints and replication treat it like any optimizer state)."""

    optimizer: Any
    prefix_weights: jax.Array  # [P] float32, non-negative, sums to 1


def init_opt_state(
    optimizer: optax.GradientTransformation, params: nnx.State, loss_config: LossConfig, sid_length: int
) -> Any:
    """``optimizer.init(params)``, wrapped in :class:`RunningWeightsState` with
    uniform weights over the ``P`` prefix lengths when ``loss_config.running_weights``."""
    opt_state = optimizer.init(params)
    if not loss_config.running_weights:
        return opt_state
    num_prefixes = loss_config.resolve_num_prefixes(sid_length)
    return RunningWeightsState(opt_state, jnp.full((num_prefixes,), 1.0 / num_prefixes, jnp.float32))


# ---------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------


def step_loss_fn(
    graphdef: nnx.GraphDef,
    rest: nnx.State,
    batch: Batch,
    rng: jax.Array,
    catalogue: Catalogue,
    loss_config: LossConfig,
    prior_prefix_weights: jax.Array | None = None,
) -> Callable[[nnx.State], tuple[jax.Array, dict[str, jax.Array]]]:
    """The train step's loss as a function of the parameters: ``params -> (loss, aux)``.

    ``rest`` is the model state that is not ``nnx.Param``; ``rng`` the step's
    key, split here into the dropout key (reseeding every dropout stream) and
    the negative-sampling key, as the step does. Differentiating it is the
    step's backward pass (benchmarks time the parts apart with it).
    """
    dropout_rng, negatives_rng = jax.random.split(rng)

    def loss_fn(params: nnx.State) -> tuple[jax.Array, dict[str, jax.Array]]:
        model = nnx.merge(graphdef, params, rest, copy=True)
        # Dropout masks depend on the step's key only (exact resume, no carried RNG state).
        nnx.reseed(model, dropout=dropout_rng)
        return compute_loss(model, batch, catalogue, negatives_rng, loss_config, prior_prefix_weights)

    return loss_fn


def _train_step(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    opt_state: Any,
    batch: Batch,
    rng: jax.Array,
    catalogue: Catalogue,
    *,
    loss_config: LossConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[nnx.State, Any, dict[str, jax.Array]]:
    params, rest = nnx.split_state(state, nnx.Param, ...)
    running = loss_config.running_weights
    inner_state = opt_state.optimizer if running else opt_state
    prior = opt_state.prefix_weights if running else None
    loss_fn = step_loss_fn(graphdef, rest, batch, rng, catalogue, loss_config, prior)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, inner_state = optimizer.update(grads, inner_state, params)
    params = optax.apply_updates(params, updates)
    if running:
        # A skipped step (non-finite gradient) leaves the carried weights as they were.
        weights = jnp.where(inner_state.last_finite, aux["prefix_weights"], prior)
        opt_state = RunningWeightsState(inner_state, weights)
    else:
        opt_state = inner_state
    metrics = {
        **aux,
        "loss": loss,
        "grad_norm": jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads))),
        "update_skipped": ~inner_state.last_finite,
        "num_real_examples": batch["example_mask"].sum(),
        **nonfinite_counts(inner_state),
    }
    return nnx.merge_state(params, rest), opt_state, metrics


def make_train_step(
    loss_config: LossConfig,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    donate: bool = True,
) -> TrainStepFn:
    """The jitted ``step(graphdef, state, opt_state, batch, rng, catalogue) -> (state, opt_state, metrics)``.

    Args:
      loss_config: the objective (baked in as a static value).
      optimizer: from ``training.optim.make_optimizer``.
      mesh: the data mesh (:func:`make_data_mesh`); outputs are replicated on it.
      donate: reuse the input ``state`` / ``opt_state`` buffers for the outputs
        (the inputs are invalid afterwards).

    The step's arguments: ``graphdef`` (static) and ``state`` from
    ``nnx.split(model)``; ``opt_state = init_opt_state(optimizer, params, loss_config, L)`` for
    ``params = nnx.split_state(state, nnx.Param, ...)[0]``; ``batch`` from
    :func:`shard_batch`; ``rng`` a key, ``fold_in(seed key, step)``;
    ``catalogue`` from :func:`make_catalogue` (replicated). ``metrics`` holds
    ``training_objective``'s aux, ``loss``, ``grad_norm``, ``update_skipped``
    (this step's gradient was non-finite and was not applied),
    ``nonfinite_total`` / ``nonfinite_consecutive`` and ``num_real_examples``.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    step = functools.partial(_train_step, loss_config=loss_config, optimizer=optimizer)
    return jax.jit(
        step,
        static_argnums=0,
        donate_argnums=(1, 2) if donate else (),
        out_shardings=(replicated, replicated, replicated),
    )


# ---------------------------------------------------------------------------
# Data-parallel layout
# ---------------------------------------------------------------------------


def make_data_mesh(global_batch_size: int, num_devices: int | None = None) -> Mesh:
    """1-D mesh ``("data",)`` over the first ``num_devices`` devices (all by default).

    Raises:
      ValueError: ``num_devices`` exceeds the available devices, or the global
        batch does not split evenly over them.
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(f"num_devices={num_devices}, but {len(devices)} devices are available ({devices[0].platform})")
    if global_batch_size % num_devices:
        raise ValueError(
            f"batch_size={global_batch_size} does not split evenly over {num_devices} devices; "
            f"use a multiple of {num_devices} "
            f"(e.g. --set batch_size={num_devices * -(-global_batch_size // num_devices)}) "
            f"or set num_devices"
        )
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` placed on every device of ``mesh`` (parameters, optimizer state, catalogue).

    On several processes every process must pass the same values (same seed,
    same data); each one fills its own devices' copies.
    """
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(leaf):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(place(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
        host = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> Batch:
    """The host batch (global, ``[B, ...]`` arrays) sharded along axis 0 over ``mesh``'s ``"data"`` axis.

    Only ``STEP_BATCH_KEYS`` are transferred. On several hosts, every process
    passes the same global batch and contributes the rows of its own devices.
    """
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    arrays = {key: np.asarray(batch[key]) for key in STEP_BATCH_KEYS}
    if jax.process_count() == 1:
        return jax.device_put(arrays, sharding)
    return {
        key: jax.make_array_from_callback(value.shape, sharding, lambda index, value=value: value[index])
        for key, value in arrays.items()
    }
