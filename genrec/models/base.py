"""What both recommender families share: the decoding interface the
constrained beam search, the train step and the RL stage call, on top of each
model's own ``encode`` and ``_decode_states`` (see docs/models.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from genrec.models import layers
from genrec.models.config import BOS_ID
from genrec.models.layers import BeamCache, HistoryCache


class SIDRecommender(nnx.Module):
    """Base of the genrec models. Subclasses set ``self.config`` and define

    * ``encode(history_tokens, history_mask, *, deterministic) -> HistoryCache``
    * ``_decode_states(shared, input_tokens[batch, beams, q_len], beam_cache | None, *,
      start, deterministic) -> (hidden[batch, beams, q_len, d_model], beam_cache)``:
      the decoder's final-normed states (after the final dropout), which the
      output projection ``self.embedding.logits`` reads.
    * ``_decode_node_states(shared, input_tokens[batch, nodes], depth[batch, nodes],
      ancestor_cache) -> (hidden[batch, nodes, d_model], own K/V)``: one position
      per node at a traced depth (:meth:`decode_node`).
    """

    def _decode(
        self,
        shared: HistoryCache,
        input_tokens: jax.Array,
        beam_cache: BeamCache | None,
        *,
        start: int,
        deterministic: bool,
    ) -> tuple[jax.Array, BeamCache | None]:
        """input_tokens: int32[batch, beams, q_len] at positions start.. -> (logits float32[.., vocab], cache)."""
        hidden, beam_cache = self._decode_states(
            shared, input_tokens, beam_cache, start=start, deterministic=deterministic
        )
        return self.embedding.logits(hidden), beam_cache

    def init_beam_cache(self, shared: HistoryCache, num_beams: int) -> BeamCache:
        """Empty per-beam K/V cache of the target tokens, [batch, num_beams, num_levels, heads, head_dim] per layer."""
        return layers.empty_beam_cache(self.config, shared.mask.shape[0], num_beams)

    def decode_step(
        self,
        shared: HistoryCache,
        beam_cache: BeamCache,
        last_tokens: jax.Array,
        step: int,
    ) -> tuple[jax.Array, BeamCache]:
        """Logits for SID level ``step`` of every beam, and the cache with slot ``step`` written.

        Args:
          shared: from ``encode``; not modified.
          beam_cache: from ``init_beam_cache`` or the previous step (beams may
            have been reordered along axis 1 since).
          last_tokens: int32[batch, num_beams]; BOS_ID at step 0, else the token
            chosen at level step-1.
          step: static Python int in [0, num_levels).

        Returns:
          logits float32[batch, num_beams, vocab_size], new beam cache.
        """
        layers.check_decode_step(self.config, step)
        logits, beam_cache = self._decode(
            shared, last_tokens[:, :, None], beam_cache, start=step, deterministic=True
        )
        return logits[:, :, 0], beam_cache

    def score_targets(
        self,
        shared: HistoryCache,
        target_tokens: jax.Array,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """Teacher-forced logits of many candidate SIDs per request.

        Args:
          shared: from ``encode``.
          target_tokens: int32[batch, num_candidates, num_levels], SIDs y_1..y_L.
          deterministic: False applies dropout (training).

        Returns:
          float32[batch, num_candidates, num_levels, vocab_size]; position t
          (input BOS, y_1..y_{L-1}) predicts y_{t+1}.
        """
        decoder_inputs = layers.shift_targets_right(self.config, target_tokens)
        logits, _ = self._decode(shared, decoder_inputs, None, start=0,
                                 deterministic=deterministic)
        return logits

    def score_candidates(
        self,
        shared: HistoryCache,
        target_tokens: jax.Array,
        *,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        """Teacher-forced logits of many candidates, the shared first position computed once.

        Position 0 (input BOS, predicts y_1) depends on the history only, so it
        is decoded once per request and its keys/values are broadcast to every
        candidate; positions 1..L-1 are decoded per candidate on top of them.
        The result equals ``score_targets`` (deterministic mode) with 1/L less
        decoder work per candidate; with dropout, the shared position draws one
        dropout mask per request instead of one per candidate.

        Args:
          shared: from ``encode``.
          target_tokens: int32[batch, num_candidates, num_levels], SIDs y_1..y_L.
          deterministic: False applies dropout (training).

        Returns:
          ``(first_logits, rest_logits)``: float32[batch, vocab_size], the
          distribution of y_1 (same for every candidate), and
          float32[batch, num_candidates, num_levels - 1, vocab_size], where
          entry t-1 (input y_t) predicts y_{t+1}.
        """
        layers.check_target_tokens(self.config, target_tokens)
        batch, num_candidates, num_levels = target_tokens.shape
        bos = jnp.full((batch, 1, 1), BOS_ID, jnp.int32)
        cache = self.init_beam_cache(shared, 1)
        first_logits, cache = self._decode(shared, bos, cache, start=0, deterministic=deterministic)
        if num_levels == 1:
            empty = jnp.zeros((batch, num_candidates, 0, first_logits.shape[-1]), first_logits.dtype)
            return first_logits[:, 0, 0], empty
        cache = jax.tree.map(
            lambda x: jnp.broadcast_to(x, (x.shape[0], num_candidates) + x.shape[2:]), cache
        )
        rest_logits, _ = self._decode(
            shared, target_tokens[:, :, :-1], cache, start=1, deterministic=deterministic
        )
        return first_logits[:, 0, 0], rest_logits

    def decode_hidden(
        self,
        shared: HistoryCache,
        input_tokens: jax.Array,
        *,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        """Teacher-forced logits and decoder states over up to ``num_levels + 1`` inputs.

        The RL stage's view of the decoder (docs/rl.md): position ``p`` reads
        the prefix ``s_p`` (BOS and the first ``p`` SID tokens); its logits
        predict level ``p`` (meaningless at ``p = num_levels``) and its state
        feeds the value head. One more position than ``score_targets`` so the
        complete SID ``s_L`` gets a state too.

        Args:
          shared: from ``encode``.
          input_tokens: int32[batch, num_seqs, P], ``[BOS, y_1, .., y_{P-1}]``,
            ``1 <= P <= num_levels + 1``; causal, so tokens after position p
            never affect position p.
          deterministic: False applies dropout (training).

        Returns:
          ``(logits, hidden)``: float32[batch, num_seqs, P, vocab_size] (equal to
          ``score_targets``' at ``P = num_levels``) and [batch, num_seqs, P,
          d_model] in the compute dtype, the final-normed state after the final
          dropout: exactly what the output projection reads.
        """
        layers.check_decoder_inputs(self.config, input_tokens)
        hidden, _ = self._decode_states(shared, input_tokens, None, start=0,
                                        deterministic=deterministic)
        return self.embedding.logits(hidden), hidden

    def decode_node(
        self,
        shared: HistoryCache,
        input_tokens: jax.Array,
        depth: jax.Array,
        ancestor_cache: BeamCache | None,
    ) -> tuple[jax.Array, jax.Array, BeamCache]:
        """One decoder position per prefix-tree node, over its ancestors' cached K/V (VED, docs/rl.md).

        Node ``(b, n)`` is the prefix whose last input sits at position
        ``depth[b, n]`` (BOS at 0, the token of level ``depth - 1`` else). It
        computes that position only, attending (with the history, as ever) to
        the K/V its ancestors computed at positions ``0..depth - 1`` and to its
        own, so its logits and state equal :meth:`decode_hidden`'s at position
        ``depth`` of the whole prefix (to rounding) at one position's cost.
        Deterministic (no dropout): the RL stage's rollout search.

        Args:
          shared: from ``encode``.
          input_tokens: int32[batch, nodes], each node's own input token.
          depth: int32[batch, nodes] in ``[0, num_levels)`` (traced).
          ancestor_cache: a :class:`BeamCache` over nodes, leaves [batch, nodes,
            num_levels, heads, head_dim]: slot ``j < depth`` holds the own K/V
            its depth-``j`` ancestor returned; later slots are ignored. None:
            every node is a root (zeros).

        Returns:
          ``(logits float32[batch, nodes, vocab], hidden [batch, nodes, d_model],
          own)``: ``own`` is a BeamCache with leaves [batch, nodes, heads,
          head_dim], this position's K/V, for the node's children.
        """
        if input_tokens.ndim != 2 or depth.shape != input_tokens.shape:
            raise ValueError(
                f"decode_node() wants input_tokens and depth int32[batch, nodes]; got {input_tokens.shape} and"
                f" {depth.shape}."
            )
        if ancestor_cache is None:
            ancestor_cache = self.init_beam_cache(shared, input_tokens.shape[1])
        expected = input_tokens.shape + (self.config.num_levels,)
        if ancestor_cache.keys[0].shape[:3] != expected:
            raise ValueError(
                f"decode_node() wants ancestor_cache leaves [batch, nodes, num_levels, ..] = {expected}; got"
                f" {ancestor_cache.keys[0].shape}."
            )
        hidden, own = self._decode_node_states(shared, input_tokens, jnp.asarray(depth, jnp.int32), ancestor_cache)
        return self.embedding.logits(hidden), hidden, own

    def __call__(
        self,
        history_tokens: jax.Array,
        history_mask: jax.Array,
        target_tokens: jax.Array,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """encode + score_targets: [batch, num_candidates, num_levels, vocab_size] logits."""
        shared = self.encode(history_tokens, history_mask, deterministic=deterministic)
        return self.score_targets(shared, target_tokens, deterministic=deterministic)
