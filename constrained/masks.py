"""Valid-next-token masks along given SIDs, for training losses that
restrict the softmax to the trie (MSL). Data flow: index -> **masks** -> loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from constrained.index import DeviceIndex


def _csr_child(index: DeviceIndex, level: int, states: jax.Array, codes: jax.Array) -> jax.Array:
    """Target of the child ``codes`` of ``states`` at ``level``; -1 if absent.

    states, codes: int32[batch]. Returns int32[batch].
    """
    width = index.meta.max_branch[level]
    safe = jnp.maximum(states, 0)
    starts = jnp.take(index.csr_indptr, safe)
    ends = jnp.take(index.csr_indptr, safe + 1)
    positions = starts[:, None] + jnp.arange(width, dtype=starts.dtype)
    in_row = (positions < ends[:, None]) & (states[:, None] >= 0)
    positions = jnp.minimum(positions, index.csr_codes.shape[0] - 1)
    hit = in_row & (jnp.take(index.csr_codes, positions) == codes[:, None])
    target = jnp.take(index.csr_next, positions)
    return jnp.where(hit.any(axis=1), jnp.sum(jnp.where(hit, target, 0), axis=1), -1)


def _children_mask(index: DeviceIndex, level: int, states: jax.Array, vocab_size: int) -> jax.Array:
    """bool[batch, vocab]: model tokens that are children of each state."""
    width = index.meta.max_branch[level]
    offset = index.meta.token_offsets[level]
    safe = jnp.maximum(states, 0)
    starts = jnp.take(index.csr_indptr, safe)
    ends = jnp.take(index.csr_indptr, safe + 1)
    positions = starts[:, None] + jnp.arange(width, dtype=starts.dtype)
    ok = (positions < ends[:, None]) & (states[:, None] >= 0)
    positions = jnp.minimum(positions, index.csr_codes.shape[0] - 1)
    tokens = jnp.where(ok, jnp.take(index.csr_codes, positions) + offset, vocab_size)
    rows = jnp.arange(states.shape[0])[:, None]
    return jnp.zeros((states.shape[0], vocab_size), bool).at[rows, tokens].set(True, mode="drop")


def valid_next_token_mask(index: DeviceIndex, target_codes: jax.Array, vocab_size: int) -> jax.Array:
    """Which model tokens may follow each prefix of the given SIDs.

    Args:
      index: the device index (built with the model's ``token_offsets``).
      target_codes: int32[batch, levels], SID codes (level codes, not tokens).
      vocab_size: the model's vocabulary size.

    Returns:
      bool[batch, levels, vocab]: entry ``[b, l, v]`` is True when token ``v``
      extends ``target_codes[b, :l]`` toward some catalogue item. Once a
      prefix leaves the trie (a target not in the catalogue) the deeper rows
      are all False.
    """
    meta = index.meta
    batch, num_levels = target_codes.shape
    if num_levels != meta.num_levels:
        raise ValueError(f"target_codes has {num_levels} levels, the index {meta.num_levels}.")
    masks = []
    states = jnp.zeros((batch,), jnp.int32)
    for level in range(num_levels):
        if level == 0:
            row = index.root_next >= 0
            off = meta.token_offsets[0]
            full = jnp.zeros((vocab_size,), bool).at[off : off + row.shape[0]].set(row)
            masks.append(jnp.broadcast_to(full, (batch, vocab_size)))
            states = jnp.take(index.root_next, target_codes[:, 0])
        else:
            masks.append(_children_mask(index, level, states, vocab_size))
            states = _csr_child(index, level, states, target_codes[:, level])
    return jnp.stack(masks, axis=1)
