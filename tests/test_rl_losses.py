"""RL losses and rewards (training.rl_losses) against plain NumPy (float64) references.

The references are written from docs/rl.md with loops over requests and
dictionaries of prefixes; the JAX code uses pairwise masks, so the two share
no structure. Random rollouts use a tiny codebook, so SIDs and prefixes repeat;
every batch has invalid slots (codes -1, NaN log-probs and values), one
request with no valid rollout and one whose rollouts are all the same SID.
"""

import dataclasses
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training.rl_losses import (
    RLLossConfig,
    default_level_weights,
    exact_kl,
    group_advantages,
    grpo_loss,
    k3_kl,
    level_rewards,
    matched_prefix_length,
    rl_objective,
    sequence_rewards,
    sibling_advantages,
    sibling_groups,
    sibling_grpo_loss,
    td_targets,
    value_loss,
)

# Jitted once per shape: eager dispatch of every primitive would dominate runtime.
matched_prefix_length_jit = jax.jit(matched_prefix_length)
sequence_rewards_jit = jax.jit(sequence_rewards, static_argnames=("kind", "level_weights"))
level_rewards_jit = jax.jit(level_rewards, static_argnames=("level_weights",))
td_targets_jit = jax.jit(td_targets, static_argnames=("gamma",))
group_advantages_jit = jax.jit(group_advantages)
grpo_loss_jit = jax.jit(grpo_loss)
sibling_groups_jit = jax.jit(sibling_groups)
sibling_advantages_jit = jax.jit(sibling_advantages)
sibling_grpo_loss_jit = jax.jit(sibling_grpo_loss)
value_loss_jit = jax.jit(value_loss)
k3_kl_jit = jax.jit(k3_kl)
rl_objective_jit = jax.jit(rl_objective, static_argnames=("config",))


@jax.jit
def grpo_grad_one_epoch(logp, advantages, valid):
    """d GRPO / d logp_new with logp_old = stop_gradient(logp_new) (one inner epoch)."""
    return jax.grad(lambda lp: grpo_loss(lp, jax.lax.stop_gradient(lp), advantages, valid)[0])(logp)


@jax.jit
def sibling_grad_one_epoch(logp, codes, rewards, valid):
    """d Sibling-GRPO / d logp_new with logp_old = stop_gradient(logp_new)."""
    return jax.grad(lambda lp: sibling_grpo_loss(lp, jax.lax.stop_gradient(lp), codes, rewards, valid)[0])(logp)

BATCH, ROLLOUTS, CODEBOOK = 5, 10, 2
EPS, CLIP = 1e-4, 0.2
RTOL, ATOL = 1e-5, 1e-5
CASES = [(0, 3), (1, 3), (2, 4), (3, 4)]  # (seed, levels): two shapes, two seeds each


# ---------------------------------------------------------------------------
# Random rollouts
# ---------------------------------------------------------------------------


def random_rollouts(seed, levels):
    """Codes with many repeats, targets often among them, invalid slots (-1).

    Request 1 has no valid rollout; request 2's rollouts are all one SID (all
    rewards tie); request 3 holds its target twice.
    """
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, CODEBOOK, (BATCH, ROLLOUTS, levels)).astype(np.int32)
    targets = rng.integers(0, CODEBOOK, (BATCH, levels)).astype(np.int32)
    valid = rng.uniform(size=(BATCH, ROLLOUTS)) > 0.2
    valid[1] = False
    valid[2] = True
    codes[2] = codes[2, 0]
    codes[3, 4] = codes[3, 7] = targets[3]
    valid[3, 4] = valid[3, 7] = True
    codes[~valid] = -1
    return codes, targets, valid


def random_log_probs(seed, valid, levels, spread=0.3):
    """``(new, old, ref)`` token log-probs; old and ref move ratios across the clip; NaN in invalid slots."""
    rng = np.random.default_rng(seed + 100)
    new = np.log(rng.uniform(0.05, 1.0, (BATCH, ROLLOUTS, levels)))
    old = new + rng.normal(0.0, spread, new.shape)
    ref = new + rng.normal(0.0, spread, new.shape)
    out = []
    for array in (new, old, ref):
        array = array.astype(np.float32)
        array[~valid] = np.nan
        out.append(array)
    return out


