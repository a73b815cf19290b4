"""APAO's prefix-aware losses: prefix scores, pointwise and pairwise prefix
losses, adaptive worst-prefix weights, and the negatives the pairwise loss uses.

Where it sits: model -> **loss** -> train. :func:`training.objective.training_objective`
calls these for the kinds ``"apao_pointwise"`` and ``"apao_pairwise"``
(arXiv 2603.02730); the train step draws the pairwise negatives with
:func:`sample_negatives`. Notation as in :mod:`training.losses`; docs/losses.md
states every formula and where it departs from the paper and its reference code.
All functions are pure ``jax.numpy`` over arrays with static shapes (jit-able).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from training.losses import masked_batch_mean

# ---------------------------------------------------------------------------
# Prefix scores and prefix losses
# ---------------------------------------------------------------------------


def prefix_scores(token_logprobs: jax.Array) -> jax.Array:
    """Prefix scores ``S[..., t-1] = sum_{j<=t} token_logprobs[..., j-1]``.

    Args:
      token_logprobs: ``[..., T]``.

    Returns:
      ``[..., T]``; entry ``t-1`` is the score of the length-``t`` prefix.
    """
    return jnp.cumsum(token_logprobs, axis=-1)


def pointwise_prefix_losses(
    token_logprobs: jax.Array,
    *,
    num_prefixes: int,
    prefix_tau: float = 1.0,
    example_mask: jax.Array | None = None,
) -> jax.Array:
    """APAO pointwise prefix losses, one per prefix length.

    ``L_t = -(1 / sum_b m_b) sum_b m_b (S_bt / t) / prefix_tau`` for
    ``t = 1..num_prefixes``, with ``S_bt = sum_{j<=t} l_bj``.

    Args:
      token_logprobs: ``[batch, T]`` target token log-probs ``l``.
      num_prefixes: ``P <= T`` (static).
      prefix_tau: temperature dividing the length-normalised prefix score.
      example_mask: optional bool ``[batch]``.

    Returns:
      float32 ``[P]``; entry ``t-1`` is ``L_t``.
    """
    scores = prefix_scores(token_logprobs.astype(jnp.float32))[:, :num_prefixes]
    lengths = jnp.arange(1, num_prefixes + 1, dtype=jnp.float32)
    per_example = -(scores / lengths) / prefix_tau
    return masked_batch_mean(per_example, example_mask)


def pairwise_prefix_losses_per_example(
    pos_token_logprobs: jax.Array,
    neg_token_logprobs: jax.Array,
    prefix_match: jax.Array,
    num_distinct_prefixes: jax.Array,
    *,
    num_prefixes: int,
    prefix_tau: float = 1.0,
) -> jax.Array:
    """APAO pairwise prefix loss of every example and prefix length.

    With ``U_bt`` the negatives whose ``t``-prefix differs from the positive's
    (``~prefix_match[b, :, t-1]``), ``n_bt = |U_bt|`` and ``N_t`` =
    ``num_distinct_prefixes[t-1]``::

        c_bt = (N_t - 1) / n_bt
        L_bt = -log( e^{S_t(pos)/tau} / (e^{S_t(pos)/tau}
                                          + c_bt sum_{k in U_bt} e^{S_t(neg_k)/tau}) ) / t
             = softplus( log c_bt + logsumexp_{k in U_bt} S_t(neg_k)/tau - S_t(pos)/tau ) / t

    ``c_bt`` rescales the sampled sum toward the sum over all ``N_t - 1``
    competing prefixes. ``L_bt = 0`` when ``n_bt = 0`` or ``N_t <= 1`` (nothing
    competes). Everything is in log-space, so large score magnitudes neither
    overflow nor underflow.

    Args:
      pos_token_logprobs: ``[batch, T]``.
      neg_token_logprobs: ``[batch, K, T]``.
      prefix_match: bool ``[batch, K, T]``; True masks negative ``k`` at
        prefix length ``t`` (see :func:`prefix_match_from_tokens`).
      num_distinct_prefixes: int ``[>= P]``; distinct length-``t`` prefixes in
        the catalogue (:func:`training.prefix_counts.count_distinct_prefixes`).
      num_prefixes: ``P <= T`` (static).
      prefix_tau: ``tau``.

    Returns:
      float32 ``[batch, P]``.
    """
    pos_scores = prefix_scores(pos_token_logprobs.astype(jnp.float32))[:, :num_prefixes] / prefix_tau
    neg_scores = prefix_scores(neg_token_logprobs.astype(jnp.float32))[..., :num_prefixes] / prefix_tau
    unmasked = ~prefix_match[..., :num_prefixes].astype(bool)  # [batch, K, P]
    num_unmasked = unmasked.sum(axis=1).astype(jnp.float32)  # [batch, P]
    num_competing = jnp.asarray(num_distinct_prefixes)[:num_prefixes].astype(jnp.float32) - 1.0
    has_competitors = (num_unmasked > 0) & (num_competing > 0)[None, :]  # [batch, P]

    masked_neg = jnp.where(unmasked, neg_scores, -jnp.inf)
    # Rows with nothing to compete get zeros instead of all -inf, so logsumexp and
    # its gradient stay finite there; their loss is set to 0 below anyway.
    masked_neg = jnp.where(has_competitors[:, None, :], masked_neg, 0.0)
    neg_logsumexp = jax.nn.logsumexp(masked_neg, axis=1)  # [batch, P]
    log_scale = jnp.log(jnp.maximum(num_competing, 1.0)) - jnp.log(jnp.maximum(num_unmasked, 1.0))
    loss = jax.nn.softplus(neg_logsumexp + log_scale - pos_scores)
    lengths = jnp.arange(1, num_prefixes + 1, dtype=jnp.float32)
    return jnp.where(has_competitors, loss, 0.0) / lengths


def pairwise_prefix_losses(
    pos_token_logprobs: jax.Array,
    neg_token_logprobs: jax.Array,
    prefix_match: jax.Array,
    num_distinct_prefixes: jax.Array,
    *,
    num_prefixes: int,
    prefix_tau: float = 1.0,
    example_mask: jax.Array | None = None,
) -> jax.Array:
    """APAO pairwise prefix losses ``L_t = (1 / sum_b m_b) sum_b m_b L_bt``.

    ``L_bt`` as in :func:`pairwise_prefix_losses_per_example` (examples with no
    competing negative count as 0 in the mean).

    Args:
      pos_token_logprobs: ``[batch, T]``.
      neg_token_logprobs: ``[batch, K, T]``.
      prefix_match: bool ``[batch, K, T]``.
      num_distinct_prefixes: int ``[>= P]``.
      num_prefixes: ``P <= T`` (static).
      prefix_tau: ``tau``.
      example_mask: optional bool ``[batch]``.

    Returns:
      float32 ``[P]``.
    """
    per_example = pairwise_prefix_losses_per_example(
        pos_token_logprobs,
        neg_token_logprobs,
        prefix_match,
        num_distinct_prefixes,
        num_prefixes=num_prefixes,
        prefix_tau=prefix_tau,
    )
    return masked_batch_mean(per_example, example_mask)


def adaptive_prefix_weights(
    prefix_losses: jax.Array, eta: float = 0.0, prior: jax.Array | None = None
) -> jax.Array:
    """Adaptive worst-prefix weights (no gradient flows through them).

    With ``b = stop_gradient(L)`` and non-finite entries of ``L`` set to 0::

        w = b / sum(b);  w = w * exp(eta * b);  w = w / sum(w)

    i.e. ``w_t = b_t e^{eta b_t} / sum_s b_s e^{eta b_s}``, computed as a softmax
    of ``log b_t + eta b_t`` so large ``eta * b`` cannot overflow. Entries with
    ``b_t <= 0`` (a zeroed NaN/inf loss; the prefix losses are otherwise >= 0)
    get weight 0; if every ``b_t <= 0`` the weights are uniform ``1/P``.

    With ``prior`` (``LossConfig.running_weights``: the previous step's
    weights) the first step uses ``prior`` instead of ``b / sum(b)``::

        w = prior * exp(eta * b);  w = w / sum(w)

    so over steps ``w`` is proportional to ``exp(eta * sum of the b's)``
    times the starting weights. Entries with ``prior <= 0`` stay 0; an
    all-zero prior gives uniform weights.

    Args:
      prefix_losses: ``[P]``.
      eta: sharpness; 0 gives ``w = b / sum(b)`` (``w = prior`` with a prior).
      prior: optional ``[P]`` non-negative weights of the previous step.

    Returns:
      float32 ``[P]``, non-negative, summing to 1.
    """
    losses = jax.lax.stop_gradient(prefix_losses.astype(jnp.float32))
    base = jnp.where(jnp.isfinite(losses), losses, 0.0)
    # The first factor: b itself (its normalisation cancels in the softmax) or the prior.
    first = base
    if prior is not None:
        if prior.shape != losses.shape:
            raise ValueError(f"adaptive_prefix_weights: prior has shape {prior.shape}, losses {losses.shape}")
        first = jax.lax.stop_gradient(prior.astype(jnp.float32))
    positive = first > 0
    log_weights = jnp.where(positive, jnp.log(jnp.where(positive, first, 1.0)) + eta * base, -jnp.inf)
    log_weights = jnp.where(positive.any(), log_weights, 0.0)  # all zero -> uniform
    return jax.nn.softmax(log_weights)


# ---------------------------------------------------------------------------
# Negatives: sampling and prefix masks
# ---------------------------------------------------------------------------


def sample_negatives(
    rng: jax.Array, num_items: int, positive_items: jax.Array, neg_k: int
) -> jax.Array:
    """Uniform negative items, never the example's positive item.

    Each of the ``neg_k`` draws is independent (with replacement) and uniform
    over the ``num_items - 1`` items other than ``positive_items[b]``: draw
    ``r`` uniform in ``[0, num_items - 2]`` and return ``r + (r >= positive)``.

    Args:
      rng: a ``jax.random`` key.
      num_items: catalogue size (static, >= 2).
      positive_items: int ``[batch]`` item ids in ``[0, num_items)``.
      neg_k: negatives per example (static).

    Returns:
      int32 ``[batch, neg_k]``.
    """
    if num_items < 2:
        raise ValueError(f"sample_negatives needs a catalogue of at least 2 items, got {num_items}")
    positives = positive_items.astype(jnp.int32)[:, None]
    draws = jax.random.randint(rng, (positives.shape[0], neg_k), 0, num_items - 1, dtype=jnp.int32)
    return draws + (draws >= positives).astype(jnp.int32)


def prefix_match_from_tokens(
    pos_tokens: jax.Array, neg_tokens: jax.Array, *, mask_repeated_negatives: bool = False
) -> jax.Array:
    """Which negatives share the positive's ``t``-prefix, for every ``t``.

    ``match[b, k, t-1] = all_{j<=t} (neg_tokens[b, k, j-1] == pos_tokens[b, j-1])``.
    With ``mask_repeated_negatives`` a negative is also masked when its
    ``t``-prefix equals that of an earlier negative ``k' < k`` (so each competing
    prefix is counted once; the reference code does this). That option builds a
    ``[batch, K, K, T]`` comparison.

    Args:
      pos_tokens: int ``[batch, T]``.
      neg_tokens: int ``[batch, K, T]``.
      mask_repeated_negatives: also mask repeats among the negatives.

    Returns:
      bool ``[batch, K, T]``.
    """
    differs = neg_tokens != pos_tokens[:, None, :]
    match = jnp.cumsum(differs, axis=-1) == 0
    if mask_repeated_negatives:
        num_negatives = neg_tokens.shape[1]
        pair_differs = neg_tokens[:, :, None, :] != neg_tokens[:, None, :, :]  # [b, k, k', T]
        pair_match = jnp.cumsum(pair_differs, axis=-1) == 0
        earlier = jnp.tril(jnp.ones((num_negatives, num_negatives), bool), k=-1)  # k' < k
        match = match | (pair_match & earlier[None, :, :, None]).any(axis=2)
    return match
