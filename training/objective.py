"""The training objective: the total loss of the configured kind, and what to log.

Where it sits: model -> **loss** -> train. The train step's ``loss_fn`` hands
the model's logits (and, for APAO pairwise, the negatives') to
:func:`training_objective`, which dispatches on :class:`training.losses.LossConfig`
to CE, MSL (:mod:`training.losses`) or CE plus APAO's weighted prefix losses
(:mod:`training.apao`), so one train step serves every kind. docs/losses.md
states the formulas.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from training.apao import (
    adaptive_prefix_weights,
    pairwise_prefix_losses,
    pointwise_prefix_losses,
    prefix_match_from_tokens,
    prefix_scores,
)
from training.losses import (
    LossConfig,
    masked_batch_mean,
    masked_softmax_loss,
    target_outside_mask_fraction,
    token_log_probs,
)
from training.metrics import prefix_auc, prefix_mrr


def training_objective(
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
    * ``"msl"``: ``total = MSL`` (:func:`training.losses.masked_softmax_loss`, ``msl_tau``).
    * ``"apao_pointwise"`` / ``"apao_pairwise"``:
      ``total = [use_ce] CE + beta * sum_t w_t L~_t``, where ``L`` comes from
      :func:`training.apao.pointwise_prefix_losses` or
      :func:`training.apao.pairwise_prefix_losses` (token
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
      num_distinct_prefixes: int ``[>= P]``; required for ``"apao_pairwise"``
        (:func:`training.prefix_counts.count_distinct_prefixes` of the catalogue).
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
            f"training_objective: pos_logits must be [batch, T, V] and targets [batch, T]; got "
            f"{pos_logits.shape} and {targets.shape}"
        )
    sid_length = targets.shape[1]
    num_prefixes = config.resolve_num_prefixes(sid_length)

    pos_token_logprobs = token_log_probs(pos_logits, targets, config.ce_tau)  # [batch, T]
    ce_loss = masked_batch_mean(-pos_token_logprobs.mean(axis=-1), example_mask)
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
                raise ValueError("training_objective: kind='msl' needs valid_next_mask [batch, T, V]")
            if valid_next_mask.shape != pos_logits.shape:
                raise ValueError(
                    f"training_objective: valid_next_mask shape {valid_next_mask.shape} must equal "
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
                "training_objective: kind='apao_pairwise' needs num_distinct_prefixes [T] "
                "(training.prefix_counts.count_distinct_prefixes(catalogue_sid_codes))"
            )
        if np.shape(num_distinct_prefixes)[0] < num_prefixes:
            raise ValueError(
                f"training_objective: num_distinct_prefixes has {np.shape(num_distinct_prefixes)[0]} "
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
        aux["mean_competing_negatives"] = masked_batch_mean(
            competing.sum(axis=1).astype(jnp.float32), example_mask
        )

    finite_prefix_losses = jnp.where(jnp.isfinite(prefix_losses), prefix_losses, 0.0)
    if config.running_weights and prior_prefix_weights is None:
        raise ValueError("training_objective: LossConfig.running_weights needs prior_prefix_weights [P]")
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
            "training_objective: kind='apao_pairwise' needs exactly one of neg_token_logprobs "
            "[batch, K, T] or neg_logits [batch, K, T, V] (with neg_tokens)"
        )
    if neg_logits is not None:
        if neg_tokens is None:
            raise ValueError("training_objective: neg_logits needs neg_tokens [batch, K, T]")
        neg_token_logprobs = token_log_probs(neg_logits, neg_tokens, config.ce_tau)
    if prefix_match is None:
        if neg_tokens is None:
            raise ValueError(
                "training_objective: kind='apao_pairwise' needs prefix_match [batch, K, T] or neg_tokens"
            )
        prefix_match = prefix_match_from_tokens(
            targets, neg_tokens, mask_repeated_negatives=config.dedup_negative_prefixes
        )
    batch, sid_length = targets.shape
    expected = (batch, config.neg_k, sid_length)
    for name, array in (("neg_token_logprobs", neg_token_logprobs), ("prefix_match", prefix_match)):
        if tuple(array.shape) != expected:
            raise ValueError(
                f"training_objective: {name} has shape {tuple(array.shape)}, expected "
                f"[batch, neg_k, T] = {expected} (LossConfig.neg_k={config.neg_k})"
            )
    return neg_token_logprobs, prefix_match