def random_values(seed, valid, levels):
    values = np.random.default_rng(seed + 200).normal(0.3, 0.4, (BATCH, ROLLOUTS, levels + 1)).astype(np.float32)
    values[~valid] = np.nan
    return values


# ---------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------


def np_matched(codes, targets):
    out = np.zeros(codes.shape[:2], np.int64)
    for b in range(codes.shape[0]):
        for g in range(codes.shape[1]):
            m = 0
            while m < codes.shape[2] and codes[b, g, m] == targets[b, m]:
                m += 1
            out[b, g] = m
    return out


def np_sequence_rewards(codes, targets, valid, kind, weights):
    levels = codes.shape[2]
    matched = np_matched(codes, targets)
    out = np.zeros(codes.shape[:2])
    for b, g in zip(*np.nonzero(valid)):
        m = matched[b, g]
        out[b, g] = float(m == levels) if kind == "exact" else (weights[m - 1] if m > 0 else 0.0)
    return out


def np_ranking_rewards(codes, targets, valid, scores):
    """The official V-STAR code's ranking reward, written out: exact hit 1; in a group holding the target,
    the miss ranked i-th (0 = first) by ``scores`` among the valid rollouts gets -(1/log2(i+2)) / sum_{j<n}."""
    out = np.zeros(codes.shape[:2])
    for b in range(codes.shape[0]):
        members = [g for g in range(codes.shape[1]) if valid[b, g]]
        members.sort(key=lambda g: (-scores[b, g], g))
        hits = {g for g in members if (codes[b, g] == targets[b]).all()}
        total = sum(1.0 / np.log2(j + 2.0) for j in range(len(members)))
        for rank, g in enumerate(members):
            if g in hits:
                out[b, g] = 1.0
            elif hits:
                out[b, g] = -(1.0 / np.log2(rank + 2.0)) / total
    return out


def np_level_rewards(codes, targets, weights, cand_emb=None, tgt_emb=None):
    batch, rollouts, levels = codes.shape
    out = np.zeros((batch, rollouts, levels))
    for b in range(batch):
        for g in range(rollouts):
            for l in range(1, levels + 1):
                if list(codes[b, g, :l]) == list(targets[b, :l]):
                    out[b, g, l - 1] = weights[l - 1]
                elif cand_emb is not None:
                    c, t = cand_emb[b, g].astype(np.float64), tgt_emb[b].astype(np.float64)
                    cos = c @ t / (np.linalg.norm(c) * np.linalg.norm(t))
                    out[b, g, l - 1] = -weights[l - 1] * (1.0 - cos)
    return out


def np_td_targets(rewards, values, gamma):
    levels = rewards.shape[-1]
    out = np.zeros(values.shape)
    for p in range(levels + 1):
        r_p = rewards[..., p - 1] if p > 0 else 0.0
        out[..., p] = r_p + (gamma * values[..., p + 1] if p < levels else 0.0)
    return out


def np_group_advantages(rewards, valid, eps=EPS):
    out = np.zeros(rewards.shape)
    for b in range(rewards.shape[0]):
        r = rewards[b, valid[b]].astype(np.float64)
        if r.size == 0 or np.all(r == r[0]):
            continue
        out[b, valid[b]] = (r - r.mean()) / (r.std() + eps)
    return out


def np_tree(codes, valid):
    """Per request and level: {parent prefix: {child code: [rollouts through it, in order]}}."""
    batch, rollouts, levels = codes.shape
    tree = [[defaultdict(lambda: defaultdict(list)) for _ in range(levels)] for _ in range(batch)]
    for b in range(batch):
        for g in range(rollouts):
            if not valid[b, g]:
                continue
            for l in range(levels):
                tree[b][l][tuple(codes[b, g, :l])][int(codes[b, g, l])].append(g)
    return tree


def np_sibling_groups(codes, valid):
    batch, rollouts, levels = codes.shape
    node_first = np.zeros((batch, rollouts, levels), bool)
    node_id = np.full((batch, rollouts, levels), -1)
    parent_id = np.full((batch, rollouts, levels), -1)
    num_children = np.zeros((batch, rollouts, levels), np.int64)
    node_size = np.zeros((batch, rollouts, levels), np.int64)
    for b, per_level in enumerate(np_tree(codes, valid)):
        for l, parents in enumerate(per_level):
            for children in parents.values():
                parent_first = min(min(members) for members in children.values())
                for members in children.values():
                    node_first[b, members[0], l] = True
                    for g in members:
                        node_id[b, g, l] = members[0]
                        parent_id[b, g, l] = parent_first
                        num_children[b, g, l] = len(children)
                        node_size[b, g, l] = len(members)
    return node_first, node_id, parent_id, num_children, node_size


