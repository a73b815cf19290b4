"""The RL stage's value head V(s) on the decoder's states, and the model calls that feed it.

Where it sits: ``model.encode`` -> ``model.decode_hidden`` over ``[BOS, y_1..y_L]``
-> per-position logits (the policy) and final-normed states -> :class:`ValueHead`
-> ``V(s_0) .. V(s_L)``, one value per SID prefix (docs/rl.md, "Model"). The
head's parameters live in their own module, outside the recommender, so a
supervised checkpoint, ``genrec eval`` and the ``Recommender`` never see them.

Choice of head (``shared/vstar-method.md``, decision 2): a per-position MLP,
``RMSNorm -> Linear(D, d_hidden) -> GELU -> Linear(d_hidden, 1)``, not the
paper's CLS token + 2 transformer layers. The decoder state at position ``p``
already attends to the history (cross-attention or the causal prefix) and to
``y_1..y_p``, so it summarises the state ``s_p``; a second attention stack
would add a module with its own masks and caches for VED's node evaluation
for little gain at our model sizes (D = 128). The head's own RMSNorm decouples
its input scale from the trunk's final norm (whose scale the logits share).
Its output layer starts at scale ``1e-2`` with bias ``initial_value``, so
values start at ``initial_value`` (0 by default; the mean reward is another
good choice) up to about 0.01, and the first TD steps do not push large
gradients into the trunk. It computes in float32 whatever the trunk's dtype:
it is a few thousand parameters and regresses small targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genrec.models.base import SIDRecommender
from genrec.models.config import BOS_ID, PAD_ID, ModelConfig
from genrec.models.layers import BeamCache, HistoryCache

# Output layer's initial weight scale, relative to a unit-variance init.
OUTPUT_INIT_SCALE = 1e-2


class ValueHead(nnx.Module):
    """``hidden [..., d_model] -> values float32[...]``: V of the prefix each decoder state reads.

    Attributes:
      value_grad_to_trunk: static; False applies ``stop_gradient`` to the
        hidden states, so the value loss trains the head only (the trunk gets
        the policy's gradient alone). True (default, as in the paper) lets the
        value loss shape the shared trunk too.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        d_hidden: int | None = None,
        value_grad_to_trunk: bool = True,
        initial_value: float = 0.0,
        rngs: nnx.Rngs,
    ):
        """Args:
          config: the recommender's config (its ``d_model``, ``norm_epsilon``, ``param_dtype``).
          d_hidden: width of the MLP; default ``d_model``.
          value_grad_to_trunk: see the class docstring.
          initial_value: the head's output bias at init, so values start near it.
          rngs: parameter initialisation.
        """
        d_hidden = config.d_model if d_hidden is None else d_hidden
        if d_hidden <= 0:
            raise ValueError(f"ValueHead(d_hidden={d_hidden}): the MLP width must be positive.")
        self.value_grad_to_trunk = bool(value_grad_to_trunk)
        dense = dict(dtype=jnp.float32, param_dtype=config.param_dtype, rngs=rngs)
        self.norm = nnx.RMSNorm(config.d_model, epsilon=config.norm_epsilon, **dense)
        self.hidden_layer = nnx.Linear(config.d_model, d_hidden, **dense)
        self.output_layer = nnx.Linear(
            d_hidden, 1,
            kernel_init=jax.nn.initializers.normal(stddev=OUTPUT_INIT_SCALE / np.sqrt(d_hidden)),
            bias_init=jax.nn.initializers.constant(initial_value),
            **dense,
        )

    def __call__(self, hidden: jax.Array) -> jax.Array:
        """hidden: [..., d_model] (any float dtype) -> float32 values [...]."""
        if not self.value_grad_to_trunk:
            hidden = jax.lax.stop_gradient(hidden)
        features = jax.nn.gelu(self.hidden_layer(self.norm(hidden.astype(jnp.float32))))
        return self.output_layer(features)[..., 0]


class PrefixLogitsValues(NamedTuple):
    """What the RL losses read from one decoder pass over complete SIDs.

    Attributes:
      logits: float32[B, G, L, V]; entry ``l`` reads prefix ``s_l`` and predicts level ``l``.
      values: float32[B, G, L + 1]; entry ``p`` is ``V(s_p)``, ``s_0`` the root, ``s_L`` the SID.
    """

    logits: jax.Array
    values: jax.Array


def codes_to_input_tokens(
    sid_codes: jax.Array,
    token_offsets: Sequence[int] | jax.Array,
    prefix_len: jax.Array | None = None,
) -> jax.Array:
    """Decoder inputs ``[BOS, y_1 .. y_L]`` of SID codes: int32[..., L] -> int32[..., L + 1].

    Code ``c`` of level ``l`` becomes token ``c + token_offsets[l]`` (the
    ``SIDVocabulary`` layout). Negative codes (empty rollout slots, VED's
    padding) and, when ``prefix_len int[...]`` is given, every level at or after
    it become ``PAD_ID``: a valid id whose embedding the causal decoder only
    shows to later positions.
    """
    sid_codes = jnp.asarray(sid_codes, jnp.int32)
    offsets = jnp.asarray(token_offsets, jnp.int32)
    num_levels = sid_codes.shape[-1]
    if offsets.shape != (num_levels,):
        raise ValueError(
            f"token_offsets has shape {offsets.shape} but the SID codes have {num_levels} levels;"
            " pass SIDVocabulary.level_offsets of the model's vocabulary."
        )
    real = sid_codes >= 0
    if prefix_len is not None:
        real = real & (jnp.arange(num_levels) < jnp.asarray(prefix_len)[..., None])
    tokens = jnp.where(real, sid_codes + offsets, PAD_ID)
    bos = jnp.full(tokens.shape[:-1] + (1,), BOS_ID, jnp.int32)
    return jnp.concatenate([bos, tokens], axis=-1)


