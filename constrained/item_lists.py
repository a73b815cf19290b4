"""Sparse per-request item lists (allow / exclude) as a test on trie targets.

Where it sits: index -> **filters** -> decode. A request's list is a short
array of input item rows (``int[B, A]``, ``-1`` padding), so its shape is a
list width the caller buckets, never the catalogue size. Because the index
numbers items in SID order, the items under any trie state are one contiguous
range of sorted rows ``[state_row_lo, state_row_hi)`` (``constrained.index``);
so "how many listed items lie under this prefix" is two binary searches in the
request's sorted list, O(log A) per candidate and decode step:

* allow list: a prefix stays alive when at least one listed item lies under it;
* exclusion list: a prefix stays alive when not all of its items are listed;
* both: the exclusions are first removed from the allow list (:func:`drop_listed`),
  since two separate tests would keep a prefix whose allowed items are all
  excluded while its other items are not allowed.

``constrained.beam_search`` prunes candidates with these before they take a
beam, so a filtered search equals a search over the remaining sub-catalogue;
``constrained.reference.reference_listed_prefix`` is the NumPy oracle.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from constrained.index import DeviceIndex

__all__ = ["count_listed", "drop_listed", "sorted_list", "target_row_range"]


def sorted_list(index: DeviceIndex, item_rows: jax.Array) -> jax.Array:
    """Per request, the listed items as ascending *sorted* rows without repeats.

    Args:
      index: the device index.
      item_rows: ``int[B, A]`` input item rows, ``-1`` padding, repeats allowed.

    Returns:
      ``int32[B, A]``: sorted rows ascending; padding and repeats become the
      sentinel ``num_items`` (past every row), so they count under no prefix.
    """
    sentinel = index.meta.num_items
    rows = jnp.where(
        item_rows >= 0,
        jnp.take(index.input_to_sorted, jnp.clip(item_rows, 0, sentinel - 1)),
        sentinel,
    ).astype(jnp.int32)
    rows = jnp.sort(rows, axis=1)
    repeat = jnp.concatenate([jnp.zeros_like(rows[:, :1], bool), rows[:, 1:] == rows[:, :-1]], axis=1)
    return jnp.sort(jnp.where(repeat, sentinel, rows), axis=1)


def target_row_range(index: DeviceIndex, targets: jax.Array, leaf: bool) -> tuple[jax.Array, jax.Array]:
    """The sorted item rows ``[lo, hi)`` under candidate targets.

    ``targets``: ``int[...]`` trie states, or sorted item rows when ``leaf``
    (the last level); negative targets are read as 0 (callers mask them).
    """
    flat = jnp.maximum(targets, 0)
    if leaf:
        return flat, flat + 1
    return jnp.take(index.state_row_lo, flat), jnp.take(index.state_row_hi, flat)


def count_listed(listed: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """How many of each request's listed rows lie in ``[lo, hi)``.

    Args:
      listed: ``int32[B, A]`` from :func:`sorted_list`.
      lo, hi: ``int[B, C]`` row ranges (:func:`target_row_range`, flattened per request).

    Returns:
      ``int32[B, C]``.
    """
    below = jax.vmap(lambda rows, q: jnp.searchsorted(rows, q, side="left"))
    return (below(listed, hi) - below(listed, lo)).astype(jnp.int32)


def drop_listed(listed: jax.Array, removed: jax.Array, sentinel: int) -> jax.Array:
    """``listed`` without the rows of ``removed``, still sorted: an allow list with its exclusions taken out.

    Args:
      listed, removed: ``int32[B, A]`` and ``int32[B, E]`` from :func:`sorted_list`.
      sentinel: ``index.meta.num_items``, the padding value.

    Returns:
      ``int32[B, A]``: ascending, dropped rows replaced by ``sentinel``. O(A log E) per request.
    """
    dropped = count_listed(removed, listed, listed + 1) > 0
    return jnp.sort(jnp.where(dropped, sentinel, listed), axis=1)