def np_sibling_nodes(codes, rewards, valid, eps=EPS):
    """Contributing nodes: list of (b, l, representative g, A_node, parent key, members)."""
    nodes = []
    for b, per_level in enumerate(np_tree(codes, valid)):
        for l, parents in enumerate(per_level):
            for parent, children in parents.items():
                if len(children) < 2:
                    continue
                scores = {v: np.mean([rewards[b, g] for g in members]) for v, members in children.items()}
                values = np.array(list(scores.values()), np.float64)
                mu, sigma = values.mean(), values.std()
                for v, members in children.items():
                    adv = 0.0 if np.all(values == values[0]) else (scores[v] - mu) / (sigma + eps)
                    nodes.append((b, l, members[0], adv, (b, l, parent), members))
    return nodes


def np_sibling_advantages(codes, rewards, valid, eps=EPS):
    adv = np.zeros(codes.shape)
    mask = np.zeros(codes.shape, bool)
    for b, l, rep, a, _, members in np_sibling_nodes(codes, rewards, valid, eps):
        mask[b, rep, l] = True
        for g in members:
            adv[b, g, l] = a
    return adv, mask


def np_clipped(new, old, adv, clip=CLIP):
    ratio = np.exp(np.float64(new) - np.float64(old))
    return min(ratio * adv, np.clip(ratio, 1 - clip, 1 + clip) * adv), ratio


def np_grpo(new, old, adv, valid, clip=CLIP):
    terms, ratios = [], []
    for b, g in zip(*np.nonzero(valid)):
        for l in range(new.shape[2]):
            term, ratio = np_clipped(new[b, g, l], old[b, g, l], adv[b, g], clip)
            terms.append(term)
            ratios.append(ratio)
    ratios = np.array(ratios)
    return -np.mean(terms), np.mean(np.abs(ratios - 1) > clip), ratios.mean()


def np_sibling_loss(new, old, codes, rewards, valid, clip=CLIP):
    levels = codes.shape[2]
    nodes = np_sibling_nodes(codes, rewards, valid)
    terms = [np_clipped(new[b, rep, l], old[b, rep, l], a, clip)[0] for b, l, rep, a, _, _ in nodes]
    requests = max(valid.any(axis=1).sum(), 1)
    group_keys = {parent_key for *_, parent_key, _ in nodes}  # (b, l, parent prefix)
    groups_per_level = np.bincount([l for _, l, _ in group_keys], minlength=levels)
    nodes_per_level = np.bincount([l for _, l, *_ in nodes], minlength=levels)
    loss = -np.sum(terms) / max(len(terms), 1)
    return loss, groups_per_level / requests, nodes_per_level / requests, len(nodes)


def np_value_loss(values, targets, valid):
    v, y = values[valid].astype(np.float64).ravel(), targets[valid].astype(np.float64).ravel()
    explained = 1.0 - np.var(y - v) / np.var(y) if np.var(y) > 0 else 0.0
    return 0.5 * np.mean((v - y) ** 2), explained


def np_k3(new, ref, valid):
    d = np.float64(ref[valid]) - np.float64(new[valid])
    return np.mean(np.exp(d) - d - 1)


# ---------------------------------------------------------------------------
# Rewards and TD targets
# ---------------------------------------------------------------------------


def test_default_level_weights_table_and_rule():
    assert default_level_weights(4) == (0.1, 0.2, 0.3, 1.0)
    assert default_level_weights(3) == (0.3, 0.5, 1.0)
    assert default_level_weights(2) == (0.5, 1.0)
    for levels in range(1, 9):
        weights = default_level_weights(levels)
        assert len(weights) == levels and weights[-1] == 1.0
        assert all(0 < a < b for a, b in zip(weights, weights[1:]))
    with pytest.raises(ValueError, match="num_levels"):
        default_level_weights(0)


