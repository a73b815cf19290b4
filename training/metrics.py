"""Per-prefix ranking metrics of the positive item among sampled negatives.

Where it sits: model -> **loss** (:mod:`training.losses`) -> train. The APAO
pairwise objective scores the positive item and ``K`` sampled negative items by
their prefix scores ``S_t = sum_{j<=t} log p(y_j | history, y_<j)``; these
functions report, for every prefix length ``t``, how well the positive ranks
among the negatives whose ``t``-prefix differs from its own. They are logged
next to the per-prefix losses (a beam of width ``W`` keeps the positive's
prefix when fewer than ``W`` competing prefixes outscore it, so MRR_t tracks
what beam search sees).

All functions are pure ``jax.numpy``, jit-able, and carry no gradient (the
inputs go through ``stop_gradient``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _example_weights(example_mask: jax.Array | None, batch_size: int) -> jax.Array:
    """float32 ``[batch]``: 1 for real examples, 0 for padding rows."""
    if example_mask is None:
        return jnp.ones((batch_size,), jnp.float32)
    return example_mask.astype(jnp.float32)


def prefix_auc(
    pos_prefix_scores: jax.Array,
    neg_prefix_scores: jax.Array,
    neg_unmasked: jax.Array,
    example_mask: jax.Array | None = None,
) -> jax.Array:
    """Per-prefix AUC of the positive against the unmasked negatives.

    For example ``b`` and prefix ``t`` (``n_bt`` = number of unmasked negatives)::

        AUC_bt = ( #{k unmasked: S_t(neg_k) < S_t(pos)}
                   + 1/2 #{k unmasked: S_t(neg_k) == S_t(pos)} ) / n_bt
        AUC_t  = sum_b m_b [n_bt > 0] AUC_bt / sum_b m_b [n_bt > 0]

    where ``m_b`` is the example mask. Examples without any unmasked negative at
    prefix ``t`` have no AUC and are left out of the average; if no example has
    one, ``AUC_t`` is NaN (undefined).

    Args:
      pos_prefix_scores: ``[batch, P]`` prefix scores of the positive.
      neg_prefix_scores: ``[batch, K, P]`` prefix scores of the negatives.
      neg_unmasked: bool ``[batch, K, P]``; True where negative ``k`` competes at
        prefix ``t`` (its ``t``-prefix differs from the positive's).
      example_mask: optional bool ``[batch]``; False rows are padding.

    Returns:
      float32 ``[P]``.
    """
    pos = jax.lax.stop_gradient(pos_prefix_scores)[:, None, :]
    neg = jax.lax.stop_gradient(neg_prefix_scores)
    unmasked = neg_unmasked.astype(jnp.float32)
    wins = jnp.where(neg < pos, 1.0, jnp.where(neg == pos, 0.5, 0.0))
    num_unmasked = unmasked.sum(axis=1)  # [batch, P]
    auc_per_example = (wins * unmasked).sum(axis=1) / jnp.maximum(num_unmasked, 1.0)
    weights = _example_weights(example_mask, pos.shape[0])[:, None] * (num_unmasked > 0)
    return (auc_per_example * weights).sum(axis=0) / weights.sum(axis=0)


def prefix_mrr(
    pos_prefix_scores: jax.Array,
    neg_prefix_scores: jax.Array,
    neg_unmasked: jax.Array,
    example_mask: jax.Array | None = None,
) -> jax.Array:
    """Per-prefix reciprocal rank of the positive among the unmasked negatives.

    ::

        MRR_bt = 1 / (1 + #{k unmasked: S_t(neg_k) > S_t(pos)})
        MRR_t  = sum_b m_b MRR_bt / max(sum_b m_b, 1)

    Ties do not push the positive down (optimistic rank). An example without
    unmasked negatives has ``MRR_bt = 1``.

    Args:
      pos_prefix_scores: ``[batch, P]`` prefix scores of the positive.
      neg_prefix_scores: ``[batch, K, P]`` prefix scores of the negatives.
      neg_unmasked: bool ``[batch, K, P]``; True where negative ``k`` competes.
      example_mask: optional bool ``[batch]``; False rows are padding.

    Returns:
      float32 ``[P]``.
    """
    pos = jax.lax.stop_gradient(pos_prefix_scores)[:, None, :]
    neg = jax.lax.stop_gradient(neg_prefix_scores)
    num_above = ((neg > pos) & neg_unmasked).sum(axis=1).astype(jnp.float32)  # [batch, P]
    weights = _example_weights(example_mask, pos.shape[0])[:, None]
    return (weights / (1.0 + num_above)).sum(axis=0) / jnp.maximum(weights.sum(axis=0), 1.0)
