"""APAO pointwise as level-weighted token cross-entropy: the per-level token
weights that a step's prefix weights amount to.

The study's scripts (research/level_profile.py) use it to put every pointwise
variant on one scale; the identity it rests on is derived in docs/losses.md
("Pointwise APAO is level-weighted CE") and tested against the product's
objective in research/tests/test_prefix_weights.py.
"""

from __future__ import annotations

import numpy as np


def pointwise_token_weights(
    prefix_weights: np.ndarray,
    *,
    sid_length: int,
    beta: float,
    prefix_tau: float = 1.0,
    use_ce: bool = True,
) -> np.ndarray:
    """The per-level token-CE weights that APAO pointwise amounts to, for fixed prefix weights.

    ``L_t = -mean_b(S_bt / t) / prefix_tau`` is linear in the token log-probs
    ``l_bj`` and the weights ``w`` carry no gradient, so the pointwise total
    ``[use_ce] CE + beta sum_t w_t L_t`` has the gradient of the level-weighted
    cross-entropy ``-sum_j c_j mean_b l_bj`` with::

        c_j = [use_ce] / T + (beta / prefix_tau) sum_{t=j..P} w_t / t

    (for a finite prefix loss; ``training.objective.training_objective`` zeroes
    non-finite ones).
    APAO pointwise thus changes how much each SID level's token counts, and
    nothing else: CE is ``c_j = 1/T``. Used to put every pointwise variant
    (beta, eta, per-batch or running weights) on one scale (docs/losses.md).

    Args:
      prefix_weights: ``[..., P]`` the step's ``prefix_weights`` (``P <= T``).
      sid_length: ``T``.
      beta, prefix_tau, use_ce: as in ``training.losses.LossConfig``.

    Returns:
      float64 ``[..., T]``.
    """
    weights = np.asarray(prefix_weights, np.float64)
    num_prefixes = weights.shape[-1]
    if not 1 <= num_prefixes <= sid_length:
        raise ValueError(f"pointwise_token_weights: {num_prefixes} prefix weights for SIDs of length {sid_length}")
    per_prefix = weights / np.arange(1, num_prefixes + 1)  # w_t / t
    # sum over t >= j: a reversed cumulative sum
    tail_sums = np.flip(np.cumsum(np.flip(per_prefix, -1), -1), -1)
    pad = [(0, 0)] * (weights.ndim - 1) + [(0, sid_length - num_prefixes)]
    return float(use_ce) / sid_length + (beta / prefix_tau) * np.pad(tail_sums, pad)
