"""Building blocks shared by the encoder-decoder and decoder-only recommenders.

Data flow: the models in ``encoder_decoder.py`` / ``decoder_only.py`` stack
these blocks; the constrained beam search (``constrained/``) only sees the two
cache containers defined here:

* :class:`HistoryCache` -- what ``model.encode`` computes once per request:
  per-layer keys/values of the history, ``[batch, hist_len, heads, head_dim]``.
  Beams never copy it; decode attention broadcasts over the beam axis.
* :class:`BeamCache` -- per-beam keys/values of the generated target tokens,
  ``[batch, num_beams, num_levels, heads, head_dim]``; beam search reorders it
  along axis 1. VED's tree nodes use the same layout for their ancestors' K/V
  (``decode_node``, :func:`insert_node_kv`).

Math that needs no parameters (masked attention over history + target keys,
RoPE, T5 relative-position buckets) is written as pure functions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genrec.models.config import BOS_ID, ModelConfig

# Finite "minus infinity" for masked attention logits: a fully masked row
# (e.g. a padding query) then softmaxes to a uniform row instead of NaN.
MASKED_LOGIT = -1e9


class HistoryCache(NamedTuple):
    """Per-request history encoding, shared by all beams of the request.

    Attributes:
      keys: one array per decoder layer, [batch, hist_len, heads, head_dim]
        (cross-attention keys for the encoder-decoder, self-attention keys of the
        history tokens, RoPE applied, for the decoder-only model).
      values: like ``keys``.
      mask: bool[batch, hist_len], True at real (non-PAD) history tokens.
      lengths: int32[batch], number of real history tokens; the decoder-only
        model places BOS at this RoPE position.
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    mask: jax.Array
    lengths: jax.Array


class BeamCache(NamedTuple):
    """Per-beam keys/values of the decoder's own input tokens [BOS, y_1, ..].

    Attributes:
      keys: one array per decoder layer, [batch, num_beams, num_levels, heads,
        head_dim]; slot ``t`` holds the key of the input token at step ``t``
        (BOS at slot 0) once ``decode_step(.., step=t)`` has run.
      values: like ``keys``.
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]


def empty_beam_cache(config: ModelConfig, batch_size: int, num_beams: int) -> BeamCache:
    """Zero-filled BeamCache for ``num_decoder_layers`` layers, in the compute dtype."""
    shape = (batch_size, num_beams, config.num_levels, config.num_heads, config.head_dim)
    zeros = tuple(jnp.zeros(shape, config.dtype) for _ in range(config.num_decoder_layers))
    return BeamCache(keys=zeros, values=zeros)


# --------------------------------------------------------------------- math


def attend(
    queries: jax.Array,
    *,
    history_keys: jax.Array | None = None,
    history_values: jax.Array | None = None,
    history_allowed: jax.Array | None = None,
    history_bias: jax.Array | None = None,
    target_keys: jax.Array | None = None,
    target_values: jax.Array | None = None,
    target_allowed: jax.Array | None = None,
    target_bias: jax.Array | None = None,
    scale_logits: bool = True,
    probability_dropout: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Softmax attention over per-request history keys and per-beam target keys.

    One softmax spans both key sets, so a decoder-only query sees
    ``history ∪ own targets`` as one sequence, while an encoder-decoder uses one
    set per call (self-attention: targets only; cross-attention: history only).
    History keys carry no beam axis and are broadcast in the einsum: beams of a
    request share them without a copy.

    Args:
      queries: [batch, beams, q_len, heads, head_dim] (unscaled).
      history_keys: [batch, hist_len, heads, head_dim], or None.
      history_values: [batch, hist_len, heads, head_dim], or None.
      history_allowed: bool, broadcastable to [batch, beams, heads, q_len, hist_len].
      history_bias: float, broadcastable to [batch, beams, heads, q_len, hist_len].
      target_keys: [batch, beams, t_len, heads, head_dim], or None.
      target_values: [batch, beams, t_len, heads, head_dim], or None.
      target_allowed: bool, broadcastable to [batch, beams, heads, q_len, t_len].
      target_bias: float, broadcastable to [batch, beams, heads, q_len, t_len].
      scale_logits: multiply the logits by head_dim ** -0.5 (False: unscaled, as
        Hugging Face T5, whose query init carries the scale).
      probability_dropout: applied to the attention probabilities
        [batch, beams, heads, q_len, hist_len + t_len] (compute dtype) before
        they weight the values; None (inference, or no attention dropout)
        leaves them as they are.

    Returns:
      [batch, beams, q_len, heads, head_dim] in the dtype of ``queries``.
    """
    if history_keys is None and target_keys is None:
        raise ValueError("attend() needs history_keys, target_keys or both.")
    dtype = queries.dtype
    if scale_logits:
        queries = queries * jnp.asarray(queries.shape[-1] ** -0.5, dtype)

    def masked_logits(logits, allowed, bias):
        logits = logits.astype(jnp.float32)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        if allowed is not None:
            logits = jnp.where(allowed, logits, MASKED_LOGIT)
        return logits

    logit_blocks = []
    if history_keys is not None:
        history_logits = jnp.einsum("bkqhd,bthd->bkhqt", queries, history_keys)
        logit_blocks.append(masked_logits(history_logits, history_allowed, history_bias))
    if target_keys is not None:
        target_logits = jnp.einsum("bkqhd,bkshd->bkhqs", queries, target_keys)
        logit_blocks.append(masked_logits(target_logits, target_allowed, target_bias))

    weights = jax.nn.softmax(jnp.concatenate(logit_blocks, axis=-1), axis=-1).astype(dtype)
    if probability_dropout is not None:
        weights = probability_dropout(weights)

    outputs = 0
    offset = 0
    if history_keys is not None:
        hist_len = history_keys.shape[1]
        outputs = jnp.einsum(
            "bkhqt,bthd->bkqhd", weights[..., offset:offset + hist_len], history_values
        )
        offset += hist_len
    if target_keys is not None:
        outputs = outputs + jnp.einsum(
            "bkhqs,bkshd->bkqhd", weights[..., offset:], target_values
        )
    return outputs


