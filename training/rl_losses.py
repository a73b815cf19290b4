"""The RL stage's rewards and losses (V-STAR): GRPO, Sibling-GRPO, the value loss and the KL.

Where it sits: rollouts -> **RL loss** -> RL train step. The RL loop samples
``G`` SIDs per request (``constrained/sampling.py``, ``constrained/ved.py``),
scores their token log-probs under the trie-restricted policy (new, old and
frozen reference), the exact KL to the reference at each visited prefix and
the value head's ``V(s_0) .. V(s_L)``, and hands them to
:func:`rl_objective`, which returns the total loss and everything the loop logs.

Every piece is a pure ``jax.numpy`` function over static shapes (jit-able, no
Python loops over requests or rollouts), each checked against a plain NumPy
reference in ``tests/test_rl_losses.py``. docs/rl.md fixes the contracts; the
method and our decisions (dense per-level value reward, per-node sibling
weighting, clipping) are in ``shared/vstar-method.md`` (Eqs. 15-19).

Notation (docs/rl.md): ``B`` requests, ``G`` rollouts each, ``L`` SID levels;
``sid_codes int32[B, G, L]`` (-1 in invalid slots), ``valid bool[B, G]``,
``target_codes int32[B, L]``; state ``s_p`` is the prefix of length ``p``
(``s_0`` the root, ``s_L`` a complete SID); token ``l`` (0-based) is the code
of level ``l``, chosen at ``s_l``. Invalid rollouts never contribute: every
function masks with ``where`` on sanitised inputs, so NaN or -inf in an
invalid slot (log-prob of code -1) reaches neither the loss nor its gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

RewardKind = Literal["exact", "prefix_credit", "ranking"]
REWARD_KINDS: tuple[str, ...] = ("exact", "prefix_credit", "ranking")
KLEstimator = Literal["k3", "exact"]
KL_ESTIMATORS: tuple[str, ...] = ("k3", "exact")


# ---------------------------------------------------------------------------
# Rewards and the TD target
# ---------------------------------------------------------------------------


def default_level_weights(num_levels: int) -> tuple[float, ...]:
    """Per-level reward weights ``w_1 .. w_L``, rising with depth, ``w_L = 1`` (decision 1).

    4 levels: ``(0.1, 0.2, 0.3, 1.0)`` (our decision); 3 levels:
    ``(0.3, 0.5, 1.0)`` (the paper). Any other ``L``: ``w_l = 0.5 * l / (L - 1)``
    for ``l < L`` and ``w_L = 1`` (linear up to one half, then the full match
    scores 1; ``L = 1`` gives ``(1.0,)``, ``L = 2`` gives ``(0.5, 1.0)``).
    """
    if num_levels < 1:
        raise ValueError(f"default_level_weights: num_levels={num_levels} must be >= 1")
    if num_levels == 4:
        return (0.1, 0.2, 0.3, 1.0)
    if num_levels == 3:
        return (0.3, 0.5, 1.0)
    if num_levels == 1:
        return (1.0,)
    return tuple(0.5 * l / (num_levels - 1) for l in range(1, num_levels)) + (1.0,)


def _resolve_level_weights(level_weights: tuple[float, ...] | None, num_levels: int, where: str) -> jax.Array:
    if level_weights is None:
        level_weights = default_level_weights(num_levels)
    if len(level_weights) != num_levels:
        raise ValueError(
            f"{where}: level_weights has {len(level_weights)} entries but the SIDs have {num_levels} levels; "
            f"pass one weight per level or None (default_level_weights)"
        )
    return jnp.asarray(level_weights, jnp.float32)


def matched_prefix_length(sid_codes: jax.Array, target_codes: jax.Array) -> jax.Array:
    """Length of the longest common prefix of each rollout with its request's target.

    Args:
      sid_codes: int32 ``[B, G, L]`` (invalid slots hold -1, which matches no code).
      target_codes: int32 ``[B, L]``.

    Returns:
      int32 ``[B, G]`` in ``0 .. L`` (``L`` = the exact target item).
    """
    level_match = sid_codes == target_codes[:, None, :]  # [B, G, L]
    prefix_match = jnp.cumprod(level_match.astype(jnp.int32), axis=-1)
    return prefix_match.sum(axis=-1).astype(jnp.int32)


def sequence_rewards(
    sid_codes: jax.Array,
    target_codes: jax.Array,
    valid: jax.Array,
    *,
    kind: RewardKind = "exact",
    level_weights: tuple[float, ...] | None = None,
    rank_scores: jax.Array | None = None,
) -> jax.Array:
    """The rollout reward of GRPO and Sibling-GRPO (docs/rl.md, "Rewards").

    ``"exact"``: 1 for the target item, else 0. ``"prefix_credit"``: ``w_m``
    for the deepest matched level ``m`` (0 if ``m = 0``; ``w_L = 1``, so the
    target still scores 1). ``"ranking"``: ``"exact"`` plus, in a group that
    holds the target, a penalty on each miss by its rank ``i`` (0 = first)
    among the group's valid rollouts by ``rank_scores``:
    ``-(1 / log2(i + 2)) / sum_{j < n} 1 / log2(j + 2)`` (``n`` valid rollouts),
    so a miss the model ranks high costs more: the NDCG-shaped reward of the
    official V-STAR code's ``reward_type=ranking``. Invalid rollouts score 0.

    Args:
      sid_codes: int32 ``[B, G, L]``.
      target_codes: int32 ``[B, L]``.
      valid: bool ``[B, G]``.
      kind: ``"exact" | "prefix_credit" | "ranking"``.
      level_weights: ``L`` floats for ``"prefix_credit"``; None =
        :func:`default_level_weights`.
      rank_scores: float ``[B, G]``, higher ranks first (ties: lower slot
        first); needed by ``"ranking"`` (the RL objective passes the
        rollouts' sequence log-probabilities under the rollout policy).

    Returns:
      float32 ``[B, G]``.
    """
    num_levels = sid_codes.shape[-1]
    matched = matched_prefix_length(sid_codes, target_codes)
    if kind == "exact":
        reward = (matched == num_levels).astype(jnp.float32)
    elif kind == "ranking":
        if rank_scores is None:
            raise ValueError('sequence_rewards: kind="ranking" needs rank_scores [B, G]')
        valid = valid.astype(bool)
        hit = (matched == num_levels) & valid
        scores = jnp.where(valid, rank_scores.astype(jnp.float32), -jnp.inf)
        slots = jnp.arange(scores.shape[1])
        # Rank of each rollout: the valid rollouts ahead of it (higher score, or equal score in a lower slot).
        ahead = (scores[:, None, :] > scores[:, :, None]) | (
            (scores[:, None, :] == scores[:, :, None]) & (slots[None, None, :] < slots[None, :, None]))
        rank = jnp.sum(ahead & valid[:, None, :], axis=-1)  # [B, G]
        discount = 1.0 / jnp.log2(jnp.arange(scores.shape[1], dtype=jnp.float32) + 2.0)  # [G]
        total = jnp.cumsum(discount)[jnp.maximum(valid.sum(axis=1) - 1, 0)]  # [B]: sum over j < n
        penalty = -discount[rank] / total[:, None]
        reward = hit.astype(jnp.float32) + jnp.where(hit.any(axis=1, keepdims=True) & ~hit, penalty, 0.0)
    elif kind == "prefix_credit":
        weights = _resolve_level_weights(level_weights, num_levels, "sequence_rewards")
        weights_from_zero = jnp.concatenate([jnp.zeros((1,), jnp.float32), weights])  # [L + 1]
        reward = weights_from_zero[matched]
    else:
        raise ValueError(f"sequence_rewards: kind={kind!r}; expected one of {REWARD_KINDS}")
    return jnp.where(valid.astype(bool), reward, 0.0)


def level_rewards(
    sid_codes: jax.Array,
    target_codes: jax.Array,
    level_weights: tuple[float, ...] | None = None,
    *,
    candidate_embeddings: jax.Array | None = None,
    target_embeddings: jax.Array | None = None,
) -> jax.Array:
    """Dense per-level reward ``r_1 .. r_L`` behind the value target (decision 1).

    ``r_l = w_l`` where the first ``l`` codes match the target, else 0; with
    item embeddings, the non-matching levels get the penalty
    ``r_l = -w_l * (1 - cos(e(candidate), e(target)))`` instead of 0. Invalid
    rollouts (codes -1) match nothing; the value loss masks them.

    Args:
      sid_codes: int32 ``[B, G, L]``.
      target_codes: int32 ``[B, L]``.
      level_weights: ``L`` floats; None = :func:`default_level_weights`.
      candidate_embeddings: optional float ``[B, G, D]``, the rollout items'
        embeddings (give both or neither).
      target_embeddings: optional float ``[B, D]``.

    Returns:
      float32 ``[B, G, L]``; entry ``l - 1`` is ``r_l``, the reward of arriving at ``s_l``.
    """
    num_levels = sid_codes.shape[-1]
    weights = _resolve_level_weights(level_weights, num_levels, "level_rewards")
    matched = matched_prefix_length(sid_codes, target_codes)  # [B, G]
    depth = jnp.arange(1, num_levels + 1, dtype=jnp.int32)
    prefix_matches = matched[..., None] >= depth  # [B, G, L]
    if (candidate_embeddings is None) != (target_embeddings is None):
        raise ValueError(
            "level_rewards: pass both candidate_embeddings [B, G, D] and target_embeddings [B, D], or neither"
        )
    if candidate_embeddings is None:
        miss = jnp.zeros(prefix_matches.shape, jnp.float32)
    else:
        cand = candidate_embeddings.astype(jnp.float32)
        tgt = target_embeddings.astype(jnp.float32)[:, None, :]
        norms = jnp.linalg.norm(cand, axis=-1) * jnp.linalg.norm(tgt, axis=-1)
        cosine = (cand * tgt).sum(axis=-1) / jnp.maximum(norms, 1e-8)  # [B, G]
        miss = -weights * (1.0 - cosine)[..., None]
    return jnp.where(prefix_matches, weights, miss)


def td_targets(level_rewards: jax.Array, values: jax.Array, gamma: float = 0.99) -> jax.Array:
    """TD(0) targets of the value head on states ``s_0 .. s_L`` (docs/rl.md).

    ``y_p = r_p + gamma * sg(V(s_{p+1}))`` for ``p < L`` with ``r_0 = 0``, and
    ``y_L = r_L``; ``sg`` = ``stop_gradient``, so the targets are constants.

    Args:
      level_rewards: float ``[B, G, L]`` (:func:`level_rewards`: ``r_1 .. r_L``).
      values: float ``[B, G, L + 1]``, ``V(s_0) .. V(s_L)``.
      gamma: discount.

    Returns:
      float32 ``[B, G, L + 1]``.
    """
    if values.shape[:-1] != level_rewards.shape[:-1] or values.shape[-1] != level_rewards.shape[-1] + 1:
        raise ValueError(
            f"td_targets: values must be [B, G, L + 1] for level_rewards [B, G, L]; got {values.shape} "
            f"and {level_rewards.shape}"
        )
    rewards = level_rewards.astype(jnp.float32)
    arrival_reward = jnp.concatenate([jnp.zeros_like(rewards[..., :1]), rewards], axis=-1)  # r_0 .. r_L
    next_value = jax.lax.stop_gradient(values.astype(jnp.float32))[..., 1:]
    bootstrap = jnp.concatenate([next_value, jnp.zeros_like(next_value[..., :1])], axis=-1)  # 0 after s_L
    return jax.lax.stop_gradient(arrival_reward + gamma * bootstrap)


# ---------------------------------------------------------------------------
# GRPO
# ---------------------------------------------------------------------------


def group_advantages(rewards: jax.Array, valid: jax.Array, eps: float = 1e-4) -> jax.Array:
    """GRPO advantage: the reward normalised over its request's valid rollouts.

    ``A = (r - mean) / (std + eps)`` with the mean and the **population** std
    (``ddof = 0``, as ``np.std``) over the request's valid rollouts. Invalid
    rollouts get 0, and so does every rollout of a request whose valid rewards
    are all equal (no signal; exact 0, not round-off over ``eps``). Constant
    under differentiation (``stop_gradient`` on the rewards).

    Args:
      rewards: float ``[B, G]``.
      valid: bool ``[B, G]``.
      eps: added to the std.

    Returns:
      float32 ``[B, G]``.
    """
    mask = valid.astype(bool)
    reward = jnp.where(mask, jax.lax.stop_gradient(rewards).astype(jnp.float32), 0.0)
    count = jnp.maximum(mask.sum(axis=-1, keepdims=True), 1).astype(jnp.float32)
    mean = reward.sum(axis=-1, keepdims=True) / count
    centred = jnp.where(mask, reward - mean, 0.0)
    std = jnp.sqrt((centred**2).sum(axis=-1, keepdims=True) / count)
    spread = jnp.where(mask, reward, -jnp.inf).max(axis=-1, keepdims=True) - jnp.where(
        mask, reward, jnp.inf
    ).min(axis=-1, keepdims=True)
    return jnp.where(mask & (spread > 0), centred / (std + eps), 0.0)


def _clipped_objective(
    logp_new: jax.Array, logp_old: jax.Array, advantages: jax.Array, mask: jax.Array, clip_eps: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-token PPO surrogate ``min(rho A, clip(rho) A)``, the ratio and whether the clip is active.

    Masked-out entries are sanitised before ``exp``, so their gradient is 0, not NaN.
    """
    log_ratio = jnp.where(mask, logp_new.astype(jnp.float32) - jax.lax.stop_gradient(logp_old).astype(jnp.float32), 0.0)
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    surrogate = jnp.minimum(ratio * advantages, clipped * advantages)
    clip_active = jnp.abs(ratio - 1.0) > clip_eps
    return jnp.where(mask, surrogate, 0.0), ratio, clip_active


def grpo_loss(
    logp_new: jax.Array,
    logp_old: jax.Array,
    advantages: jax.Array,
    valid: jax.Array,
    clip_eps: float = 0.2,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO-clipped GRPO loss on every completion token (docs/rl.md, "Losses").

    ``loss = -(1 / N) sum_{valid b, g} sum_l min(rho A_bg, clip(rho, 1 - eps, 1 + eps) A_bg)``,
    ``rho = exp(logp_new - logp_old)``, where ``N = L * (number of valid rollouts
    in the batch)``: one mean over all valid tokens of the batch (not per
    request, then per batch), so every valid token weighs the same. With one
    inner epoch (``logp_old = stop_gradient(logp_new)``) the gradient is
    ``-(1 / N) sum A_bg grad logp_new[b, g, l]``.

    Args:
      logp_new: float ``[B, G, L]`` token log-probs, current policy.
      logp_old: float ``[B, G, L]``, the policy that drew the rollouts (no gradient).
      advantages: float ``[B, G]`` (:func:`group_advantages`).
      valid: bool ``[B, G]``.
      clip_eps: PPO clip ``eps``.

    Returns:
      ``(loss, stats)``; stats: ``clip_fraction`` (valid tokens with
      ``|rho - 1| > eps``), ``ratio_mean`` (over valid tokens).
    """
    token_mask = jnp.broadcast_to(valid.astype(bool)[..., None], logp_new.shape)
    adv = jax.lax.stop_gradient(advantages).astype(jnp.float32)[..., None]
    surrogate, ratio, clip_active = _clipped_objective(logp_new, logp_old, adv, token_mask, clip_eps)
    num_tokens = jnp.maximum(token_mask.sum(), 1).astype(jnp.float32)
    loss = -surrogate.sum() / num_tokens
    stats = {
        "clip_fraction": jnp.where(token_mask, clip_active, False).sum() / num_tokens,
        "ratio_mean": jnp.where(token_mask, ratio, 0.0).sum() / num_tokens,
    }
    return loss, stats


# ---------------------------------------------------------------------------
# Sibling-GRPO (Eqs. 15-19, decision 4)
# ---------------------------------------------------------------------------


class SiblingGroups(NamedTuple):
    """The prefix tree of each request's valid rollouts, static shapes (a pytree).

    At level ``l`` (0-based) rollout ``g``'s **node** is its prefix of length
    ``l + 1`` and its **parent** the prefix of length ``l``; the sibling group
    of a node is the set of distinct nodes under its parent. Nodes and parents
    are named by the index of their first rollout (lowest ``g``) in the request.

    Attributes:
      node_first: bool ``[B, G, L]``: ``g`` is valid and the first rollout through its node.
      node_id: int32 ``[B, G, L]``: first rollout through ``g``'s node (-1 if ``g`` is invalid).
      parent_id: int32 ``[B, G, L]``: first rollout through ``g``'s parent, the
        sibling group's id (-1 if invalid).
      num_children: int32 ``[B, G, L]``: distinct nodes in ``g``'s sibling group (0 if invalid).
      node_size: int32 ``[B, G, L]``: valid rollouts through ``g``'s node (0 if invalid).
      same_node: bool ``[B, G, G, L]``: ``[b, g, h, l]`` = both valid and the same level-``l`` node.
      same_parent: bool ``[B, G, G, L]``: both valid and the same level-``l`` parent.
    """

    node_first: jax.Array
    node_id: jax.Array
    parent_id: jax.Array
    num_children: jax.Array
    node_size: jax.Array
    same_node: jax.Array
    same_parent: jax.Array


def sibling_groups(sid_codes: jax.Array, valid: jax.Array) -> SiblingGroups:
    """Sibling structure of each request's rollouts, from pairwise prefix equality.

    Pairwise ``[B, G, G, L]`` comparisons: cheap for the ``G <= 64`` rollouts
    of a request, and static-shaped (no sort, no dictionary of prefixes).

    Args:
      sid_codes: int32 ``[B, G, L]``.
      valid: bool ``[B, G]``.

    Returns:
      :class:`SiblingGroups`.
    """
    mask = valid.astype(bool)
    num_rollouts = sid_codes.shape[1]
    both_valid = (mask[:, :, None] & mask[:, None, :])[..., None]  # [B, G, G, 1]
    level_equal = sid_codes[:, :, None, :] == sid_codes[:, None, :, :]  # [B, G, G, L]
    prefix_equal = jnp.cumprod(level_equal.astype(jnp.int32), axis=-1).astype(bool)  # prefix length l + 1
    root_equal = jnp.ones_like(prefix_equal[..., :1])
    parent_equal = jnp.concatenate([root_equal, prefix_equal[..., :-1]], axis=-1)  # prefix length l
    same_node = prefix_equal & both_valid
    same_parent = parent_equal & both_valid

    rollout = jnp.arange(num_rollouts)
    earlier = (rollout[None, :] < rollout[:, None])[None, :, :, None]  # [1, G(g), G(h), 1]: h < g
    node_first = mask[..., None] & ~(same_node & earlier).any(axis=2)
    invalid = ~mask[..., None]
    node_id = jnp.where(invalid, -1, jnp.argmax(same_node, axis=2)).astype(jnp.int32)
    parent_id = jnp.where(invalid, -1, jnp.argmax(same_parent, axis=2)).astype(jnp.int32)
    num_children = (same_parent & node_first[:, None, :, :]).sum(axis=2).astype(jnp.int32)
    node_size = same_node.sum(axis=2).astype(jnp.int32)
    return SiblingGroups(node_first, node_id, parent_id, num_children, node_size, same_node, same_parent)


def sibling_advantages(
    sid_codes: jax.Array,
    rewards: jax.Array,
    valid: jax.Array,
    eps: float = 1e-4,
    groups: SiblingGroups | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Node advantages of Sibling-GRPO (Eqs. 17-18), per request and level.

    Node score = mean reward of the valid rollouts through the node (Eq. 17);
    ``A_node = (score - mean over siblings) / (std over siblings + eps)``
    (Eq. 18), mean and population std over the distinct nodes of the sibling
    group, each node once however many rollouts pass through it. Groups with
    fewer than 2 children, and groups whose node scores are all equal, give 0.

    Args:
      sid_codes: int32 ``[B, G, L]``.
      rewards: float ``[B, G]`` (constant: ``stop_gradient``).
      valid: bool ``[B, G]``.
      eps: added to the std.
      groups: :func:`sibling_groups` of the same inputs, if already computed.

    Returns:
      ``(adv, node_mask)``: ``adv`` float32 ``[B, G, L]`` is the advantage of
      ``g``'s level-``l`` node, at every rollout through it (0 where the group
      has < 2 children or ``g`` is invalid); ``node_mask`` bool ``[B, G, L]``
      marks one representative per node (its first rollout) in groups with
      >= 2 children: the entries a loss counts.
    """
    if groups is None:
        groups = sibling_groups(sid_codes, valid)
    mask = valid.astype(bool)
    reward = jnp.where(mask, jax.lax.stop_gradient(rewards).astype(jnp.float32), 0.0)
    node_total = jnp.einsum("bghl,bh->bgl", groups.same_node.astype(jnp.float32), reward)
    node_score = node_total / jnp.maximum(groups.node_size, 1).astype(jnp.float32)  # [B, G, L]
    # Sibling nodes of g at level l: the representatives h under g's parent.
    siblings = groups.same_parent & groups.node_first[:, None, :, :]  # [B, G, H, L]
    num_children = jnp.maximum(groups.num_children, 1).astype(jnp.float32)
    sibling_scores = node_score[:, None, :, :]  # [B, 1, H, L]
    mean = jnp.where(siblings, sibling_scores, 0.0).sum(axis=2) / num_children
    centred_siblings = jnp.where(siblings, sibling_scores - mean[:, :, None, :], 0.0)
    std = jnp.sqrt((centred_siblings**2).sum(axis=2) / num_children)
    spread = jnp.where(siblings, sibling_scores, -jnp.inf).max(axis=2) - jnp.where(
        siblings, sibling_scores, jnp.inf
    ).min(axis=2)
    has_siblings = mask[..., None] & (groups.num_children >= 2)
    adv = jnp.where(has_siblings & (spread > 0), (node_score - mean) / (std + eps), 0.0)
    node_mask = groups.node_first & (groups.num_children >= 2)
    return adv, node_mask


def sibling_grpo_loss(
    logp_new: jax.Array,
    logp_old: jax.Array,
    sid_codes: jax.Array,
    rewards: jax.Array,
    valid: jax.Array,
    clip_eps: float = 0.2,
    eps: float = 1e-4,
    groups: SiblingGroups | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sibling-GRPO loss (Eq. 19, decision 4): the clipped objective on each node's branching token.

    For each node ``v`` of a sibling group with >= 2 children, the branching
    token is token ``l`` (the code of ``v``) of its representative rollout;
    ``loss = -(1 / N) sum_nodes min(rho A_node, clip(rho, 1 - eps, 1 + eps) A_node)``
    with ``N`` the number of contributing nodes in the batch (all requests and
    levels; a node with ``A_node = 0`` because its siblings tie still counts).
    Each node counts once, however many rollouts pass through it; 0 when no
    node contributes.

    Args:
      logp_new: float ``[B, G, L]``.
      logp_old: float ``[B, G, L]`` (no gradient).
      sid_codes: int32 ``[B, G, L]``.
      rewards: float ``[B, G]``.
      valid: bool ``[B, G]``.
      clip_eps: PPO clip ``eps``.
      eps: added to the sibling std.
      groups: :func:`sibling_groups` of the same inputs, if already computed.

    Returns:
      ``(loss, stats)``; stats: ``sibling_groups_per_level`` and
      ``sibling_nodes_per_level`` float32 ``[L]`` (groups with >= 2 children
      and their nodes, per request: batch total / requests with a valid
      rollout), ``sibling_nodes`` (``N``), ``sibling_clip_fraction`` and
      ``sibling_ratio_mean`` (over contributing nodes).
    """
    if groups is None:
        groups = sibling_groups(sid_codes, valid)
    adv, node_mask = sibling_advantages(sid_codes, rewards, valid, eps, groups)
    surrogate, ratio, clip_active = _clipped_objective(logp_new, logp_old, adv, node_mask, clip_eps)
    num_nodes = node_mask.sum().astype(jnp.float32)
    denominator = jnp.maximum(num_nodes, 1.0)
    loss = -surrogate.sum() / denominator

    num_rollouts = sid_codes.shape[1]
    parent_first = groups.parent_id == jnp.arange(num_rollouts, dtype=jnp.int32)[None, :, None]
    group_counted = parent_first & (groups.num_children >= 2)  # one entry per sibling group
    num_requests = jnp.maximum(valid.astype(bool).any(axis=-1).sum(), 1).astype(jnp.float32)
    stats = {
        "sibling_groups_per_level": group_counted.sum(axis=(0, 1)).astype(jnp.float32) / num_requests,
        "sibling_nodes_per_level": node_mask.sum(axis=(0, 1)).astype(jnp.float32) / num_requests,
        "sibling_nodes": num_nodes,
        "sibling_clip_fraction": jnp.where(node_mask, clip_active, False).sum() / denominator,
        "sibling_ratio_mean": jnp.where(node_mask, ratio, 0.0).sum() / denominator,
    }
    return loss, stats


# ---------------------------------------------------------------------------
# Value loss and KL
# ---------------------------------------------------------------------------


def value_loss(values: jax.Array, targets: jax.Array, valid: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Value regression: ``0.5 * (V(s_p) - y_p)^2`` averaged over valid states.

    Valid states: all ``L + 1`` states ``s_0 .. s_L`` of every valid rollout
    (the root ``s_0`` is shared by a request's rollouts and counts once per
    rollout). ``targets`` are constants (``stop_gradient``).

    Args:
      values: float ``[B, G, L + 1]``.
      targets: float ``[B, G, L + 1]`` (:func:`td_targets`).
      valid: bool ``[B, G]``.

    Returns:
      ``(loss, stats)``; stats: ``explained_variance`` ``1 - Var(y - V) / Var(y)``
      over the valid states (population variances; 0 when ``Var(y) = 0``).
    """
    state_mask = jnp.broadcast_to(valid.astype(bool)[..., None], values.shape)
    value = jnp.where(state_mask, values.astype(jnp.float32), 0.0)
    target = jnp.where(state_mask, jax.lax.stop_gradient(targets).astype(jnp.float32), 0.0)
    count = jnp.maximum(state_mask.sum(), 1).astype(jnp.float32)
    loss = 0.5 * ((value - target) ** 2).sum() / count

    def masked_variance(x):
        mean = x.sum() / count
        return jnp.where(state_mask, (x - mean) ** 2, 0.0).sum() / count

    target_var = masked_variance(target)
    residual_var = masked_variance(jax.lax.stop_gradient(target - value))
    explained = jnp.where(target_var > 0, 1.0 - residual_var / jnp.where(target_var > 0, target_var, 1.0), 0.0)
    return loss, {"explained_variance": explained}


def k3_kl(logp_new: jax.Array, logp_ref: jax.Array, valid: jax.Array) -> jax.Array:
    """k3 estimate of KL(new || ref): ``exp(ref - new) - (ref - new) - 1``, mean over valid tokens.

    Non-negative per token, 0 where the two policies agree.

    Args:
      logp_new: float ``[B, G, L]`` (current policy, differentiated).
      logp_ref: float ``[B, G, L]`` (frozen reference; no gradient).
      valid: bool ``[B, G]``.

    Returns:
      float32 scalar (0 without valid tokens).
    """
    token_mask = jnp.broadcast_to(valid.astype(bool)[..., None], logp_new.shape)
    log_ratio = jnp.where(
        token_mask, jax.lax.stop_gradient(logp_ref).astype(jnp.float32) - logp_new.astype(jnp.float32), 0.0
    )
    per_token = jnp.exp(log_ratio) - log_ratio - 1.0
    return jnp.where(token_mask, per_token, 0.0).sum() / jnp.maximum(token_mask.sum(), 1).astype(jnp.float32)


def exact_kl(prefix_kl: jax.Array, valid: jax.Array) -> jax.Array:
    """Exact KL(new || ref) at the rollouts' prefixes, mean over valid (rollout, level) pairs.

    ``prefix_kl[b, g, l]`` is the KL of the two trie-restricted policies at
    rollout ``g``'s prefix ``s_l`` (``constrained.sampling.restricted_kl``). A
    prefix shared by several rollouts counts once per rollout, as the token
    terms count it: on rollouts drawn from the policy this is the k3 estimate
    with the expectation over the chosen code taken exactly (same mean, no
    sampling noise), and on VED's rollouts still a KL (docs/rl.md, "Losses").

    Args:
      prefix_kl: float ``[B, G, L]`` (differentiated through the new policy's logits).
      valid: bool ``[B, G]``.

    Returns:
      float32 scalar (0 without valid rollouts).
    """
    token_mask = jnp.broadcast_to(valid.astype(bool)[..., None], prefix_kl.shape)
    per_prefix = jnp.where(token_mask, prefix_kl.astype(jnp.float32), 0.0)
    return per_prefix.sum() / jnp.maximum(token_mask.sum(), 1).astype(jnp.float32)


# ---------------------------------------------------------------------------
# The RL objective
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RLLossConfig:
    """Weights and hyper-parameters of :func:`rl_objective`; frozen and hashable (a static jit argument).

    Attributes:
      grpo_weight, sibling_weight, value_weight, kl_weight: the total is
        ``grpo_weight * GRPO + sibling_weight * Sibling + value_weight * value + kl_weight * KL``;
        defaults 1, 1, 1, 1e-3 (the paper adds the three losses 1:1 and the k3 KL at 1e-3).
      kl_estimator: the KL penalised: ``"k3"`` (:func:`k3_kl` on the chosen codes) or ``"exact"``
        (:func:`exact_kl` over each visited prefix's children; docs/rl.md, "Losses").
      clip_eps: PPO clip of both GRPO losses.
      advantage_eps: ``eps`` added to the std in both advantages.
      gamma: TD discount of the value target.
      reward_kind: sequence reward of GRPO and Sibling-GRPO, ``"exact" | "prefix_credit" | "ranking"``
        (:func:`sequence_rewards`; ``"ranking"`` ranks by the rollouts' log-probabilities under ``logp_old``).
      level_weights: per-level weights ``w_1 .. w_L`` (value reward and
        ``"prefix_credit"``); None = :func:`default_level_weights`.
    """

    grpo_weight: float = 1.0
    sibling_weight: float = 1.0
    value_weight: float = 1.0
    kl_weight: float = 1e-3
    clip_eps: float = 0.2
    advantage_eps: float = 1e-4
    gamma: float = 0.99
    reward_kind: RewardKind = "exact"
    level_weights: tuple[float, ...] | None = None
    kl_estimator: KLEstimator = "k3"

    def __post_init__(self):
        for name in ("grpo_weight", "sibling_weight", "value_weight", "kl_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"RLLossConfig.{name}={getattr(self, name)!r} must be >= 0")
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"RLLossConfig.clip_eps={self.clip_eps!r} must be in (0, 1)")
        if not self.advantage_eps > 0:
            raise ValueError(f"RLLossConfig.advantage_eps={self.advantage_eps!r} must be > 0")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"RLLossConfig.gamma={self.gamma!r} must be in [0, 1]")
        if self.reward_kind not in REWARD_KINDS:
            raise ValueError(f"RLLossConfig.reward_kind={self.reward_kind!r}; expected one of {REWARD_KINDS}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"RLLossConfig.kl_estimator={self.kl_estimator!r}; expected one of {KL_ESTIMATORS}")
        if self.level_weights is not None:
            object.__setattr__(self, "level_weights", tuple(float(w) for w in self.level_weights))


def rl_objective(
    logp_new: jax.Array,
    logp_old: jax.Array | None,
    logp_ref: jax.Array | None,
    values: jax.Array,
    sid_codes: jax.Array,
    target_codes: jax.Array,
    valid: jax.Array,
    *,
    config: RLLossConfig = RLLossConfig(),
    candidate_embeddings: jax.Array | None = None,
    target_embeddings: jax.Array | None = None,
    prefix_kl: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Total RL loss (GRPO + Sibling-GRPO + value + KL, weighted by ``config``) and what to log.

    Rewards (:func:`sequence_rewards`) and the value targets
    (:func:`level_rewards`, :func:`td_targets` bootstrapped from ``values``
    under ``stop_gradient``) are computed here, so the RL step hands over
    log-probs, values and codes only.

    Args:
      logp_new: float ``[B, G, L]`` token log-probs under the policy being trained.
      logp_old: float ``[B, G, L]`` under the rollout policy; None =
        ``stop_gradient(logp_new)`` (one inner epoch: ratio 1).
      logp_ref: float ``[B, G, L]`` under the frozen supervised model (the k3 KL's input);
        None only with ``config.kl_estimator="exact"``.
      values: float ``[B, G, L + 1]``, ``V(s_0) .. V(s_L)``.
      sid_codes: int32 ``[B, G, L]`` rollouts (-1 in invalid slots).
      target_codes: int32 ``[B, L]``.
      valid: bool ``[B, G]``.
      config: :class:`RLLossConfig`.
      candidate_embeddings, target_embeddings: optional ``[B, G, D]`` and
        ``[B, D]`` item embeddings for the value reward's cosine penalty.
      prefix_kl: optional float ``[B, G, L]``, the exact KL to the frozen model
        at each rollout's prefix ``s_l`` (``constrained.sampling.restricted_kl``,
        its gradient through the new policy only); required with
        ``config.kl_estimator="exact"``.

    Returns:
      ``(total_loss, metrics)``; metrics (scalars unless noted): ``total_loss``,
      ``grpo_loss``, ``sibling_loss``, ``value_loss``, ``kl`` (the KL
      penalised, ``config.kl_estimator``), ``kl_k3`` (:func:`k3_kl`, when
      ``logp_ref`` is given), ``kl_exact`` (:func:`exact_kl`, when ``prefix_kl``
      is given),
      ``reward_mean`` and ``reward_std`` (over the batch's valid rollouts),
      ``reward_group_std`` (population std within a request, averaged over
      requests with a valid rollout), ``zero_signal_fraction`` (requests
      whose valid rewards all tie: GRPO advantage 0), ``hit_rate`` (valid
      rollouts that are the target), ``unique_items_per_group`` (distinct
      SIDs among a request's valid rollouts, averaged over requests with one),
      ``valid_fraction``, ``explained_variance``, ``value_mean`` (over valid
      states), ``clip_fraction`` and ``ratio_mean`` (GRPO), and the
      Sibling-GRPO stats of :func:`sibling_grpo_loss`
      (``sibling_groups_per_level`` and ``sibling_nodes_per_level`` ``[L]``).
    """
    num_levels = sid_codes.shape[-1]
    expected = sid_codes.shape
    if config.kl_estimator == "exact" and prefix_kl is None:
        raise ValueError('rl_objective: config.kl_estimator="exact" needs prefix_kl [B, G, L] '
                         "(constrained.sampling.restricted_kl of the new and reference logits)")
    if config.kl_estimator == "k3" and logp_ref is None:
        raise ValueError('rl_objective: config.kl_estimator="k3" needs logp_ref [B, G, L]; pass it '
                         'or use kl_estimator="exact" with prefix_kl')
    named = (("logp_new", logp_new), ("logp_old", logp_old), ("logp_ref", logp_ref), ("prefix_kl", prefix_kl))
    for name, array in named:
        if array is not None and array.shape != expected:
            raise ValueError(f"rl_objective: {name} must be [B, G, L] = {expected}; got {array.shape}")
    values_shape = expected[:2] + (num_levels + 1,)
    if values.shape != values_shape:
        raise ValueError(f"rl_objective: values must be [B, G, L + 1] = {values_shape}; got {values.shape}")
    if logp_old is None:
        logp_old = jax.lax.stop_gradient(logp_new)
    mask = valid.astype(bool)

    rank_scores = None
    if config.reward_kind == "ranking":  # the rollout policy's sequence log-probabilities rank each group
        rank_scores = jax.lax.stop_gradient(jnp.sum(jnp.where(mask[..., None], logp_old, 0.0), axis=-1))
    rewards = sequence_rewards(
        sid_codes, target_codes, mask, kind=config.reward_kind, level_weights=config.level_weights,
        rank_scores=rank_scores,
    )
    advantages = group_advantages(rewards, mask, config.advantage_eps)
    grpo, grpo_stats = grpo_loss(logp_new, logp_old, advantages, mask, config.clip_eps)
    groups = sibling_groups(sid_codes, mask)
    sibling, sibling_stats = sibling_grpo_loss(
        logp_new, logp_old, sid_codes, rewards, mask, config.clip_eps, config.advantage_eps, groups
    )
    dense_rewards = level_rewards(
        sid_codes,
        target_codes,
        config.level_weights,
        candidate_embeddings=candidate_embeddings,
        target_embeddings=target_embeddings,
    )
    value_targets = td_targets(dense_rewards, values, config.gamma)
    value, value_stats = value_loss(values, value_targets, mask)
    kl_values = {}
    if logp_ref is not None:
        kl_values["kl_k3"] = k3_kl(logp_new, logp_ref, mask)
    if prefix_kl is not None:
        kl_values["kl_exact"] = exact_kl(prefix_kl, mask)
    kl = kl_values[f"kl_{config.kl_estimator}"]
    total = (
        config.grpo_weight * grpo
        + config.sibling_weight * sibling
        + config.value_weight * value
        + config.kl_weight * kl
    )

    num_valid = jnp.maximum(mask.sum(), 1).astype(jnp.float32)
    reward_mean = rewards.sum() / num_valid
    reward_std = jnp.sqrt(jnp.where(mask, (rewards - reward_mean) ** 2, 0.0).sum() / num_valid)
    per_request_valid = mask.sum(axis=-1)
    has_rollouts = per_request_valid > 0
    num_requests = jnp.maximum(has_rollouts.sum(), 1).astype(jnp.float32)
    request_count = jnp.maximum(per_request_valid, 1).astype(jnp.float32)
    request_mean = rewards.sum(axis=-1) / request_count
    request_std = jnp.sqrt(
        jnp.where(mask, (rewards - request_mean[:, None]) ** 2, 0.0).sum(axis=-1) / request_count
    )
    request_ties = has_rollouts & ~jnp.any(advantages != 0, axis=-1)
    unique_items = groups.node_first[..., -1].sum(axis=-1).astype(jnp.float32)
    state_mask = jnp.broadcast_to(mask[..., None], values.shape)
    num_states = jnp.maximum(state_mask.sum(), 1).astype(jnp.float32)
    metrics: dict[str, Any] = {
        "total_loss": total,
        "grpo_loss": grpo,
        "sibling_loss": sibling,
        "value_loss": value,
        "kl": kl,
        **kl_values,
        "reward_mean": reward_mean,
        "reward_std": reward_std,
        "reward_group_std": jnp.where(has_rollouts, request_std, 0.0).sum() / num_requests,
        "zero_signal_fraction": request_ties.sum() / num_requests,
        "hit_rate": (mask & (matched_prefix_length(sid_codes, target_codes) == num_levels)).sum() / num_valid,
        "unique_items_per_group": unique_items.sum() / num_requests,
        "valid_fraction": mask.mean(),
        "explained_variance": value_stats["explained_variance"],
        "value_mean": jnp.where(state_mask, jax.lax.stop_gradient(values), 0.0).sum() / num_states,
        "clip_fraction": grpo_stats["clip_fraction"],
        "ratio_mean": grpo_stats["ratio_mean"],
        **sibling_stats,
    }
    return total, metrics