@pytest.mark.parametrize("seed,levels", CASES)
def test_ranking_rewards_match_numpy(seed, levels):
    """``kind="ranking"`` equals the written-out reward on random groups (ties in the scores included): a
    group without the target carries no signal, a hit scores 1, and the misses' penalties fall with rank."""
    codes, targets, valid = random_rollouts(seed, levels)
    rng = np.random.default_rng(seed + 100)
    scores = np.round(rng.normal(size=valid.shape), 1).astype(np.float32)  # rounded: ties occur
    scores[3, 0] = scores[3, 1]
    got = np.asarray(sequence_rewards_jit(codes, targets, valid, kind="ranking", level_weights=None,
                                          rank_scores=scores))
    want = np_ranking_rewards(codes, targets, valid, scores)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert (got[3] < 0).any() and got[3].max() == 1.0  # request 3 holds its target: misses are penalised
    for b in range(codes.shape[0]):
        if not (want[b] == 1.0).any():
            assert (got[b] == 0).all()
    misses = valid[3] & (got[3] < 0)
    order = np.argsort(-scores[3][misses], kind="stable")
    assert (np.diff(got[3][misses][order]) >= -1e-7).all()  # higher-ranked misses cost more
    with pytest.raises(ValueError, match="rank_scores"):
        sequence_rewards(codes, targets, valid, kind="ranking")


@pytest.mark.parametrize("seed,levels", CASES)
def test_sequence_rewards_match_numpy(seed, levels):
    codes, targets, valid = random_rollouts(seed, levels)
    np.testing.assert_array_equal(matched_prefix_length_jit(codes, targets), np_matched(codes, targets))
    weights = default_level_weights(levels)
    for kind in ("exact", "prefix_credit"):
        got = sequence_rewards_jit(codes, targets, valid, kind=kind, level_weights=None)
        np.testing.assert_allclose(got, np_sequence_rewards(codes, targets, valid, kind, weights), atol=1e-7)
    exact = sequence_rewards_jit(codes, targets, valid, kind="exact", level_weights=None)
    assert exact[3].sum() >= 2  # the target rollout at least twice: the reward is not 0 everywhere
    with pytest.raises(ValueError, match="level_weights"):
        sequence_rewards(codes, targets, valid, kind="prefix_credit", level_weights=(1.0,))


@pytest.mark.parametrize("seed,levels", CASES[::2])
def test_level_rewards_match_numpy(seed, levels):
    codes, targets, _ = random_rollouts(seed, levels)
    weights = tuple(np.random.default_rng(seed).uniform(0.1, 1.0, levels).round(3))
    got = level_rewards_jit(codes, targets, weights)
    np.testing.assert_allclose(got, np_level_rewards(codes, targets, weights), rtol=RTOL, atol=1e-7)
    rng = np.random.default_rng(seed + 1)
    cand, tgt = rng.normal(size=(BATCH, ROLLOUTS, 6)), rng.normal(size=(BATCH, 6))
    got = level_rewards_jit(codes, targets, weights, candidate_embeddings=cand, target_embeddings=tgt)
    want = np_level_rewards(codes, targets, weights, cand, tgt)
    assert (want < 0).any()  # the penalty is exercised
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("seed,levels", CASES[::2])
def test_td_targets_match_numpy_and_carry_no_gradient(seed, levels):
    rng = np.random.default_rng(seed)
    rewards = rng.uniform(-1, 1, (BATCH, ROLLOUTS, levels)).astype(np.float32)
    values = rng.normal(size=(BATCH, ROLLOUTS, levels + 1)).astype(np.float32)
    got = td_targets_jit(rewards, values, gamma=0.9)
    want = np_td_targets(np.float64(rewards), np.float64(values), 0.9)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got[..., -1], rewards[..., -1])  # y_L = r_L: a leaf's value is its reward
    grad = jax.jit(jax.grad(lambda v: td_targets(rewards, v).sum()))(values)
    np.testing.assert_array_equal(grad, 0.0)


# ---------------------------------------------------------------------------
# GRPO
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed,levels", CASES)
def test_group_advantages_match_numpy(seed, levels):
    codes, targets, valid = random_rollouts(seed, levels)
    continuous = np.random.default_rng(seed).uniform(size=(BATCH, ROLLOUTS)).astype(np.float32)
    continuous[2] = 0.25  # one request with all rewards equal
    discrete = np.asarray(sequence_rewards_jit(codes, targets, valid, kind="prefix_credit", level_weights=None))
    for rewards in (continuous, discrete):
        got = np.asarray(group_advantages_jit(rewards, valid))
        np.testing.assert_allclose(got, np_group_advantages(rewards, valid), rtol=1e-4, atol=1e-4)
        assert (got[~valid] == 0).all() and (got[2] == 0).all()
        for b in range(BATCH):
            assert abs(got[b, valid[b]].sum()) < 1e-3


