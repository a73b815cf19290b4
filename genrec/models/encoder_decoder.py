"""T5-style encoder-decoder recommender over semantic-ID tokens.

Data flow: history SID tokens -> encoder -> per-layer cross-attention K/V
(:class:`HistoryCache`, once per request) -> decoder over [BOS, y_1..y_{L-1}]
-> logits for y_1..y_L. Training scores many candidate targets per request
against one encoding (``score_targets``); the constrained beam search calls
``encode`` once, then ``decode_step`` once per SID level.

Architecture: pre-norm RMSNorm blocks; bias-free projections; T5 relative
position bias (bidirectional in the encoder, causal in the decoder, one table
per stack shared by its layers, none in cross-attention); FFN per
``config.ffn_activation``; tied or separate output projection. The Hugging
Face T5 options of ModelConfig (attention_dropout, ffn_dropout,
attention_logit_scale, init) apply here only (docs/models.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genrec.models import layers
from genrec.models.base import SIDRecommender
from genrec.models.config import ModelConfig
from genrec.models.layers import BeamCache, HistoryCache


class EncoderLayer(nnx.Module):
    """Pre-norm self-attention + FFN over the history."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.attention_norm = layers.RMSNorm(config)
        self.attention = layers.AttentionProjections(config, rngs=rngs)
        self.ffn_norm = layers.RMSNorm(config)
        self.ffn = layers.FeedForward(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout_rate, rngs=rngs)

    def __call__(
        self,
        hidden: jax.Array,
        allowed: jax.Array,
        position_bias: jax.Array,
        deterministic: bool,
    ) -> jax.Array:
        """hidden: [batch, hist_len, d_model]; allowed: bool[batch, 1, 1, 1, hist_len];
        position_bias: [heads, hist_len, hist_len]. Returns [batch, hist_len, d_model]."""
        queries, keys, values = self.attention.queries_keys_values(self.attention_norm(hidden))
        attended = self.attention.attend(
            queries[:, None],  # beam axis of 1 for attend()
            history_keys=keys,
            history_values=values,
            history_allowed=allowed,
            history_bias=position_bias,
            deterministic=deterministic,
        )[:, 0]
        hidden = hidden + self.dropout(self.attention.merge_heads(attended),
                                       deterministic=deterministic)
        return hidden + self.dropout(self.ffn(self.ffn_norm(hidden), deterministic=deterministic),
                                     deterministic=deterministic)


