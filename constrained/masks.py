"""Valid-next-token masks along given SIDs, for training losses that
restrict the softmax to the trie (MSL). Data flow: index -> **masks** -> loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from constrained.index import DeviceIndex, csr_children


def _csr_child(index: DeviceIndex, level: int, states: jax.Array, codes: jax.Array) -> jax.Array:
    """Target of the child ``codes`` of ``states`` at ``level``; -1 if absent
    (or if the state is -1). states, codes: int32[batch] -> int32[batch]."""
    child_codes, child_next, valid = csr_children(index, level, jnp.maximum(states, 0))
    hit = valid & (states[:, None] >= 0) & (child_codes == codes[:, None])
    return jnp.where(hit.any(axis=1), jnp.sum(jnp.where(hit, child_next, 0), axis=1), -1)


def _children_mask(index: DeviceIndex, level: int, states: jax.Array, vocab_size: int) -> jax.Array:
    """bool[batch, vocab]: model tokens that are children of each state."""
    child_codes, _, valid = csr_children(index, level, jnp.maximum(states, 0))
    valid &= states[:, None] >= 0
    tokens = jnp.where(valid, child_codes + index.meta.token_offsets[level], vocab_size)
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