@pytest.mark.parametrize("seed,levels", CASES)
def test_grpo_loss_matches_numpy(seed, levels):
    codes, targets, valid = random_rollouts(seed, levels)
    new, old, _ = random_log_probs(seed, valid, levels)
    rewards = np.random.default_rng(seed).uniform(size=(BATCH, ROLLOUTS)).astype(np.float32)
    adv = np_group_advantages(rewards, valid).astype(np.float32)
    loss, stats = grpo_loss_jit(new, old, adv, valid)
    want_loss, want_clip, want_ratio = np_grpo(new, old, adv, valid)
    assert 0 < want_clip < 1  # both branches of the clip occur
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["clip_fraction"], want_clip, atol=1e-6)
    np.testing.assert_allclose(stats["ratio_mean"], want_ratio, rtol=1e-5)


def test_grpo_gradient_with_one_inner_epoch_is_minus_advantage_times_grad_logp():
    codes, targets, valid = random_rollouts(0, 3)
    new, _, _ = random_log_probs(0, valid, 3)
    adv = np_group_advantages(np.random.default_rng(0).uniform(size=(BATCH, ROLLOUTS)), valid).astype(np.float32)
    grad = grpo_grad_one_epoch(new, adv, valid)
    num_tokens = valid.sum() * 3
    want = np.where(valid[..., None], -adv[..., None] / num_tokens, 0.0) * np.ones((1, 1, 3))
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------------------
# Sibling-GRPO
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed,levels", CASES)
def test_sibling_groups_match_numpy(seed, levels):
    codes, _, valid = random_rollouts(seed, levels)
    got = sibling_groups_jit(codes, valid)
    want = np_sibling_groups(codes, valid)
    for name, got_field, want_field in zip(
        ("node_first", "node_id", "parent_id", "num_children", "node_size"), got, want
    ):
        np.testing.assert_array_equal(got_field, want_field, err_msg=name)
    assert got.node_first[..., -1].sum() < valid.sum()  # duplicate SIDs present


@pytest.mark.parametrize("seed,levels", CASES)
def test_sibling_advantages_match_numpy(seed, levels):
    codes, targets, valid = random_rollouts(seed, levels)
    continuous = np.random.default_rng(seed).uniform(size=(BATCH, ROLLOUTS)).astype(np.float32)
    discrete = np.asarray(sequence_rewards_jit(codes, targets, valid, kind="prefix_credit", level_weights=None))
    for rewards in (continuous, discrete):
        adv, mask = sibling_advantages_jit(codes, rewards, valid)
        want_adv, want_mask = np_sibling_advantages(codes, rewards, valid)
        np.testing.assert_array_equal(mask, want_mask)
        np.testing.assert_allclose(adv, want_adv, rtol=1e-4, atol=1e-4)
    assert np.asarray(mask).any() and np.abs(adv).max() > 0.5


@pytest.mark.parametrize("seed,levels", CASES)
def test_sibling_advantages_sum_to_zero_within_each_group(seed, levels):
    codes, _, valid = random_rollouts(seed, levels)
    rewards = np.random.default_rng(seed).uniform(size=(BATCH, ROLLOUTS)).astype(np.float32)
    adv, mask = map(np.asarray, sibling_advantages_jit(codes, rewards, valid))
    parent_id = np.asarray(sibling_groups_jit(codes, valid).parent_id)
    sums = defaultdict(float)
    for b, g, l in zip(*np.nonzero(mask)):
        sums[(b, l, parent_id[b, g, l])] += adv[b, g, l]
    assert sums and max(abs(s) for s in sums.values()) < 1e-4


def test_groups_with_one_child_contribute_nothing():
    """All rollouts share level 0 (one child under the root): no level-0 node, no gradient there."""
    codes, targets, valid = random_rollouts(1, 3)
    codes[valid, 0] = 1
    new, _, _ = random_log_probs(1, valid, 3)
    rewards = np.random.default_rng(1).uniform(size=(BATCH, ROLLOUTS)).astype(np.float32)
    adv, mask = sibling_advantages_jit(codes, rewards, valid)
    groups = sibling_groups_jit(codes, valid)
    np.testing.assert_array_equal(np.asarray(mask)[..., 0], False)
    np.testing.assert_array_equal(np.asarray(adv)[np.asarray(groups.num_children) < 2], 0.0)
    grad = sibling_grad_one_epoch(new, codes, rewards, valid)
    np.testing.assert_array_equal(np.asarray(grad)[~np.asarray(mask)], 0.0)
    assert np.abs(np.asarray(grad)[np.asarray(mask)]).max() > 0