def prefix_values_and_logits(
    model: SIDRecommender,
    value_head: ValueHead,
    shared: HistoryCache,
    sid_codes: jax.Array,
    token_offsets: Sequence[int] | jax.Array,
    *,
    deterministic: bool = True,
) -> PrefixLogitsValues:
    """Policy logits and prefix values of ``G`` SIDs per request in one decoder call.

    Decodes ``[BOS, y_1 .. y_L]`` (``L + 1`` positions): positions ``0..L-1``
    give the logits the policy losses need, positions ``0..L`` the values
    ``V(s_0) .. V(s_L)`` the TD loss needs (docs/rl.md).

    Args:
      model: the recommender (trunk).
      value_head: its :class:`ValueHead`.
      shared: ``model.encode`` of the requests' histories (leaves ``[B, ...]``).
      sid_codes: int32[B, G, L] SID codes (not tokens); ``-1`` in empty slots,
        whose outputs are finite and meaningless.
      token_offsets: int[L], ``SIDVocabulary.level_offsets``.
      deterministic: False applies the trunk's dropout (training).

    Returns:
      :class:`PrefixLogitsValues` ``(logits float32[B, G, L, V], values float32[B, G, L + 1])``.
    """
    input_tokens = codes_to_input_tokens(sid_codes, token_offsets)
    logits, hidden = model.decode_hidden(shared, input_tokens, deterministic=deterministic)
    return PrefixLogitsValues(logits=logits[:, :, :-1], values=value_head(hidden))


def make_node_fn(
    model: SIDRecommender,
    value_head: ValueHead,
    shared: HistoryCache,
    token_offsets: Sequence[int] | jax.Array,
) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """VED's node evaluator (docs/rl.md, "Rollouts") for the requests encoded in ``shared``.

    The returned ``node_fn(prefix_codes int32[B, N, L], prefix_len int32[B, N])``
    decodes ``[BOS, prefix tokens, PAD..]`` (``L + 1`` positions, codes at or
    after ``prefix_len`` ignored, ``-1`` by convention) in one deterministic
    ``decode_hidden`` call and reads position ``prefix_len``, so it returns
    ``(logits float32[B, N, V], values float32[B, N])``: the distribution of the
    level-``prefix_len`` code (meaningless at ``prefix_len = L``) and ``V(prefix)``.
    The decoder is causal, so the padding never reaches the position read.
    """

    def node_fn(prefix_codes: jax.Array, prefix_len: jax.Array) -> tuple[jax.Array, jax.Array]:
        prefix_len = jnp.asarray(prefix_len, jnp.int32)
        input_tokens = codes_to_input_tokens(prefix_codes, token_offsets, prefix_len)
        logits, hidden = model.decode_hidden(shared, input_tokens, deterministic=True)
        index = prefix_len[:, :, None, None]  # [B, N, 1, 1]
        node_logits = jnp.take_along_axis(logits, index, axis=2)[:, :, 0]
        node_hidden = jnp.take_along_axis(hidden, index, axis=2)[:, :, 0]
        return node_logits, value_head(node_hidden)

    return node_fn


def make_cached_node_fn(
    model: SIDRecommender,
    value_head: ValueHead,
    shared: HistoryCache,
    token_offsets: Sequence[int] | jax.Array,
) -> Callable[[jax.Array, jax.Array, BeamCache | None], tuple[jax.Array, jax.Array, BeamCache]]:
    """VED's node evaluator with a KV cache over its tree (``constrained.ved``, "Cached evaluation").

    The returned ``node_fn(prefix_codes int32[B, N, L], prefix_len int32[B, N],
    ancestor_kv)`` decodes one position per node, ``prefix_len`` (BOS at 0,
    else the token of the code at level ``prefix_len - 1``), with
    :meth:`SIDRecommender.decode_node` over ``ancestor_kv`` (a BeamCache with
    leaves [B, N, L, heads, head_dim], slot ``j`` the K/V of the node's depth-``j``
    ancestor, or None for roots) and returns ``(logits float32[B, N, V], values
    float32[B, N], own BeamCache [B, N, heads, head_dim])``: the logits and
    values of :func:`make_node_fn` (to rounding) for ``1/(L + 1)`` of its decoder work.
    """
    offsets = jnp.asarray(token_offsets, jnp.int32)

    def node_fn(prefix_codes: jax.Array, prefix_len: jax.Array,
                ancestor_kv: BeamCache | None) -> tuple[jax.Array, jax.Array, BeamCache]:
        prefix_len = jnp.asarray(prefix_len, jnp.int32)
        last_level = jnp.clip(prefix_len - 1, 0, prefix_codes.shape[-1] - 1)
        last_code = jnp.take_along_axis(prefix_codes, last_level[..., None], axis=-1)[..., 0]
        token = jnp.where(last_code >= 0, last_code + offsets[last_level], PAD_ID)
        token = jnp.where(prefix_len > 0, token, BOS_ID)
        logits, hidden, own = model.decode_node(shared, token, prefix_len, ancestor_kv)
        return logits, value_head(hidden), own

    return node_fn
