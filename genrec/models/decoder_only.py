"""Llama-style decoder-only recommender over semantic-ID tokens.

Data flow: one causal sequence ``[history tokens, BOS, y_1..y_{L-1}]`` predicts
y_1..y_L. ``encode`` runs the history part once per request and keeps every
layer's history K/V (:class:`HistoryCache`); target tokens then attend to
``history K/V (shared, broadcast over beams) ∪ their own target K/V``, both in
``score_targets`` (many candidates per request, teacher forced) and in
``decode_step`` (one level per call, target K/V in the :class:`BeamCache`).

Architecture: pre-norm RMSNorm blocks, bias-free projections, RoPE, SwiGLU
FFN (per ``config.ffn_activation``), tied or separate output projection.
RoPE positions count real tokens only (history token i of a left-padded row
sits at ``cumsum(mask) - 1``; BOS at the number of real history tokens), so
left padding changes nothing but the masked-out columns.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from genrec.models import layers
from genrec.models.base import SIDRecommender
from genrec.models.config import ModelConfig
from genrec.models.layers import BeamCache, HistoryCache


class DecoderOnlyLayer(nnx.Module):
    """Pre-norm causal self-attention (RoPE) + FFN."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.rope_base = config.rope_base
        self.attention_norm = layers.RMSNorm(config)
        self.attention = layers.AttentionProjections(config, rngs=rngs)
        self.ffn_norm = layers.RMSNorm(config)
        self.ffn = layers.FeedForward(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout_rate, rngs=rngs)

    def _project(self, normed: jax.Array, positions: jax.Array):
        """normed: [..., seq, d_model]; positions int[..., seq] -> RoPE'd q, k and v."""
        queries, keys, values = self.attention.queries_keys_values(normed)
        return (layers.apply_rope(queries, positions, self.rope_base),
                layers.apply_rope(keys, positions, self.rope_base), values)

    def _residual_ffn(self, hidden: jax.Array, attended: jax.Array,
                      deterministic: bool) -> jax.Array:
        hidden = hidden + self.dropout(self.attention.merge_heads(attended),
                                       deterministic=deterministic)
        return hidden + self.dropout(self.ffn(self.ffn_norm(hidden)), deterministic=deterministic)

    def encode_history(
        self,
        hidden: jax.Array,
        positions: jax.Array,
        history_mask: jax.Array,
        deterministic: bool,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Causal self-attention among history tokens.

        Args:
          hidden: [batch, hist_len, d_model].
          positions: int32[batch, hist_len] RoPE positions.
          history_mask: bool[batch, hist_len].

        Returns:
          hidden [batch, hist_len, d_model] and this layer's history keys,
          values [batch, hist_len, heads, head_dim].
        """
        hist_len = hidden.shape[1]
        queries, keys, values = self._project(self.attention_norm(hidden), positions)
        # Left padding puts every PAD before every real token, so index order
        # is position order and a plain causal mask is causal in positions.
        allowed = (layers.causal_allowed(0, hist_len, hist_len)[None, None, None]
                   & history_mask[:, None, None, None, :])
        attended = layers.attend(
            queries[:, None],
            history_keys=keys,
            history_values=values,
            history_allowed=allowed,
        )[:, 0]
        return self._residual_ffn(hidden, attended, deterministic), keys, values

    def decode_targets(
        self,
        hidden: jax.Array,
        positions: jax.Array,
        *,
        history_keys: jax.Array,
        history_values: jax.Array,
        history_allowed: jax.Array,
        cached: tuple[jax.Array, jax.Array] | None,
        start: int,
        deterministic: bool,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """Target positions start..start+q_len-1 of every beam attend to history ∪ targets.

        Args:
          hidden: [batch, beams, q_len, d_model].
          positions: int32[batch, 1, q_len] RoPE positions (same for all beams).
          history_keys, history_values: [batch, hist_len, heads, head_dim].
          history_allowed: bool[batch, 1, 1, 1, hist_len].
          cached: (keys, values) [batch, beams, num_levels, heads, head_dim], or
            None for teacher forcing over the whole target.
          start: static target position of hidden's first token.

        Returns:
          hidden [batch, beams, q_len, d_model] and the updated cache (or None).
        """
        query_len = hidden.shape[2]
        queries, new_keys, new_values = self._project(self.attention_norm(hidden), positions)
        target_keys, target_values, cached = layers.extend_target_kv(
            new_keys, new_values, cached, start
        )
        attended = layers.attend(
            queries,
            history_keys=history_keys,
            history_values=history_values,
            history_allowed=history_allowed,
            target_keys=target_keys,
            target_values=target_values,
            target_allowed=layers.causal_allowed(start, query_len, start + query_len),
        )
        return self._residual_ffn(hidden, attended, deterministic), cached

    def decode_node(
        self,
        hidden: jax.Array,
        positions: jax.Array,
        *,
        history_keys: jax.Array,
        history_values: jax.Array,
        history_allowed: jax.Array,
        ancestors: tuple[jax.Array, jax.Array],
        depth: jax.Array,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """One input position per tree node over history ∪ its ancestors' cached K/V ∪ its own (deterministic).

        Args:
          hidden: [batch, nodes, 1, d_model].
          positions: int32[batch, nodes, 1] RoPE positions (history length + depth).
          history_keys, history_values, history_allowed: as in ``decode_targets``.
          ancestors: this layer's (keys, values) [batch, nodes, num_levels, heads, head_dim]
            (:func:`layers.insert_node_kv`).
          depth: int32[batch, nodes], the node's target position.

        Returns:
          hidden [batch, nodes, 1, d_model] and the node's own (keys, values)
          [batch, nodes, heads, head_dim], RoPE applied.
        """
        queries, new_keys, new_values = self._project(self.attention_norm(hidden), positions)
        keys, values, allowed = layers.insert_node_kv(new_keys, new_values, ancestors, depth)
        attended = layers.attend(
            queries,
            history_keys=history_keys,
            history_values=history_values,
            history_allowed=history_allowed,
            target_keys=keys,
            target_values=values,
            target_allowed=allowed,
        )
        return self._residual_ffn(hidden, attended, True), (new_keys[:, :, 0], new_values[:, :, 0])


class DecoderOnlyRecommender(SIDRecommender):
    """Llama-style generative recommender; see the module docstring for the data flow."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        if config.arch != "decoder_only":
            raise ValueError(
                f"DecoderOnlyRecommender got ModelConfig.arch={config.arch!r};"
                " build it with ModelConfig.llama_small_rec / tiny(arch='decoder_only')"
                " or use genrec.models.build_model."
            )
        self.config = config
        self.embedding = layers.TokenEmbedding(config, rngs=rngs)
        self.layers = nnx.List(
            [DecoderOnlyLayer(config, rngs=rngs) for _ in range(config.num_decoder_layers)]
        )
        self.final_norm = layers.RMSNorm(config)
        self.dropout = nnx.Dropout(config.dropout_rate, rngs=rngs)

    # ------------------------------------------------------------ interface

    def encode(
        self,
        history_tokens: jax.Array,
        history_mask: jax.Array,
        *,
        deterministic: bool = True,
    ) -> HistoryCache:
        """Runs the history prefix once per request.

        Args:
          history_tokens: int32[batch, hist_len], left-padded with PAD_ID.
          history_mask: bool[batch, hist_len], True at real tokens.
          deterministic: False applies dropout (training).

        Returns:
          HistoryCache with each layer's history K/V (RoPE applied)
          [batch, hist_len, heads, head_dim], the mask and the history lengths.
        """
        layers.check_history_inputs(self.config, history_tokens, history_mask)
        positions = jnp.maximum(jnp.cumsum(history_mask, axis=1, dtype=jnp.int32) - 1, 0)
        hidden = self.dropout(self.embedding.embed(history_tokens), deterministic=deterministic)
        keys, values = [], []
        # The last layer's history outputs are never read; under jit XLA drops
        # that layer's history FFN as dead code.
        for layer in self.layers:
            hidden, layer_keys, layer_values = layer.encode_history(
                hidden, positions, history_mask, deterministic
            )
            keys.append(layer_keys)
            values.append(layer_values)
        return HistoryCache(
            keys=tuple(keys),
            values=tuple(values),
            mask=history_mask,
            lengths=jnp.sum(history_mask, axis=1, dtype=jnp.int32),
        )

    # ------------------------------------------------------------ internals

    def _decode_states(
        self,
        shared: HistoryCache,
        input_tokens: jax.Array,
        beam_cache: BeamCache | None,
        *,
        start: int,
        deterministic: bool,
    ) -> tuple[jax.Array, BeamCache | None]:
        """input_tokens: int32[batch, beams, q_len] at target positions start.. -> final-normed hidden, cache."""
        query_len = input_tokens.shape[2]
        # BOS sits right after the last real history token.
        positions = (shared.lengths[:, None, None] + start
                     + jnp.arange(query_len, dtype=jnp.int32)[None, None, :])  # [batch, 1, q_len]
        history_allowed = shared.mask[:, None, None, None, :]
        hidden = self.dropout(self.embedding.embed(input_tokens), deterministic=deterministic)
        new_keys, new_values = [], []
        for index, layer in enumerate(self.layers):
            cached = None if beam_cache is None else (beam_cache.keys[index],
                                                      beam_cache.values[index])
            hidden, cached = layer.decode_targets(
                hidden,
                positions,
                history_keys=shared.keys[index],
                history_values=shared.values[index],
                history_allowed=history_allowed,
                cached=cached,
                start=start,
                deterministic=deterministic,
            )
            if cached is not None:
                new_keys.append(cached[0])
                new_values.append(cached[1])
        hidden = self.dropout(self.final_norm(hidden), deterministic=deterministic)
        if beam_cache is None:
            return hidden, None
        return hidden, BeamCache(keys=tuple(new_keys), values=tuple(new_values))

    def _decode_node_states(
        self,
        shared: HistoryCache,
        input_tokens: jax.Array,
        depth: jax.Array,
        ancestor_cache: BeamCache,
    ) -> tuple[jax.Array, BeamCache]:
        """input_tokens, depth: int32[batch, nodes] -> final-normed hidden [batch, nodes, d_model], own K/V."""
        positions = (shared.lengths[:, None] + depth)[..., None]  # [batch, nodes, 1]; BOS at the history length
        history_allowed = shared.mask[:, None, None, None, :]
        hidden = self.embedding.embed(input_tokens)[:, :, None]
        own_keys, own_values = [], []
        for index, layer in enumerate(self.layers):
            hidden, (keys, values) = layer.decode_node(
                hidden,
                positions,
                history_keys=shared.keys[index],
                history_values=shared.values[index],
                history_allowed=history_allowed,
                ancestors=(ancestor_cache.keys[index], ancestor_cache.values[index]),
                depth=depth,
            )
            own_keys.append(keys)
            own_values.append(values)
        hidden = self.final_norm(hidden)[:, :, 0]
        return hidden, BeamCache(keys=tuple(own_keys), values=tuple(own_values))