@pytest.mark.parametrize("seed,levels", CASES)
def test_sibling_grpo_loss_matches_numpy(seed, levels):
    codes, targets, valid = random_rollouts(seed, levels)
    new, old, _ = random_log_probs(seed, valid, levels, spread=0.5)
    rewards = np.random.default_rng(seed).uniform(size=(BATCH, ROLLOUTS)).astype(np.float32)
    loss, stats = sibling_grpo_loss_jit(new, old, codes, rewards, valid)
    want_loss, want_groups, want_nodes, want_count = np_sibling_loss(new, old, codes, rewards, valid)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["sibling_groups_per_level"], want_groups, rtol=1e-6)
    np.testing.assert_allclose(stats["sibling_nodes_per_level"], want_nodes, rtol=1e-6)
    assert int(stats["sibling_nodes"]) == want_count > 0


def test_sibling_nodes_are_counted_once_however_many_rollouts_pass_through():
    codes, targets, valid = random_rollouts(2, 4)
    new, old, _ = random_log_probs(2, valid, 4, spread=0.5)
    rewards = np.asarray(sequence_rewards_jit(codes, targets, valid, kind="prefix_credit", level_weights=None))
    loss, stats = sibling_grpo_loss_jit(new, old, codes, rewards, valid)
    # Every rollout twice: the same nodes with the same scores, so the same loss and node count.
    doubled = [np.concatenate([x, x], axis=1) for x in (new, old, codes, rewards, valid)]
    loss2, stats2 = sibling_grpo_loss_jit(*doubled)
    np.testing.assert_allclose(loss2, loss, rtol=1e-5, atol=1e-6)
    for key in ("sibling_nodes", "sibling_nodes_per_level", "sibling_groups_per_level"):
        np.testing.assert_array_equal(stats2[key], stats[key], err_msg=key)
    # One valid rollout copied into an invalid slot: the node count stays.
    b, g = 0, int(np.argmax(valid[0]))
    empty = int(np.argmin(valid[0]))
    assert not valid[b, empty]
    codes3, valid3, rewards3 = codes.copy(), valid.copy(), rewards.copy()
    new3, old3 = new.copy(), old.copy()
    codes3[b, empty], valid3[b, empty], rewards3[b, empty] = codes[b, g], True, rewards[b, g]
    new3[b, empty], old3[b, empty] = new[b, g], old[b, g]
    _, stats3 = sibling_grpo_loss_jit(new3, old3, codes3, rewards3, valid3)
    np.testing.assert_array_equal(stats3["sibling_nodes_per_level"], stats["sibling_nodes_per_level"])


def test_sibling_gradient_with_one_inner_epoch_is_minus_node_advantage():
    codes, targets, valid = random_rollouts(3, 4)
    new, _, _ = random_log_probs(3, valid, 4)
    rewards = np.random.default_rng(3).uniform(size=(BATCH, ROLLOUTS)).astype(np.float32)
    grad = sibling_grad_one_epoch(new, codes, rewards, valid)
    adv, mask = np_sibling_advantages(codes, rewards, valid)
    want = np.where(mask, -adv / mask.sum(), 0.0)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------
# Value loss, KL, the objective
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed,levels", CASES[::2])
def test_value_loss_and_kl_match_numpy(seed, levels):
    _, _, valid = random_rollouts(seed, levels)
    values = random_values(seed, valid, levels)
    targets = np.random.default_rng(seed).normal(size=values.shape).astype(np.float32)
    loss, stats = value_loss_jit(values, targets, valid)
    want_loss, want_explained = np_value_loss(values, targets, valid)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(stats["explained_variance"], want_explained, rtol=1e-4, atol=1e-5)
    perfect = np.where(valid[..., None], targets, np.nan).astype(np.float32)
    _, perfect_stats = value_loss_jit(perfect, targets, valid)
    np.testing.assert_allclose(perfect_stats["explained_variance"], 1.0)
    new, _, ref = random_log_probs(seed, valid, levels)
    np.testing.assert_allclose(k3_kl_jit(new, ref, valid), np_k3(new, ref, valid), rtol=1e-5)
    assert float(k3_kl_jit(new, new, valid)) == 0.0