class DecoderLayer(nnx.Module):
    """Pre-norm causal self-attention, cross-attention to the history, FFN."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.self_attention_norm = layers.RMSNorm(config)
        self.self_attention = layers.AttentionProjections(config, rngs=rngs)
        self.cross_attention_norm = layers.RMSNorm(config)
        self.cross_attention = layers.AttentionProjections(config, rngs=rngs)
        self.ffn_norm = layers.RMSNorm(config)
        self.ffn = layers.FeedForward(config, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout_rate, rngs=rngs)

    def cross_keys_values(self, encoded: jax.Array) -> tuple[jax.Array, jax.Array]:
        """encoded: [batch, hist_len, d_model] -> K, V each [batch, hist_len, heads, head_dim]."""
        return self.cross_attention.keys_values(encoded)

    def __call__(
        self,
        hidden: jax.Array,
        *,
        history_keys: jax.Array,
        history_values: jax.Array,
        history_allowed: jax.Array,
        cached: tuple[jax.Array, jax.Array] | None,
        start: int,
        position_bias: jax.Array,
        deterministic: bool,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """Runs target positions start..start+q_len-1 of every beam.

        Args:
          hidden: [batch, beams, q_len, d_model].
          history_keys, history_values: [batch, hist_len, heads, head_dim].
          history_allowed: bool[batch, 1, 1, 1, hist_len].
          cached: this layer's (keys, values) [batch, beams, num_levels, heads,
            head_dim], or None for teacher forcing over the whole target.
          start: static position of hidden's first token.
          position_bias: [heads, q_len, start+q_len] causal relative bias.

        Returns:
          hidden [batch, beams, q_len, d_model] and the updated cache (or None).
        """
        query_len = hidden.shape[2]
        queries, new_keys, new_values = self.self_attention.queries_keys_values(
            self.self_attention_norm(hidden))
        target_keys, target_values, cached = layers.extend_target_kv(
            new_keys, new_values, cached, start
        )
        attended = self.self_attention.attend(
            queries,
            target_keys=target_keys,
            target_values=target_values,
            target_allowed=layers.causal_allowed(start, query_len, start + query_len),
            target_bias=position_bias,
            deterministic=deterministic,
        )
        hidden = hidden + self.dropout(self.self_attention.merge_heads(attended),
                                       deterministic=deterministic)
        return self._cross_attention_ffn(hidden, history_keys, history_values, history_allowed,
                                         deterministic), cached

    def decode_node(
        self,
        hidden: jax.Array,
        *,
        history_keys: jax.Array,
        history_values: jax.Array,
        history_allowed: jax.Array,
        ancestors: tuple[jax.Array, jax.Array],
        depth: jax.Array,
        position_bias: jax.Array,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """One input position per tree node, at its own depth, over its ancestors' cached K/V (deterministic).

        Args:
          hidden: [batch, nodes, 1, d_model].
          history_keys, history_values, history_allowed: as in ``__call__``.
          ancestors: this layer's (keys, values) [batch, nodes, num_levels, heads, head_dim]
            (:func:`layers.insert_node_kv`).
          depth: int32[batch, nodes], the node's position.
          position_bias: [batch, nodes, heads, 1, num_levels], the bias of position
            ``depth`` to slots ``0..num_levels-1``.

        Returns:
          hidden [batch, nodes, 1, d_model] and the node's own (keys, values)
          [batch, nodes, heads, head_dim].
        """
        queries, new_keys, new_values = self.self_attention.queries_keys_values(
            self.self_attention_norm(hidden))
        keys, values, allowed = layers.insert_node_kv(new_keys, new_values, ancestors, depth)
        attended = self.self_attention.attend(
            queries, target_keys=keys, target_values=values, target_allowed=allowed,
            target_bias=position_bias, deterministic=True,
        )
        hidden = hidden + self.self_attention.merge_heads(attended)
        hidden = self._cross_attention_ffn(hidden, history_keys, history_values, history_allowed, True)
        return hidden, (new_keys[:, :, 0], new_values[:, :, 0])

    def _cross_attention_ffn(self, hidden, history_keys, history_values, history_allowed,
                             deterministic: bool) -> jax.Array:
        """The cross-attention and FFN residual blocks: hidden [batch, beams, q_len, d_model] -> same."""
        attended = self.cross_attention.attend(
            self.cross_attention.queries(self.cross_attention_norm(hidden)),
            history_keys=history_keys,
            history_values=history_values,
            history_allowed=history_allowed,
            deterministic=deterministic,
        )
        hidden = hidden + self.dropout(self.cross_attention.merge_heads(attended),
                                       deterministic=deterministic)
        return hidden + self.dropout(self.ffn(self.ffn_norm(hidden), deterministic=deterministic),
                                     deterministic=deterministic)


class EncoderDecoderRecommender(SIDRecommender):
    """T5-style generative recommender; see the module docstring for the data flow."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        if config.arch != "encoder_decoder":
            raise ValueError(
                f"EncoderDecoderRecommender got ModelConfig.arch={config.arch!r};"
                " build it with ModelConfig.t5_small_rec / tiny(arch='encoder_decoder')"
                " or use genrec.models.build_model."
            )
        self.config = config
        self.embedding = layers.TokenEmbedding(config, rngs=rngs)
        self.encoder_position_bias = layers.RelativePositionBias(
            config, bidirectional=True, rngs=rngs
        )
        self.decoder_position_bias = layers.RelativePositionBias(
            config, bidirectional=False, rngs=rngs
        )
        self.encoder_layers = nnx.List(
            [EncoderLayer(config, rngs=rngs) for _ in range(config.num_encoder_layers)]
        )
        self.encoder_norm = layers.RMSNorm(config)
        self.decoder_layers = nnx.List(
            [DecoderLayer(config, rngs=rngs) for _ in range(config.num_decoder_layers)]
        )
        self.decoder_norm = layers.RMSNorm(config)
        self.dropout = nnx.Dropout(config.dropout_rate, rngs=rngs)

    # ------------------------------------------------------------ interface

    def encode(
        self,
        history_tokens: jax.Array,
        history_mask: jax.Array,
        *,
        deterministic: bool = True,
    ) -> HistoryCache:
        """Encodes the history once per request.

        Args:
          history_tokens: int32[batch, hist_len], left-padded with PAD_ID.
          history_mask: bool[batch, hist_len], True at real tokens.
          deterministic: False applies dropout (training).

        Returns:
          HistoryCache with each decoder layer's cross-attention K/V
          [batch, hist_len, heads, head_dim], the mask and the history lengths.
        """
        layers.check_history_inputs(self.config, history_tokens, history_mask)
        hist_len = history_tokens.shape[1]
        allowed = history_mask[:, None, None, None, :]
        positions = np.arange(hist_len)
        position_bias = self.encoder_position_bias(positions, positions)

        hidden = self.dropout(self.embedding.embed(history_tokens), deterministic=deterministic)
        for layer in self.encoder_layers:
            hidden = layer(hidden, allowed, position_bias, deterministic)
        encoded = self.dropout(self.encoder_norm(hidden), deterministic=deterministic)

        keys, values = zip(*(layer.cross_keys_values(encoded) for layer in self.decoder_layers))
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
        """input_tokens: int32[batch, beams, q_len] at positions start.. -> final-normed hidden [.., d_model], cache."""
        query_len = input_tokens.shape[2]
        position_bias = self.decoder_position_bias(
            np.arange(start, start + query_len), np.arange(start + query_len)
        )
        history_allowed = shared.mask[:, None, None, None, :]
        hidden = self.dropout(self.embedding.embed(input_tokens), deterministic=deterministic)
        new_keys, new_values = [], []
        for index, layer in enumerate(self.decoder_layers):
            cached = None if beam_cache is None else (beam_cache.keys[index],
                                                      beam_cache.values[index])
            hidden, cached = layer(
                hidden,
                history_keys=shared.keys[index],
                history_values=shared.values[index],
                history_allowed=history_allowed,
                cached=cached,
                start=start,
                position_bias=position_bias,
                deterministic=deterministic,
            )
            if cached is not None:
                new_keys.append(cached[0])
                new_values.append(cached[1])
        hidden = self.dropout(self.decoder_norm(hidden), deterministic=deterministic)
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
        num_slots = ancestor_cache.keys[0].shape[2]
        relative = jnp.arange(num_slots) - depth[..., None]  # [batch, nodes, num_levels]: key - query
        position_bias = self.decoder_position_bias.of_relative(relative[:, :, None, :])
        history_allowed = shared.mask[:, None, None, None, :]
        hidden = self.embedding.embed(input_tokens)[:, :, None]
        own_keys, own_values = [], []
        for index, layer in enumerate(self.decoder_layers):
            hidden, (keys, values) = layer.decode_node(
                hidden,
                history_keys=shared.keys[index],
                history_values=shared.values[index],
                history_allowed=history_allowed,
                ancestors=(ancestor_cache.keys[index], ancestor_cache.values[index]),
                depth=depth,
                position_bias=position_bias,
            )
            own_keys.append(keys)
            own_values.append(values)
        hidden = self.decoder_norm(hidden)[:, :, 0]
        return hidden, BeamCache(keys=tuple(own_keys), values=tuple(own_values))
