"""Training objectives, token level: the loss configuration, cross-entropy and MSL.

Where it sits: data -> model -> **loss** -> train. The train step calls
``loss_fn(model, batch) -> (loss, aux)``; that function runs the model to get
logits over the next SID token at every level and hands them to
:func:`training.objective.training_objective`, which serves every loss kind
through one :class:`LossConfig` (so there is one train step, not one per loss).

The objective's parts live in modules with one job each:

* this module: :class:`LossConfig`, token log-probs, CE and MSL;
* :mod:`training.apao`: APAO's prefix scores, prefix losses, adaptive weights
  and negatives;
* :mod:`training.prefix_counts`: host-side catalogue prefix counts;
* :mod:`training.objective`: the dispatch that computes the configured total.

Notation (shapes in brackets; ``T`` = SID length, ``V`` = vocabulary size,
``K`` = sampled negatives per example, ``P`` = number of prefix lengths that
get a prefix loss):

* ``y_1..y_T``: target SID tokens of an item;
* ``l_j = log p(y_j | history, y_<j)``: token log-prob (:func:`token_log_probs`);
* ``S_t = sum_{j<=t} l_j``: prefix score, the quantity beam search ranks
  prefixes of length ``t`` by (:func:`training.apao.prefix_scores`).

Kinds (``LossConfig.kind``):

* ``"ce"``: token cross-entropy.
* ``"msl"``: masked-softmax loss, cross-entropy with the softmax at each level
  restricted to the valid children (in the item trie) of the target's prefix.
* ``"apao_pointwise"`` / ``"apao_pairwise"``: CE plus APAO's prefix losses
  (arXiv 2603.02730), combined with adaptive worst-prefix weights.

docs/losses.md states every formula implemented here and where it departs
from the paper and its reference code. All loss functions are pure
``jax.numpy`` over arrays with static shapes (jit-able, no Python loops over
the batch).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

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
        to the prefix losses themselves (see :func:`training.apao.adaptive_prefix_weights`).
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
        shares it with all candidates (1/L less decoder work, one dropout
        mask at that position per example); without dropout the two give the
        same loss. Per-candidate is the default because it won the A/B that
        decided it (docs/results.md, "Pairwise: the A/B completed, and
        per-candidate decoding on fresh seeds"); sharing's saving is in
        docs/benchmarks.md, "APAO pairwise vs CE, shared BOS position".
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
# Token log-probs and the padding-aware batch mean
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


def masked_batch_mean(values: jax.Array, example_mask: jax.Array | None) -> jax.Array:
    """Mean over axis 0 of ``values [batch, ...]`` over real rows only; every loss reduces with it.

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
    return masked_batch_mean(per_example, example_mask)


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
    return masked_batch_mean(-token_logprobs.mean(axis=-1), example_mask)


def target_outside_mask_fraction(
    targets: jax.Array, valid_next_mask: jax.Array, example_mask: jax.Array | None = None
) -> jax.Array:
    """Fraction of real ``(example, level)`` pairs whose target is not in ``valid_next_mask``.

    Should be 0; anything else means the mask and the targets disagree (wrong
    index or vocabulary). Logged by :func:`training.objective.training_objective`
    for kind ``"msl"``.

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
    return masked_batch_mean((~target_valid).astype(jnp.float32).mean(axis=-1), example_mask)