@pytest.mark.parametrize("seed,levels", CASES[2:3])
def test_rl_objective_matches_references_and_has_finite_gradients(seed, levels):
    codes, targets, valid = random_rollouts(seed, levels)
    new, old, ref = random_log_probs(seed, valid, levels)
    values = random_values(seed, valid, levels)
    rng = np.random.default_rng(seed + 300)
    cand_emb, tgt_emb = rng.normal(size=(BATCH, ROLLOUTS, 6)).astype(np.float32), rng.normal(size=(BATCH, 6))
    cand_emb[~valid] = np.nan
    config = RLLossConfig(sibling_weight=0.5, value_weight=2.0, kl_weight=0.1, reward_kind="prefix_credit")
    embeddings = {"candidate_embeddings": cand_emb, "target_embeddings": tgt_emb}
    loss, metrics = rl_objective_jit(new, old, ref, values, codes, targets, valid, config=config, **embeddings)

    weights = default_level_weights(levels)
    rewards = np_sequence_rewards(codes, targets, valid, "prefix_credit", weights)
    grpo, clip_fraction, _ = np_grpo(new, old, np_group_advantages(rewards, valid), valid)
    sibling, groups_per_level, *_ = np_sibling_loss(new, old, codes, rewards, valid)
    dense = np_level_rewards(codes, targets, weights, cand_emb, tgt_emb)
    value, explained = np_value_loss(values, np_td_targets(dense, np.float64(values), 0.99), valid)
    kl = np_k3(new, ref, valid)
    requests = [b for b in range(BATCH) if valid[b].any()]
    want = {
        "grpo_loss": grpo,
        "sibling_loss": sibling,
        "value_loss": value,
        "kl": kl,
        "total_loss": grpo + 0.5 * sibling + 2.0 * value + 0.1 * kl,
        "reward_mean": rewards[valid].mean(),
        "reward_std": rewards[valid].std(),
        "reward_group_std": np.mean([rewards[b, valid[b]].std() for b in requests]),
        "zero_signal_fraction": np.mean([np.ptp(rewards[b, valid[b]]) == 0 for b in requests]),
        "hit_rate": (np_matched(codes, targets)[valid] == levels).mean(),
        "unique_items_per_group": np.mean([len({tuple(sid) for sid in codes[b, valid[b]]}) for b in requests]),
        "valid_fraction": valid.mean(),
        "explained_variance": explained,
        "value_mean": values[valid].mean(),
        "clip_fraction": clip_fraction,
        "sibling_groups_per_level": groups_per_level,
    }
    for key, expected in want.items():
        np.testing.assert_allclose(metrics[key], expected, rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(loss, want["total_loss"], rtol=1e-4)
    assert 0 < want["zero_signal_fraction"] < 1 and want["hit_rate"] > 0
    assert all(np.isfinite(v).all() for v in metrics.values())

    def total(new_lp, value_pred):
        return rl_objective(new_lp, None, ref, value_pred, codes, targets, valid, config=config, **embeddings)[0]

    grad_logp, grad_values = jax.jit(jax.grad(total, argnums=(0, 1)))(jnp.asarray(new), jnp.asarray(values))
    for grad in (grad_logp, grad_values):  # NaN in invalid slots reaches no gradient
        assert np.isfinite(grad).all()
        np.testing.assert_array_equal(np.asarray(grad)[~valid], 0.0)
        assert np.abs(np.asarray(grad)[valid]).max() > 0


@pytest.mark.parametrize("seed,levels", CASES[2:3])
def test_rl_objective_ranks_the_ranking_reward_by_the_rollout_policy(seed, levels):
    """With ``reward_kind="ranking"`` the objective's rewards rank each group by ``logp_old`` summed over
    levels (the rollout policy's sequence log-probability): its GRPO loss and reward metrics are the
    reference's on those rewards."""
    codes, targets, valid = random_rollouts(seed, levels)
    new, old, ref = random_log_probs(seed, valid, levels)
    values = random_values(seed, valid, levels)
    config = RLLossConfig(kl_weight=0.0, reward_kind="ranking")
    _, metrics = rl_objective_jit(new, old, ref, values, codes, targets, valid, config=config)
    rewards = np_ranking_rewards(codes, targets, valid, np.where(valid[..., None], old, 0.0).sum(-1))
    grpo, _, _ = np_grpo(new, old, np_group_advantages(rewards, valid), valid)
    np.testing.assert_allclose(metrics["grpo_loss"], grpo, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["reward_mean"], rewards[valid].mean(), rtol=1e-5, atol=1e-6)
    assert (rewards < 0).any()


def test_rl_loss_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="reward_kind"):
        RLLossConfig(reward_kind="rank")
    with pytest.raises(ValueError, match="clip_eps"):
        RLLossConfig(clip_eps=0.0)
    with pytest.raises(ValueError, match="kl_weight"):
        RLLossConfig(kl_weight=-1.0)
    with pytest.raises(ValueError, match="kl_estimator"):
        RLLossConfig(kl_estimator="k2")