def causal_allowed(query_start: int, query_len: int, key_len: int) -> np.ndarray:
    """Static causal mask bool[query_len, key_len] for queries at query_start + i.

    Query position ``query_start + i`` may see key position ``j`` iff
    ``j <= query_start + i``.
    """
    query_positions = np.arange(query_start, query_start + query_len)[:, None]
    key_positions = np.arange(key_len)[None, :]
    return key_positions <= query_positions


def extend_target_kv(
    new_keys: jax.Array,
    new_values: jax.Array,
    cached: tuple[jax.Array, jax.Array] | None,
    start: int,
) -> tuple[jax.Array, jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Adds the keys/values of new target positions to a layer's beam cache.

    Args:
      new_keys: [batch, beams, q_len, heads, head_dim], positions start..start+q_len-1.
      new_values: like ``new_keys``.
      cached: (keys, values) each [batch, beams, num_levels, heads, head_dim], or
        None when the whole target sequence is given at once (teacher forcing).
      start: static position of the first new token.

    Returns:
      (keys, values) to attend to, [batch, beams, start+q_len, heads, head_dim],
      and the updated cache (None if ``cached`` is None).
    """
    if cached is None:
        return new_keys, new_values, None
    end = start + new_keys.shape[2]
    # Static slice: the beam search's step is a Python int, so this compiles to
    # an in-place dynamic-update-slice with a constant offset.
    cache_keys = cached[0].at[:, :, start:end].set(new_keys.astype(cached[0].dtype))
    cache_values = cached[1].at[:, :, start:end].set(new_values.astype(cached[1].dtype))
    return cache_keys[:, :, :end], cache_values[:, :, :end], (cache_keys, cache_values)


def insert_node_kv(
    new_keys: jax.Array,
    new_values: jax.Array,
    ancestors: tuple[jax.Array, jax.Array],
    depth: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The target K/V a tree node attends to: its ancestors' cached ones plus its own (VED's node cache).

    Args:
      new_keys: [batch, nodes, 1, heads, head_dim], the node's own input position.
      new_values: like ``new_keys``.
      ancestors: (keys, values) each [batch, nodes, num_levels, heads, head_dim];
        slot ``j < depth`` holds the node's depth-``j`` ancestor's (the input at
        position ``j``), the slots from ``depth`` on are ignored.
      depth: int[batch, nodes], the node's input position (0 for the root's BOS).

    Returns:
      (keys, values) [batch, nodes, num_levels, ...] with the node's own in slot
      ``depth``, and target_allowed bool[batch, nodes, 1, 1, num_levels]: slots
      ``0..depth``, the causal mask of position ``depth`` in the full-prefix pass.
    """
    slots = jnp.arange(ancestors[0].shape[2])
    own = (slots == depth[..., None])[..., None, None]  # [batch, nodes, num_levels, 1, 1]
    keys = jnp.where(own, new_keys.astype(ancestors[0].dtype), ancestors[0])
    values = jnp.where(own, new_values.astype(ancestors[1].dtype), ancestors[1])
    allowed = (slots <= depth[..., None])[:, :, None, None, :]
    return keys, values, allowed


def apply_rope(inputs: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotary position embedding (rotate-half form).

    Args:
      inputs: [..., seq, heads, head_dim] with even head_dim.
      positions: int[..., seq], broadcastable against inputs' leading axes.
      base: wavelength base.

    Returns:
      inputs rotated by position, same shape and dtype.
    """
    half = inputs.shape[-1] // 2
    inverse_frequencies = base ** (-np.arange(half, dtype=np.float32) / half)
    angles = positions[..., None].astype(jnp.float32) * inverse_frequencies  # [..., seq, half]
    sin = jnp.sin(angles)[..., None, :]  # [..., seq, 1, half]
    cos = jnp.cos(angles)[..., None, :]
    first, second = jnp.split(inputs.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(inputs.dtype)


def relative_position_bucket(
    relative_position: np.ndarray | jax.Array,
    *,
    bidirectional: bool,
    num_buckets: int,
    max_distance: int,
) -> jax.Array:
    """T5 bucket of ``key_position - query_position``.

    Half the buckets are exact small distances, the rest grow logarithmically
    up to ``max_distance``; bidirectional buckets split the range by sign.
    Unidirectional (causal) buckets treat every future key as distance 0.

    Args:
      relative_position: int array, key position minus query position.

    Returns:
      int32 array of the same shape, values in [0, num_buckets).
    """
    distance = -jnp.asarray(relative_position, jnp.int32)  # > 0: key in the past
    bucket = jnp.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (distance < 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(distance)
    else:
        distance = jnp.maximum(distance, 0)
    max_exact = num_buckets // 2
    # log of max(distance, 1) keeps the unused large-branch finite at 0.
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
    large = max_exact + (
        log_ratio / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(distance < max_exact, distance, large)


# ------------------------------------------------------------------ modules


def dropout_rngs(rate: float, rngs: nnx.Rngs) -> nnx.Rngs | None:
    """``rngs`` for an ``nnx.Dropout`` of ``rate``, None when the rate is 0.

    A rate-0 dropout then holds no RNG stream and forks none at build time, so
    an option left at 0 leaves the model's state, its parameter init and every
    other dropout mask exactly as they were without it.
    """
    return rngs if rate > 0 else None


def hf_t5_normal(stddev: float) -> jax.nn.initializers.Initializer:
    """Untruncated N(0, stddev^2), the initializer of ``ModelConfig.init="hf_t5"``."""
    return jax.nn.initializers.normal(stddev=stddev)


def _dense_kwargs(config: ModelConfig, rngs: nnx.Rngs, hf_t5_stddev: float) -> dict:
    """nnx.Linear keyword arguments; the kernel init is HF T5's when ``config.init == "hf_t5"``
    (otherwise nnx.Linear's default, LeCun normal, untouched)."""
    dense = dict(use_bias=False, dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)
    if config.init == "hf_t5":
        dense["kernel_init"] = hf_t5_normal(hf_t5_stddev)
    return dense


class RMSNorm(nnx.Module):
    """Root-mean-square norm with a learned scale; statistics in float32."""

    def __init__(self, config: ModelConfig):
        self.scale = nnx.Param(jnp.ones((config.d_model,), config.param_dtype))
        self.epsilon = config.norm_epsilon
        self.dtype = config.dtype

    def __call__(self, hidden: jax.Array) -> jax.Array:
        """hidden: [..., d_model] -> normalized [..., d_model] in the compute dtype."""
        hidden32 = hidden.astype(jnp.float32)
        mean_square = jnp.mean(jnp.square(hidden32), axis=-1, keepdims=True)
        normalized = hidden32 * jax.lax.rsqrt(mean_square + self.epsilon)
        return (normalized * self.scale[...].astype(jnp.float32)).astype(self.dtype)


class FeedForward(nnx.Module):
    """Position-wise FFN: gated (GeGLU / SwiGLU) or T5 v1.0 ReLU; optional dropout
    on the hidden activation (``config.ffn_dropout``, Hugging Face T5's)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        dense_in = _dense_kwargs(config, rngs, config.d_model ** -0.5)
        self.activation = config.ffn_activation
        if config.is_gated_ffn:
            self.gate = nnx.Linear(config.d_model, config.d_ff, **dense_in)
        self.up = nnx.Linear(config.d_model, config.d_ff, **dense_in)
        self.down = nnx.Linear(config.d_ff, config.d_model, **_dense_kwargs(config, rngs, config.d_ff ** -0.5))
        self.hidden_dropout = nnx.Dropout(config.ffn_dropout, rngs=dropout_rngs(config.ffn_dropout, rngs))

    def __call__(self, hidden: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """hidden: [..., d_model] -> [..., d_model]; deterministic=False applies ffn_dropout."""
        if self.activation == "relu":
            activated = jax.nn.relu(self.up(hidden))
        else:
            gate_fn = jax.nn.gelu if self.activation == "geglu" else jax.nn.silu
            activated = gate_fn(self.gate(hidden)) * self.up(hidden)
        return self.down(self.hidden_dropout(activated, deterministic=deterministic))


class AttentionProjections(nnx.Module):
    """Bias-free query/key/value/output projections of multi-head attention, and
    how this attention runs :func:`attend` (logit scaling, probability dropout)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        width = config.attention_width
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.dtype = config.dtype
        self.fuse = config.fuse_qkv_projections
        self.scale_logits = config.attention_logit_scale == "inv_sqrt_d"
        # HF T5 stds (used only with config.init == "hf_t5"); q carries the 1/sqrt(head_dim)
        # that its unscaled logits leave out.
        self.query = nnx.Linear(config.d_model, width,
                                **_dense_kwargs(config, rngs, (config.d_model * config.head_dim) ** -0.5))
        self.key = nnx.Linear(config.d_model, width, **_dense_kwargs(config, rngs, config.d_model ** -0.5))
        self.value = nnx.Linear(config.d_model, width, **_dense_kwargs(config, rngs, config.d_model ** -0.5))
        self.output = nnx.Linear(width, config.d_model, **_dense_kwargs(config, rngs, width ** -0.5))
        self.probability_dropout = nnx.Dropout(config.attention_dropout,
                                               rngs=dropout_rngs(config.attention_dropout, rngs))

    def attend(self, queries: jax.Array, *, deterministic: bool, **keys_values_masks) -> jax.Array:
        """:func:`attend` with this attention's logit scaling and, unless
        ``deterministic``, its dropout on the attention probabilities."""
        dropout = None
        if not deterministic and self.probability_dropout.rate > 0:
            dropout = functools.partial(self.probability_dropout, deterministic=False)
        return attend(queries, scale_logits=self.scale_logits, probability_dropout=dropout,
                      **keys_values_masks)

    def _split_heads(self, projected: jax.Array) -> jax.Array:
        return projected.reshape(*projected.shape[:-1], self.num_heads, self.head_dim)

    def _fused(self, hidden: jax.Array, projections: tuple[nnx.Linear, ...]) -> list[jax.Array]:
        """One matmul against the kernels side by side, split back per projection
        (the parameters stay separate, so checkpoints do not depend on fusing)."""
        kernel = jnp.concatenate([p.kernel[...] for p in projections], axis=1).astype(self.dtype)
        fused = jnp.einsum("...d,dw->...w", hidden.astype(self.dtype), kernel)
        return [self._split_heads(x) for x in jnp.split(fused, len(projections), axis=-1)]

    def queries(self, hidden: jax.Array) -> jax.Array:
        """hidden: [..., d_model] -> [..., heads, head_dim]."""
        return self._split_heads(self.query(hidden))

    def keys_values(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array]:
        """hidden: [..., d_model] -> (keys, values), each [..., heads, head_dim]."""
        if self.fuse:
            keys, values = self._fused(hidden, (self.key, self.value))
            return keys, values
        return self._split_heads(self.key(hidden)), self._split_heads(self.value(hidden))

    def queries_keys_values(self, hidden: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Self-attention's projections of one input: hidden [..., d_model] ->
        (queries, keys, values), each [..., heads, head_dim]."""
        if self.fuse:
            queries, keys, values = self._fused(hidden, (self.query, self.key, self.value))
            return queries, keys, values
        return self.queries(hidden), *self.keys_values(hidden)

    def merge_heads(self, attended: jax.Array) -> jax.Array:
        """attended: [..., heads, head_dim] -> [..., d_model]."""
        return self.output(attended.reshape(*attended.shape[:-2], self.num_heads * self.head_dim))


class RelativePositionBias(nnx.Module):
    """T5 learned relative-position bias, one scalar per (bucket, head).

    Computed once per stack and added to every layer's self-attention logits,
    as in T5. Left padding shifts every history position equally, so it leaves
    the bias between real tokens unchanged.
    """

    def __init__(self, config: ModelConfig, *, bidirectional: bool, rngs: nnx.Rngs):
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        stddev = config.d_model ** -0.5 if config.init == "hf_t5" else 1.0 / math.sqrt(config.head_dim)
        init = jax.nn.initializers.normal(stddev=stddev)
        self.table = nnx.Param(
            init(rngs.params(), (self.num_buckets, config.num_heads), config.param_dtype)
        )

    def __call__(self, query_positions: np.ndarray, key_positions: np.ndarray) -> jax.Array:
        """Static positions int[q_len], int[k_len] -> float32 bias [heads, q_len, k_len]."""
        return self.of_relative(key_positions[None, :] - query_positions[:, None])

    def of_relative(self, relative_position: np.ndarray | jax.Array) -> jax.Array:
        """Key minus query positions int[..., q_len, k_len] (static or traced) -> float32 bias
        [..., heads, q_len, k_len]; VED's node evaluation passes each node's own query position."""
        buckets = relative_position_bucket(
            relative_position,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        bias = jnp.take(self.table[...].astype(jnp.float32), buckets, axis=0)  # [..., q, k, heads]
        return jnp.moveaxis(bias, -1, -3)


class TokenEmbedding(nnx.Module):
    """Input embedding and output projection (tied or separate).

    With tied weights the logits are ``hidden @ table.T / sqrt(d_model)``: the
    table is initialized with unit variance so embeddings enter the residual
    stream at scale 1, and the scaling keeps initial logits at unit scale.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.dtype = config.dtype
        self.tie_embeddings = config.tie_embeddings
        self.output_scale = config.d_model ** -0.5
        init = jax.nn.initializers.normal(stddev=1.0)
        self.table = nnx.Param(
            init(rngs.params(), (config.vocab_size, config.d_model), config.param_dtype)
        )
        if not config.tie_embeddings:
            # HF T5 initializes an untied lm_head N(0, 1) (and, untied, does not rescale its input).
            self.output_projection = nnx.Linear(config.d_model, config.vocab_size,
                                                **_dense_kwargs(config, rngs, 1.0))

    def embed(self, tokens: jax.Array) -> jax.Array:
        """tokens: int32[...] -> [..., d_model] in the compute dtype."""
        return jnp.take(self.table[...], tokens, axis=0).astype(self.dtype)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden: [..., d_model] -> float32 logits [..., vocab_size]."""
        if self.tie_embeddings:
            table = self.table[...].astype(self.dtype)
            # float32 accumulation: beam search ranks by these scores.
            logits = jnp.einsum("...d,vd->...v", hidden, table,
                                preferred_element_type=jnp.float32)
            return logits * self.output_scale
        return self.output_projection(hidden).astype(jnp.float32)


# --------------------------------------------------------- input checking
# Trace-time checks shared by both models: shapes are static, so a wrong shape
# fails here with a message instead of deep inside an einsum.


def check_history_inputs(config: ModelConfig, history_tokens: jax.Array,
                         history_mask: jax.Array) -> None:
    """Raises ValueError unless history is [batch, hist_len <= max_history_tokens]."""
    if history_tokens.ndim != 2 or history_mask.shape != history_tokens.shape:
        raise ValueError(
            "encode() wants history_tokens int32[batch, hist_len] and history_mask"
            f" bool[batch, hist_len]; got {history_tokens.shape} and {history_mask.shape}."
        )
    if history_tokens.shape[1] > config.max_history_tokens:
        raise ValueError(
            f"history of {history_tokens.shape[1]} tokens exceeds"
            f" ModelConfig.max_history_tokens={config.max_history_tokens}; truncate the"
            " history in the data pipeline or raise max_history_tokens."
        )


def check_decode_step(config: ModelConfig, step: int) -> None:
    """Raises ValueError unless step is a static Python int in [0, num_levels)."""
    if not isinstance(step, (int, np.integer)) or not 0 <= step < config.num_levels:
        raise ValueError(
            f"decode_step(step={step!r}) needs a static Python int in"
            f" [0, num_levels={config.num_levels}); pass it as a static jit argument."
        )


def check_target_tokens(config: ModelConfig, target_tokens: jax.Array) -> None:
    """Raises ValueError unless target_tokens is [batch, num_candidates, num_levels]."""
    if target_tokens.ndim != 3 or target_tokens.shape[-1] != config.num_levels:
        raise ValueError(
            "score_targets() / score_candidates() want target_tokens int32[batch, num_candidates,"
            f" num_levels={config.num_levels}]; got shape {target_tokens.shape}."
        )


def check_decoder_inputs(config: ModelConfig, input_tokens: jax.Array) -> None:
    """Raises ValueError unless input_tokens is [batch, num_seqs, 1 <= P <= num_levels + 1]."""
    if input_tokens.ndim != 3 or not 1 <= input_tokens.shape[-1] <= config.num_levels + 1:
        raise ValueError(
            "decode_hidden() wants input_tokens int32[batch, num_seqs, P] ([BOS, y_1, ..]) with"
            f" 1 <= P <= num_levels + 1 = {config.num_levels + 1}; got shape {input_tokens.shape}."
        )


def shift_targets_right(config: ModelConfig, target_tokens: jax.Array) -> jax.Array:
    """Decoder inputs for teacher forcing.

    Args:
      target_tokens: int32[batch, num_candidates, num_levels], SIDs y_1..y_L.

    Returns:
      int32[batch, num_candidates, num_levels]: [BOS, y_1..y_{L-1}].
    """
    check_target_tokens(config, target_tokens)
    bos = jnp.full(target_tokens.shape[:-1] + (1,), BOS_ID, target_tokens.dtype)
    return jnp.concatenate([bos, target_tokens[..., :-1]], axis=-1)
