"""Training objectives: cross-entropy, MSL and APAO's prefix-aware losses.

Where it sits: data -> model -> **loss** -> train. The train step calls
``loss_fn(model, batch) -> (loss, aux)``; that function runs the model to get
logits over the next SID token at every level and hands them to
:func:`apao_objective`, which serves every loss kind through one
:class:`LossConfig` (so there is one train step, not one per loss).

Notation (shapes in brackets; ``T`` = SID length, ``V`` = vocabulary size,
``K`` = sampled negatives per example, ``P`` = number of prefix lengths that
get a prefix loss):

* ``y_1..y_T``: target SID tokens of an item;
* ``l_j = log p(y_j | history, y_<j)``: token log-prob (:func:`token_log_probs`);
* ``S_t = sum_{j<=t} l_j``: prefix score, the quantity beam search ranks
  prefixes of length ``t`` by (:func:`prefix_scores`).

Kinds (``LossConfig.kind``):

* ``"ce"``: token cross-entropy.
* ``"msl"``: masked-softmax loss, cross-entropy with the softmax at each level
  restricted to the valid children (in the item trie) of the target's prefix.
* ``"apao_pointwise"`` / ``"apao_pairwise"``: CE plus APAO's prefix losses
  (arXiv 2603.02730), combined with adaptive worst-prefix weights.

docs/losses.md states every formula implemented here and where it departs
from the paper and its reference code. All loss functions are pure
``jax.numpy`` over arrays with static shapes (jit-able, no Python loops over
the batch); :func:`count_distinct_prefixes` is host-side NumPy, run once per
catalogue.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from training.metrics import prefix_auc, prefix_mrr

LossKind = Literal["ce", "msl", "apao_pointwise", "apao_pairwise"]
LOSS_KINDS: tuple[str, ...] = ("ce", "msl", "apao_pointwise", "apao_pairwise")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Which objective to train with, and its hyper-parameters.

    Frozen and hashable, so it can be a static argument of the jitted step.

    Attributes:
      kind: ``"ce" | "msl" | "apao_pointwise" | "apao_pairwise"``.
      beta: weight of the (adaptively weighted) prefix loss in the total.
      eta: sharpness of the worst-prefix weights; 0 gives weights proportional
        to the prefix losses themselves (see :func:`adaptive_prefix_weights`).
      prefix_tau: temperature dividing prefix scores in the prefix losses.
      ce_tau: temperature of the softmax behind CE and behind the token
        log-probs that feed the prefix losses (as in the reference code).
      msl_tau: temperature of the masked softmax (kind ``"msl"``).
      neg_k: negatives sampled per example for ``"apao_pairwise"``; the
        objective checks the negatives it receives against it.
      use_ce: APAO kinds only; False drops the CE term (prefix loss alone).
      num_prefixes: prefix lengths ``t = 1..num_prefixes`` that get a prefix
        loss. None means every length ``1..T`` of the targets: genrec targets
        are the ``T`` SID codes without an end token, and the paper's prefixes
        ``m = 1..4`` for 4-level SIDs include the full SID (the reference code's
        ``range(1, T)`` runs over targets that end with EOS). ``T - 1`` leaves
        the full-length prefix out.
      dedup_negative_prefixes: when the objective builds ``prefix_match`` from
        negative tokens, also mask a negative whose ``t``-prefix repeats an
        earlier negative's (the reference code does; the issue's spec does not).
      share_bos_position: ``"apao_pairwise"`` only. False (default, the
        reference code's way): every one of the ``1 + neg_k`` candidates is
        decoded in full, with its own dropout masks; the history is still
        encoded once per example. True: the training step decodes the BOS
        position, which depends on the history alone, once per example and
        shares it with all candidates (1/L less decoder work; in bf16 the
        step took ~6% less time, two separate runs, docs/benchmarks.md; one
        dropout mask at that position per example). Without
        dropout the two give the same loss. On Office (beta 0.1, seeds 1-3)
        per-candidate decoding gave a higher Recall@10 than sharing
        (+3.9%, permutation p 0.05, the pre-registered rule of
        research/lanes/pairwise_ab.sh), hence the default.
      running_weights: APAO kinds only. False (default, the issue's spec and
        the reference code): the adaptive weights are recomputed from each
        batch's prefix losses alone. True: they carry over from step to step,
        ``w <- w_prev * exp(eta * b)`` normalised, starting uniform, as one
        description of the paper's method has it; then ``eta`` accumulates
        over the run instead of acting within one batch, where it barely
        moves the weights. The train step keeps ``w`` in its optimizer state
        (``training.train_step.init_opt_state``), so it is checkpointed.
    """

    kind: LossKind = "ce"
    beta: float = 0.1
    eta: float = 0.0
    prefix_tau: float = 1.0
    ce_tau: float = 1.0
    msl_tau: float = 1.0
    neg_k: int = 100
    use_ce: bool = True
    num_prefixes: int | None = None
    dedup_negative_prefixes: bool = False
    share_bos_position: bool = False
    running_weights: bool = False

    def __post_init__(self):
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"LossConfig.kind={self.kind!r}; expected one of {LOSS_KINDS}")
        for name in ("prefix_tau", "ce_tau", "msl_tau"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LossConfig.{name}={getattr(self, name)!r} must be > 0")
        if self.beta < 0:
            raise ValueError(f"LossConfig.beta={self.beta!r} must be >= 0")
        if self.neg_k < 1:
            raise ValueError(f"LossConfig.neg_k={self.neg_k!r} must be >= 1")
        if self.num_prefixes is not None and self.num_prefixes < 1:
            raise ValueError(
                f"LossConfig.num_prefixes={self.num_prefixes!r} must be >= 1 or None (all levels)"
            )
        if self.kind in ("ce", "msl") and not self.use_ce:
            raise ValueError(f"LossConfig.use_ce=False only applies to APAO kinds, not {self.kind!r}")
        if self.kind in ("ce", "msl") and self.running_weights:
            raise ValueError(f"LossConfig.running_weights=True only applies to APAO kinds, not {self.kind!r}")

    def resolve_num_prefixes(self, sid_length: int) -> int:
        """Number of prefix lengths ``P`` for targets of length ``sid_length``."""
        if self.num_prefixes is None:
            return sid_length
        if self.num_prefixes > sid_length:
            raise ValueError(
                f"LossConfig.num_prefixes={self.num_prefixes} exceeds the SID length "
                f"{sid_length} of the targets; use at most {sid_length} (or None)"
            )
        return self.num_prefixes


# ---------------------------------------------------------------------------
# Token log-probs and prefix scores
# ---------------------------------------------------------------------------


def token_log_probs(
    logits: jax.Array, target_tokens: jax.Array, temperature: float = 1.0
) -> jax.Array:
    """Log-prob of each target token under a tempered softmax.

    ``l[..., j] = log_softmax(logits[..., j, :] / temperature)[target_tokens[..., j]]``,
    computed in float32 as ``z_y / tau - logsumexp(z / tau)``.

    Args:
      logits: ``[..., T, V]`` (e.g. ``[batch, T, V]`` or ``[batch, K, T, V]``).
      target_tokens: int ``[..., T]``.
      temperature: softmax temperature ``tau > 0``.

    Returns:
      float32 ``[..., T]``.
    """
    scaled = logits.astype(jnp.float32) / temperature
    target_logit = jnp.take_along_axis(scaled, target_tokens[..., None].astype(jnp.int32), axis=-1)
    return target_logit[..., 0] - jax.nn.logsumexp(scaled, axis=-1)


def prefix_scores(token_logprobs: jax.Array) -> jax.Array:
    """Prefix scores ``S[..., t-1] = sum_{j<=t} token_logprobs[..., j-1]``.

    Args:
      token_logprobs: ``[..., T]``.

    Returns:
      ``[..., T]``; entry ``t-1`` is the score of the length-``t`` prefix.
    """
    return jnp.cumsum(token_logprobs, axis=-1)


def _masked_batch_mean(values: jax.Array, example_mask: jax.Array | None) -> jax.Array:
    """Mean over axis 0 of ``values [batch, ...]`` over real rows only.

    ``sum_b m_b v_b / max(sum_b m_b, 1)``; padding rows are removed with
    ``where`` (not a multiply), so a non-finite value there cannot leak in.
    """
    if example_mask is None:
        return values.mean(axis=0)
    mask = example_mask.astype(bool).reshape((-1,) + (1,) * (values.ndim - 1))
    total = jnp.where(mask, values, 0.0).sum(axis=0)
    return total / jnp.maximum(example_mask.astype(jnp.float32).sum(), 1.0)


# ---------------------------------------------------------------------------
# CE and MSL
# ---------------------------------------------------------------------------


def cross_entropy_loss(
    logits: jax.Array,
    targets: jax.Array,
    *,
    temperature: float = 1.0,
    example_mask: jax.Array | None = None,
) -> jax.Array:
    """Mean token cross-entropy with temperature.

    ``CE = (1 / sum_b m_b) sum_b m_b (1/T) sum_j -log_softmax(z_bj / tau)[y_bj]``.

    Args:
      logits: ``[batch, T, V]``.
      targets: int ``[batch, T]``.
      temperature: ``tau`` (``LossConfig.ce_tau``).
      example_mask: optional bool ``[batch]``; False rows are padding and
        contribute nothing (the mean is over real examples; 0 if there are none).

    Returns:
      float32 scalar.
    """
    per_example = -token_log_probs(logits, targets, temperature).mean(axis=-1)
    return _masked_batch_mean(per_example, example_mask)


def masked_softmax_token_log_probs(
    logits: jax.Array,
    targets: jax.Array,
    valid_next_mask: jax.Array,
    temperature: float = 1.0,
) -> jax.Array:
    """Token log-probs under a softmax restricted to the valid next tokens.

    With ``A_bj = valid_next_mask[b, j] | onehot(y_bj)`` (the target is always
    kept in the support, so the value is finite even when the mask is wrong)::

        l_bj = z_bj[y_bj] / tau - log sum_{v in A_bj} exp(z_bj[v] / tau)

    Args:
      logits: ``[batch, T, V]``.
      targets: int ``[batch, T]``.
      valid_next_mask: bool ``[batch, T, V]``; ``[b, j, v]`` is True when ``v`` is
        a child of the prefix ``y_b1..y_bj-1`` in the item trie (from the
        constrained index).
      temperature: ``tau`` (``LossConfig.msl_tau``).

    Returns:
      float32 ``[batch, T]``.
    """
    vocab_ids = jnp.arange(logits.shape[-1], dtype=jnp.int32)
    is_target = vocab_ids == targets[..., None].astype(jnp.int32)
    allowed = valid_next_mask.astype(bool) | is_target
    scaled = logits.astype(jnp.float32) / temperature
    target_logit = jnp.take_along_axis(scaled, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    allowed_logsumexp = jax.nn.logsumexp(jnp.where(allowed, scaled, -jnp.inf), axis=-1)
    return target_logit - allowed_logsumexp


def masked_softmax_loss(
    logits: jax.Array,
    targets: jax.Array,
    valid_next_mask: jax.Array,
    *,
    temperature: float = 1.0,
    example_mask: jax.Array | None = None,
) -> jax.Array:
    """MSL: cross-entropy over the trie-valid children at every level.

    ``MSL = (1 / sum_b m_b) sum_b m_b (1/T) sum_j -l_bj`` with ``l_bj`` from
    :func:`masked_softmax_token_log_probs`. With an all-True mask it equals
    :func:`cross_entropy_loss` at the same temperature.

    Args:
      logits: ``[batch, T, V]``.
      targets: int ``[batch, T]``.
      valid_next_mask: bool ``[batch, T, V]`` (see
        :func:`masked_softmax_token_log_probs`).
      temperature: ``tau`` (``LossConfig.msl_tau``).
      example_mask: optional bool ``[batch]``.

    Returns:
      float32 scalar.
    """
    token_logprobs = masked_softmax_token_log_probs(logits, targets, valid_next_mask, temperature)
    return _masked_batch_mean(-token_logprobs.mean(axis=-1), example_mask)


def target_outside_mask_fraction(
    targets: jax.Array, valid_next_mask: jax.Array, example_mask: jax.Array | None = None
) -> jax.Array:
    """Fraction of real ``(example, level)`` pairs whose target is not in ``valid_next_mask``.

    Should be 0; anything else means the mask and the targets disagree (wrong
    index or vocabulary). Logged by :func:`apao_objective` for kind ``"msl"``.

    Args:
      targets: int ``[batch, T]``.
      valid_next_mask: bool ``[batch, T, V]``.
      example_mask: optional bool ``[batch]``.

    Returns:
      float32 scalar.
    """
    target_valid = jnp.take_along_axis(
        valid_next_mask.astype(bool), targets[..., None].astype(jnp.int32), axis=-1
    )[..., 0]
    return _masked_batch_mean((~target_valid).astype(jnp.float32).mean(axis=-1), example_mask)


# ---------------------------------------------------------------------------
# APAO prefix losses
# ---------------------------------------------------------------------------


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
    return _masked_batch_mean(per_example, example_mask)


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
        the catalogue (:func:`count_distinct_prefixes`).
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
    return _masked_batch_mean(per_example, example_mask)


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

    (for a finite prefix loss; :func:`apao_objective` zeroes non-finite ones).
    APAO pointwise thus changes how much each SID level's token counts, and
    nothing else: CE is ``c_j = 1/T``. Used to put every pointwise variant
    (beta, eta, per-batch or running weights) on one scale (docs/losses.md).

    Args:
      prefix_weights: ``[..., P]`` the step's ``prefix_weights`` (``P <= T``).
      sid_length: ``T``.
      beta, prefix_tau, use_ce: as in :class:`LossConfig`.

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


# ---------------------------------------------------------------------------
# Negatives: sampling, prefix masks, catalogue prefix counts
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


def count_distinct_prefixes(sid_codes: np.ndarray) -> np.ndarray:
    """Number of distinct length-``t`` prefixes in a catalogue, ``t = 1..T``.

    Sorts the rows lexicographically; a new length-``t`` prefix starts at every
    row whose first ``t`` codes differ from the previous row's.

    Args:
      sid_codes: int ``[N, T]``, one row per item (codes or token ids).

    Returns:
      int64 ``[T]``; entry ``t-1`` counts distinct length-``t`` prefixes (the
      last entry is the number of distinct SIDs).
    """
    sid_codes = np.asarray(sid_codes)
    if sid_codes.ndim != 2:
        raise ValueError(f"count_distinct_prefixes expects sid_codes [N, T], got shape {sid_codes.shape}")
    num_items, sid_length = sid_codes.shape
    if num_items == 0:
        return np.zeros(sid_length, np.int64)
    order = np.lexsort(sid_codes.T[::-1])  # primary key: column 0
    sorted_codes = sid_codes[order]
    changed = sorted_codes[1:] != sorted_codes[:-1]  # [N-1, T]
    prefix_changed = np.logical_or.accumulate(changed, axis=1)
    return 1 + prefix_changed.sum(axis=0).astype(np.int64)


# ---------------------------------------------------------------------------
# The one entry point the train step calls
# ---------------------------------------------------------------------------


def apao_objective(
    pos_logits: jax.Array,
    targets: jax.Array,
    *,
    config: LossConfig,
    example_mask: jax.Array | None = None,
    valid_next_mask: jax.Array | None = None,
    neg_token_logprobs: jax.Array | None = None,
    neg_logits: jax.Array | None = None,
    neg_tokens: jax.Array | None = None,
    prefix_match: jax.Array | None = None,
    num_distinct_prefixes: jax.Array | None = None,
    prior_prefix_weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Total training loss of any kind, and what to log.

    With ``l = token_log_probs(pos_logits, targets, ce_tau)`` and ``CE`` the
    mean of ``-l``:

    * ``"ce"``:  ``total = CE``.
    * ``"msl"``: ``total = MSL`` (:func:`masked_softmax_loss`, ``msl_tau``).
    * ``"apao_pointwise"`` / ``"apao_pairwise"``:
      ``total = [use_ce] CE + beta * sum_t w_t L~_t``, where ``L`` comes from
      :func:`pointwise_prefix_losses` or :func:`pairwise_prefix_losses` (token
      log-probs at ``ce_tau``, prefix scores at ``prefix_tau``), ``L~`` is ``L``
      with non-finite entries set to 0, and ``w = adaptive_prefix_weights(L, eta)``.

    Args:
      pos_logits: ``[batch, T, V]`` logits at the positive's (teacher-forced) SID.
      targets: int ``[batch, T]`` positive SID tokens.
      config: the :class:`LossConfig` (static under jit).
      example_mask: optional bool ``[batch]``; False rows are padding. Padding
        rows must still hold finite logits (zeros are fine).
      valid_next_mask: bool ``[batch, T, V]``; required for ``"msl"``.
      neg_token_logprobs: ``[batch, K, T]`` negatives' token log-probs, computed
        with ``token_log_probs(neg_logits, neg_tokens, config.ce_tau)``; or pass
        ``neg_logits`` ``[batch, K, T, V]`` with ``neg_tokens`` instead.
      neg_logits: see ``neg_token_logprobs``.
      neg_tokens: int ``[batch, K, T]`` negative SID tokens; needed with
        ``neg_logits`` or when ``prefix_match`` is not given.
      prefix_match: bool ``[batch, K, T]``; default
        ``prefix_match_from_tokens(targets, neg_tokens,
        mask_repeated_negatives=config.dedup_negative_prefixes)``.
      num_distinct_prefixes: int ``[>= P]``; required for ``"apao_pairwise"``.
      prior_prefix_weights: ``[P]``, the previous step's ``prefix_weights``;
        required with ``config.running_weights`` (ignored otherwise).

    Returns:
      ``(total_loss, aux)``. ``aux`` always holds ``total_loss``, ``ce_loss``
      (unconstrained CE at ``ce_tau``, for comparison across kinds),
      ``prefix_losses`` ``[P]`` and ``prefix_weights`` ``[P]``, and
      ``weighted_prefix_loss`` (``sum_t w_t L~_t``, before ``beta``). For
      ``"ce"``/``"msl"`` the prefix losses are the pointwise ones, logged only
      (no gradient, weights 0). ``"msl"`` adds ``msl_loss`` and
      ``msl_target_outside_mask_fraction``; ``"apao_pairwise"`` adds
      ``prefix_auc``, ``prefix_mrr`` (:mod:`training.metrics`) and
      ``mean_competing_negatives`` ``[P]``.
    """
    if pos_logits.ndim != 3 or targets.shape != pos_logits.shape[:2]:
        raise ValueError(
            f"apao_objective: pos_logits must be [batch, T, V] and targets [batch, T]; got "
            f"{pos_logits.shape} and {targets.shape}"
        )
    sid_length = targets.shape[1]
    num_prefixes = config.resolve_num_prefixes(sid_length)

    pos_token_logprobs = token_log_probs(pos_logits, targets, config.ce_tau)  # [batch, T]
    ce_loss = _masked_batch_mean(-pos_token_logprobs.mean(axis=-1), example_mask)
    aux: dict[str, Any] = {"ce_loss": ce_loss}

    if config.kind in ("ce", "msl"):
        prefix_losses = pointwise_prefix_losses(
            jax.lax.stop_gradient(pos_token_logprobs),
            num_prefixes=num_prefixes,
            prefix_tau=config.prefix_tau,
            example_mask=example_mask,
        )
        aux["prefix_losses"] = prefix_losses
        aux["prefix_weights"] = jnp.zeros_like(prefix_losses)
        aux["weighted_prefix_loss"] = jnp.zeros((), jnp.float32)
        if config.kind == "ce":
            total = ce_loss
        else:
            if valid_next_mask is None:
                raise ValueError("apao_objective: kind='msl' needs valid_next_mask [batch, T, V]")
            if valid_next_mask.shape != pos_logits.shape:
                raise ValueError(
                    f"apao_objective: valid_next_mask shape {valid_next_mask.shape} must equal "
                    f"pos_logits shape {pos_logits.shape}"
                )
            total = masked_softmax_loss(
                pos_logits,
                targets,
                valid_next_mask,
                temperature=config.msl_tau,
                example_mask=example_mask,
            )
            aux["msl_loss"] = total
            aux["msl_target_outside_mask_fraction"] = target_outside_mask_fraction(
                targets, valid_next_mask, example_mask
            )
        aux["total_loss"] = total
        return total, aux

    if config.kind == "apao_pointwise":
        prefix_losses = pointwise_prefix_losses(
            pos_token_logprobs,
            num_prefixes=num_prefixes,
            prefix_tau=config.prefix_tau,
            example_mask=example_mask,
        )
    else:  # apao_pairwise
        neg_token_logprobs, prefix_match = _pairwise_inputs(
            targets, config, neg_token_logprobs, neg_logits, neg_tokens, prefix_match
        )
        if num_distinct_prefixes is None:
            raise ValueError(
                "apao_objective: kind='apao_pairwise' needs num_distinct_prefixes [T] "
                "(count_distinct_prefixes(catalogue_sid_codes))"
            )
        if np.shape(num_distinct_prefixes)[0] < num_prefixes:
            raise ValueError(
                f"apao_objective: num_distinct_prefixes has {np.shape(num_distinct_prefixes)[0]} "
                f"entries but {num_prefixes} prefix lengths are trained"
            )
        prefix_losses = pairwise_prefix_losses(
            pos_token_logprobs,
            neg_token_logprobs,
            prefix_match,
            num_distinct_prefixes,
            num_prefixes=num_prefixes,
            prefix_tau=config.prefix_tau,
            example_mask=example_mask,
        )
        competing = ~prefix_match[..., :num_prefixes].astype(bool)
        pos_scores = prefix_scores(pos_token_logprobs)[:, :num_prefixes]
        neg_scores = prefix_scores(neg_token_logprobs.astype(jnp.float32))[..., :num_prefixes]
        aux["prefix_auc"] = prefix_auc(pos_scores, neg_scores, competing, example_mask)
        aux["prefix_mrr"] = prefix_mrr(pos_scores, neg_scores, competing, example_mask)
        aux["mean_competing_negatives"] = _masked_batch_mean(
            competing.sum(axis=1).astype(jnp.float32), example_mask
        )

    finite_prefix_losses = jnp.where(jnp.isfinite(prefix_losses), prefix_losses, 0.0)
    if config.running_weights and prior_prefix_weights is None:
        raise ValueError("apao_objective: LossConfig.running_weights needs prior_prefix_weights [P]")
    prefix_weights = adaptive_prefix_weights(
        prefix_losses, config.eta, prior_prefix_weights if config.running_weights else None
    )
    weighted_prefix_loss = (prefix_weights * finite_prefix_losses).sum()
    total = config.beta * weighted_prefix_loss
    if config.use_ce:
        total = total + ce_loss
    aux["prefix_losses"] = prefix_losses
    aux["prefix_weights"] = prefix_weights
    aux["weighted_prefix_loss"] = weighted_prefix_loss
    aux["total_loss"] = total
    return total, aux


def _pairwise_inputs(
    targets: jax.Array,
    config: LossConfig,
    neg_token_logprobs: jax.Array | None,
    neg_logits: jax.Array | None,
    neg_tokens: jax.Array | None,
    prefix_match: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """Resolves and checks the negatives' token log-probs ``[batch, K, T]`` and mask."""
    if (neg_token_logprobs is None) == (neg_logits is None):
        raise ValueError(
            "apao_objective: kind='apao_pairwise' needs exactly one of neg_token_logprobs "
            "[batch, K, T] or neg_logits [batch, K, T, V] (with neg_tokens)"
        )
    if neg_logits is not None:
        if neg_tokens is None:
            raise ValueError("apao_objective: neg_logits needs neg_tokens [batch, K, T]")
        neg_token_logprobs = token_log_probs(neg_logits, neg_tokens, config.ce_tau)
    if prefix_match is None:
        if neg_tokens is None:
            raise ValueError(
                "apao_objective: kind='apao_pairwise' needs prefix_match [batch, K, T] or neg_tokens"
            )
        prefix_match = prefix_match_from_tokens(
            targets, neg_tokens, mask_repeated_negatives=config.dedup_negative_prefixes
        )
    batch, sid_length = targets.shape
    expected = (batch, config.neg_k, sid_length)
    for name, array in (("neg_token_logprobs", neg_token_logprobs), ("prefix_match", prefix_match)):
        if tuple(array.shape) != expected:
            raise ValueError(
                f"apao_objective: {name} has shape {tuple(array.shape)}, expected "
                f"[batch, neg_k, T] = {expected} (LossConfig.neg_k={config.neg_k})"
            )
    return neg_token_logprobs, prefix_match