def test_rl_objective_penalises_the_kl_estimator_asked_for_and_logs_both():
    """kl_estimator="exact": the penalty (value and gradient) is the mean of ``prefix_kl`` over valid
    (rollout, level) pairs; "k3" ignores ``prefix_kl`` in the loss but logs it; NaN in invalid slots
    reaches neither."""
    seed, levels = CASES[1]
    codes, targets, valid = random_rollouts(seed, levels)
    new, old, ref = random_log_probs(seed, valid, levels)
    values = random_values(seed, valid, levels)
    prefix_kl = np.random.default_rng(seed + 400).uniform(0.0, 2.0, codes.shape).astype(np.float32)
    prefix_kl[~valid] = np.nan
    k3_config = RLLossConfig(kl_weight=0.1)
    exact_config = dataclasses.replace(k3_config, kl_estimator="exact")
    want_k3, want_exact = np_k3(new, ref, valid), np.float64(prefix_kl[valid]).mean()
    np.testing.assert_allclose(jax.jit(exact_kl)(prefix_kl, valid), want_exact, rtol=1e-6)

    losses = {}
    for config, want_kl in ((k3_config, want_k3), (exact_config, want_exact)):
        losses[config.kl_estimator], metrics = rl_objective_jit(
            new, old, ref, values, codes, targets, valid, config=config, prefix_kl=prefix_kl)
        np.testing.assert_allclose(metrics["kl"], want_kl, rtol=1e-5)
        np.testing.assert_allclose(metrics["kl_k3"], want_k3, rtol=1e-5)
        np.testing.assert_allclose(metrics["kl_exact"], want_exact, rtol=1e-5)
    np.testing.assert_allclose(losses["exact"] - losses["k3"], 0.1 * (want_exact - want_k3), rtol=1e-4, atol=1e-6)
    assert abs(want_exact - want_k3) > 0.1  # the two penalties differ, so the check above tells them apart

    # Without logp_ref: the exact KL alone, no k3 key.
    _, exact_only = rl_objective_jit(new, old, None, values, codes, targets, valid, config=exact_config,
                                     prefix_kl=prefix_kl)
    assert "kl_k3" not in exact_only and float(exact_only["kl"]) == float(exact_only["kl_exact"])

    def total(kl_per_prefix, config):
        return rl_objective(new, None, ref, values, codes, targets, valid, config=config, prefix_kl=kl_per_prefix)[0]

    grad = {c.kl_estimator: np.asarray(jax.jit(jax.grad(total), static_argnums=1)(prefix_kl, c))
            for c in (k3_config, exact_config)}
    want_grad = np.where(valid[..., None], 0.1 / (valid.sum() * levels), np.zeros(codes.shape))
    np.testing.assert_allclose(grad["exact"], want_grad, rtol=1e-5)
    np.testing.assert_array_equal(grad["k3"], 0.0)

    with pytest.raises(ValueError, match="prefix_kl"):
        rl_objective(new, None, ref, values, codes, targets, valid, config=exact_config)
    with pytest.raises(ValueError, match="logp_ref"):
        rl_objective(new, None, None, values, codes, targets, valid, config=k3_config, prefix_kl=prefix_kl)
    with pytest.raises(ValueError, match="prefix_kl"):
        rl_objective(new, None, ref, values, codes, targets, valid, config=exact_config, prefix_kl=prefix_kl[..., 1:])
