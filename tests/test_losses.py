"""Losses (training.losses, training.apao, training.objective) and per-prefix
metrics against plain NumPy (float64) references."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training.apao import (
    adaptive_prefix_weights,
    pairwise_prefix_losses,
    pairwise_prefix_losses_per_example,
    pointwise_prefix_losses,
    prefix_match_from_tokens,
    sample_negatives,
)
from training.losses import (
    LossConfig,
    cross_entropy_loss,
    masked_softmax_loss,
    target_outside_mask_fraction,
    token_log_probs,
)
from training.metrics import prefix_auc, prefix_mrr
from training.objective import training_objective
from training.prefix_counts import count_distinct_prefixes

# Jitted once per shape: eager dispatch of every primitive would dominate runtime.
pairwise_prefix_losses_per_example = jax.jit(
    pairwise_prefix_losses_per_example, static_argnames=("num_prefixes", "prefix_tau")
)
pairwise_prefix_losses = jax.jit(pairwise_prefix_losses, static_argnames=("num_prefixes", "prefix_tau"))
adaptive_prefix_weights = jax.jit(adaptive_prefix_weights, static_argnames=("eta",))
prefix_auc = jax.jit(prefix_auc)
prefix_mrr = jax.jit(prefix_mrr)
training_objective_jit = jax.jit(training_objective, static_argnames=("config",))

BATCH, NUM_NEGS, SID_LEN, VOCAB = 6, 12, 4, 9
RTOL, ATOL = 2e-5, 2e-5


# ---------------------------------------------------------------------------
# NumPy references (float64, written from the formulas, loops where clearer)
# ---------------------------------------------------------------------------


def np_log_softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def np_token_log_probs(logits, targets, tau=1.0):
    logp = np_log_softmax(np.asarray(logits, np.float64) / tau)
    return np.take_along_axis(logp, np.asarray(targets)[..., None], axis=-1)[..., 0]


def np_masked_mean(values, example_mask):
    if example_mask is None:
        return values.mean(axis=0)
    m = np.asarray(example_mask, bool)
    return values[m].sum(axis=0) / max(m.sum(), 1)


def np_cross_entropy(logits, targets, tau=1.0, example_mask=None):
    return np_masked_mean(-np_token_log_probs(logits, targets, tau).mean(-1), example_mask)


def np_msl(logits, targets, valid, tau=1.0, example_mask=None):
    batch, length, _ = logits.shape
    per_example = np.zeros(batch)
    for b in range(batch):
        for j in range(length):
            allowed = np.asarray(valid[b, j], bool).copy()
            allowed[targets[b, j]] = True
            z = np.asarray(logits[b, j], np.float64) / tau
            per_example[b] -= z[targets[b, j]] - np.log(np.exp(z[allowed]).sum())
    return np_masked_mean(per_example / length, example_mask)


def np_pointwise(token_logprobs, num_prefixes, tau=1.0, example_mask=None):
    lp = np.asarray(token_logprobs, np.float64)
    out = np.zeros(num_prefixes)
    for t in range(1, num_prefixes + 1):
        out[t - 1] = -np_masked_mean(lp[:, :t].sum(1) / t, example_mask) / tau
    return out


def np_pairwise_per_example(pos_lp, neg_lp, match, num_distinct, num_prefixes, tau=1.0):
    """Direct formula with exp (inputs kept moderate so float64 is exact enough)."""
    pos_lp, neg_lp = np.asarray(pos_lp, np.float64), np.asarray(neg_lp, np.float64)
    batch, num_negs, _ = neg_lp.shape
    out = np.zeros((batch, num_prefixes))
    for b in range(batch):
        for t in range(1, num_prefixes + 1):
            unmasked = [k for k in range(num_negs) if not match[b, k, t - 1]]
            if not unmasked or num_distinct[t - 1] <= 1:
                continue
            c = (num_distinct[t - 1] - 1) / len(unmasked)
            pos_term = np.exp(pos_lp[b, :t].sum() / tau)
            neg_sum = sum(np.exp(neg_lp[b, k, :t].sum() / tau) for k in unmasked)
            out[b, t - 1] = -np.log(pos_term / (pos_term + c * neg_sum)) / t
    return out


def np_adaptive_weights(losses, eta):
    b = np.where(np.isfinite(losses), np.asarray(losses, np.float64), 0.0)
    if b.sum() == 0:
        return np.full_like(b, 1.0 / b.size)
    w = b / b.sum()
    w = w * np.exp(eta * b)
    return w / w.sum()


def np_auc_mrr(pos_s, neg_s, unmasked, example_mask=None):
    batch, _, num_prefixes = neg_s.shape
    m = np.ones(batch, bool) if example_mask is None else np.asarray(example_mask, bool)
    auc, mrr = np.zeros(num_prefixes), np.zeros(num_prefixes)
    for t in range(num_prefixes):
        aucs, mrrs = [], []
        for b in range(batch):
            if not m[b]:
                continue
            negs = neg_s[b, unmasked[b, :, t], t]
            mrrs.append(1.0 / (1 + (negs > pos_s[b, t]).sum()))
            if negs.size:
                aucs.append(((negs < pos_s[b, t]).sum() + 0.5 * (negs == pos_s[b, t]).sum()) / negs.size)
        auc[t] = np.mean(aucs) if aucs else np.nan
        mrr[t] = np.mean(mrrs) if mrrs else 0.0
    return auc, mrr


def np_prefix_match(pos, neg, dedup):
    batch, num_negs, length = neg.shape
    out = np.zeros((batch, num_negs, length), bool)
    for b in range(batch):
        for t in range(1, length + 1):
            seen = {tuple(pos[b, :t])}
            for k in range(num_negs):
                prefix = tuple(neg[b, k, :t])
                out[b, k, t - 1] = prefix in seen if dedup else prefix == tuple(pos[b, :t])
                seen.add(prefix)
    return out


# ---------------------------------------------------------------------------
# Random inputs
# ---------------------------------------------------------------------------


def random_logits(seed, shape, scale=2.0):
    return np.random.default_rng(seed).normal(0.0, scale, shape).astype(np.float32)


def random_tokens(seed, shape, vocab=VOCAB):
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32)


def random_pairwise_inputs(seed, codebook=3):
    """Token log-probs and SIDs with a small codebook, so prefixes often collide."""
    rng = np.random.default_rng(seed)
    pos_lp = np.log(rng.uniform(0.05, 1.0, (BATCH, SID_LEN))).astype(np.float32)
    neg_lp = np.log(rng.uniform(0.05, 1.0, (BATCH, NUM_NEGS, SID_LEN))).astype(np.float32)
    pos_tokens = rng.integers(0, codebook, (BATCH, SID_LEN)).astype(np.int32)
    neg_tokens = rng.integers(0, codebook, (BATCH, NUM_NEGS, SID_LEN)).astype(np.int32)
    num_distinct = np.array([3, 9, 27, 60], np.int64)
    return pos_lp, neg_lp, pos_tokens, neg_tokens, num_distinct


EXAMPLE_MASK = np.array([True, True, False, True, False, True])


# ---------------------------------------------------------------------------
# Token log-probs, CE, MSL
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_token_log_probs_matches_numpy_with_leading_dims(tau):
    logits = random_logits(0, (3, 5, SID_LEN, VOCAB))
    targets = random_tokens(1, (3, 5, SID_LEN))
    got = token_log_probs(jnp.asarray(logits), jnp.asarray(targets), tau)
    assert got.shape == (3, 5, SID_LEN)
    np.testing.assert_allclose(got, np_token_log_probs(logits, targets, tau), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("example_mask", [None, EXAMPLE_MASK])
def test_cross_entropy_matches_numpy(example_mask):
    logits = random_logits(2, (BATCH, SID_LEN, VOCAB))
    targets = random_tokens(3, (BATCH, SID_LEN))
    mask = None if example_mask is None else jnp.asarray(example_mask)
    got = cross_entropy_loss(jnp.asarray(logits), jnp.asarray(targets), temperature=1.5, example_mask=mask)
    np.testing.assert_allclose(got, np_cross_entropy(logits, targets, 1.5, example_mask), rtol=RTOL)


def test_padding_rows_change_nothing_even_when_non_finite():
    logits = random_logits(4, (BATCH, SID_LEN, VOCAB))
    targets = random_tokens(5, (BATCH, SID_LEN))
    mask = jnp.asarray(EXAMPLE_MASK)
    poisoned = logits.copy()
    poisoned[~EXAMPLE_MASK] = np.nan
    clean = cross_entropy_loss(jnp.asarray(logits), jnp.asarray(targets), example_mask=mask)
    dirty = cross_entropy_loss(jnp.asarray(poisoned), jnp.asarray(targets), example_mask=mask)
    np.testing.assert_allclose(dirty, clean, rtol=1e-6)
    all_padding = cross_entropy_loss(
        jnp.asarray(logits), jnp.asarray(targets), example_mask=jnp.zeros(BATCH, bool)
    )
    assert float(all_padding) == 0.0


@pytest.mark.parametrize("example_mask", [None, EXAMPLE_MASK])
def test_msl_matches_numpy(example_mask):
    logits = random_logits(6, (BATCH, SID_LEN, VOCAB))
    targets = random_tokens(7, (BATCH, SID_LEN))
    valid = np.random.default_rng(8).uniform(size=(BATCH, SID_LEN, VOCAB)) < 0.4
    np.put_along_axis(valid, targets[..., None], True, axis=-1)
    mask = None if example_mask is None else jnp.asarray(example_mask)
    got = masked_softmax_loss(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(valid), temperature=2.0, example_mask=mask
    )
    want = np_msl(logits, targets, valid, 2.0, example_mask)
    np.testing.assert_allclose(got, want, rtol=RTOL)
    # Restricting the softmax can only raise the target's probability.
    assert float(got) < float(np_cross_entropy(logits, targets, 2.0, example_mask))


def test_msl_with_full_mask_is_ce_and_bad_target_stays_finite():
    logits = random_logits(9, (BATCH, SID_LEN, VOCAB))
    targets = random_tokens(10, (BATCH, SID_LEN))
    full = jnp.ones((BATCH, SID_LEN, VOCAB), bool)
    np.testing.assert_allclose(
        masked_softmax_loss(jnp.asarray(logits), jnp.asarray(targets), full, temperature=0.7),
        cross_entropy_loss(jnp.asarray(logits), jnp.asarray(targets), temperature=0.7),
        rtol=1e-6,
    )
    # An all-False mask (target not valid anywhere): the target is kept in the
    # support, so every token log-prob is 0 and the fraction diagnostic is 1.
    empty = jnp.zeros((BATCH, SID_LEN, VOCAB), bool)
    loss = masked_softmax_loss(jnp.asarray(logits), jnp.asarray(targets), empty)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    assert float(target_outside_mask_fraction(jnp.asarray(targets), empty)) == 1.0
    assert float(target_outside_mask_fraction(jnp.asarray(targets), full)) == 0.0


# ---------------------------------------------------------------------------
# APAO prefix losses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_prefixes,tau,example_mask", [(4, 1.0, None), (3, 0.5, EXAMPLE_MASK)])
def test_pointwise_prefix_losses_match_numpy(num_prefixes, tau, example_mask):
    token_lp = np_token_log_probs(random_logits(11, (BATCH, SID_LEN, VOCAB)), random_tokens(12, (BATCH, SID_LEN)))
    mask = None if example_mask is None else jnp.asarray(example_mask)
    got = pointwise_prefix_losses(
        jnp.asarray(token_lp, jnp.float32), num_prefixes=num_prefixes, prefix_tau=tau, example_mask=mask
    )
    assert got.shape == (num_prefixes,)
    np.testing.assert_allclose(got, np_pointwise(token_lp, num_prefixes, tau, example_mask), rtol=RTOL)


@pytest.mark.parametrize("tau,num_prefixes", [(1.0, 4), (0.5, 3), (2.0, 4)])
def test_pairwise_prefix_losses_match_numpy(tau, num_prefixes):
    pos_lp, neg_lp, pos_tokens, neg_tokens, num_distinct = random_pairwise_inputs(13)
    match = np_prefix_match(pos_tokens, neg_tokens, dedup=False)
    assert match.any() and (~match).any()  # both branches exercised
    got = pairwise_prefix_losses_per_example(
        jnp.asarray(pos_lp), jnp.asarray(neg_lp), jnp.asarray(match), jnp.asarray(num_distinct),
        num_prefixes=num_prefixes, prefix_tau=tau,
    )
    want = np_pairwise_per_example(pos_lp, neg_lp, match, num_distinct, num_prefixes, tau)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert (want > 0).any()
    mean = pairwise_prefix_losses(
        jnp.asarray(pos_lp), jnp.asarray(neg_lp), jnp.asarray(match), jnp.asarray(num_distinct),
        num_prefixes=num_prefixes, prefix_tau=tau, example_mask=jnp.asarray(EXAMPLE_MASK),
    )
    np.testing.assert_allclose(mean, np_masked_mean(want, EXAMPLE_MASK), rtol=RTOL, atol=ATOL)


def test_pairwise_ignores_masked_negatives_and_guards_empty_rows():
    pos_lp, neg_lp, pos_tokens, neg_tokens, num_distinct = random_pairwise_inputs(14)
    match = np_prefix_match(pos_tokens, neg_tokens, dedup=False)
    match[0] = True  # example 0: every negative masked at every prefix
    kwargs = dict(num_prefixes=SID_LEN, prefix_tau=1.0)

    def losses(neg):
        return pairwise_prefix_losses_per_example(
            jnp.asarray(pos_lp), jnp.asarray(neg), jnp.asarray(match), jnp.asarray(num_distinct), **kwargs
        )

    base = losses(neg_lp)
    np.testing.assert_array_equal(base[0], np.zeros(SID_LEN))
    # Scores of masked negatives do not matter (a masked negative's prefix can
    # carry any value, even a huge one).
    shuffled = neg_lp.copy()
    masked_everywhere = match.all(axis=-1)
    shuffled[masked_everywhere] = 50.0
    np.testing.assert_allclose(losses(shuffled), base, rtol=1e-6)
    # Gradients stay finite on the all-masked example.
    grad = jax.grad(lambda p, n: losses_sum(p, n, match, num_distinct), argnums=(0, 1))(
        jnp.asarray(pos_lp), jnp.asarray(neg_lp)
    )
    assert all(bool(jnp.isfinite(g).all()) for g in grad)
    assert float(jnp.abs(grad[0][0]).sum()) == 0.0


def losses_sum(pos_lp, neg_lp, match, num_distinct, tau=1.0):
    return pairwise_prefix_losses_per_example(
        pos_lp, neg_lp, jnp.asarray(match), jnp.asarray(num_distinct), num_prefixes=SID_LEN, prefix_tau=tau
    ).sum()


def test_pairwise_single_competing_prefix_and_rescaling():
    pos_lp = np.log(np.full((1, 2), 0.5, np.float32))
    neg_lp = np.log(np.full((1, 4, 2), 0.25, np.float32))
    match = np.zeros((1, 4, 2), bool)
    match[0, :3, 0] = True  # t=1: only negative 3 competes
    got = pairwise_prefix_losses_per_example(
        jnp.asarray(pos_lp), jnp.asarray(neg_lp), jnp.asarray(match), jnp.asarray([1, 11]), num_prefixes=2
    )
    # t=1: N_1 = 1 -> no competing prefix in the catalogue -> 0.
    # t=2: c = 10/4; pos = 0.25, neg sum = 4 * 1/16 -> -log(0.25 / (0.25 + 2.5 * 0.25)) / 2.
    np.testing.assert_allclose(got, [[0.0, np.log(3.5) / 2]], rtol=1e-6)


def test_pairwise_with_every_competing_prefix_is_the_catalogue_renormalised_prefix_loss():
    # docs/losses.md: with each competing catalogue prefix as a negative once (all items as
    # negatives, repeats masked, so c_t = 1) and tau = 1, L_t = -(S_t(pos) - log Z_t) / t, where
    # Z_t = sum over the catalogue's distinct t-prefixes of p(prefix): the pointwise loss plus log(Z_t) / t.
    rng = np.random.default_rng(5)
    vocab, length = 4, 3
    all_sids = np.array(np.meshgrid(*[np.arange(vocab)] * length, indexing="ij")).reshape(length, -1).T
    codes = all_sids[rng.choice(len(all_sids), size=20, replace=False)]  # [items, T], distinct
    table = {}  # a normalised next-token distribution for every prefix

    def log_p(prefix):
        if prefix not in table:
            logits = rng.normal(size=vocab) * 2
            table[prefix] = logits - np.log(np.exp(logits).sum())
        return table[prefix]

    token_lp = np.array([[log_p(tuple(sid[:j]))[sid[j]] for j in range(length)] for sid in codes])  # [items, T]
    positive, negatives = 0, np.arange(1, len(codes))
    match = prefix_match_from_tokens(jnp.asarray(codes[positive][None]), jnp.asarray(codes[negatives][None]),
                                     mask_repeated_negatives=True)
    num_distinct = count_distinct_prefixes(codes)
    got = pairwise_prefix_losses_per_example(
        jnp.asarray(token_lp[positive][None], jnp.float32), jnp.asarray(token_lp[negatives][None], jnp.float32),
        match, jnp.asarray(num_distinct), num_prefixes=length, prefix_tau=1.0)[0]
    scores = np.cumsum(token_lp, axis=1)  # [items, T]
    for t in range(1, length + 1):
        distinct = {tuple(sid[:t]): score for sid, score in zip(codes, scores[:, t - 1])}
        log_z = np.log(np.exp(list(distinct.values())).sum())
        assert (~np.asarray(match)[0, :, t - 1]).sum() == len(distinct) - 1  # c_t = 1
        pointwise = -scores[positive, t - 1] / t
        np.testing.assert_allclose(got[t - 1], pointwise + log_z / t, rtol=1e-5)
        assert log_z <= 1e-9  # the catalogue holds at most all the model's mass: pairwise <= pointwise


def test_pairwise_is_stable_for_extreme_scores():
    pos_lp = np.full((2, SID_LEN), -300.0, np.float32)
    neg_lp = np.full((2, 3, SID_LEN), -1.0, np.float32)
    neg_lp[1] = -900.0
    match = np.zeros((2, 3, SID_LEN), bool)
    num_distinct = np.array([4, 16, 64, 256])
    got = np.asarray(pairwise_prefix_losses_per_example(
        jnp.asarray(pos_lp), jnp.asarray(neg_lp), jnp.asarray(match), jnp.asarray(num_distinct),
        num_prefixes=SID_LEN,
    ))
    assert np.isfinite(got).all()
    t = np.arange(1, SID_LEN + 1)
    # Example 0: negatives dominate -> loss = (log c + S_neg - S_pos) / t, i.e. linear.
    want0 = (np.log((num_distinct - 1) / 3) + np.log(3) + (-1.0 * t) - (-300.0 * t)) / t
    np.testing.assert_allclose(got[0], want0, rtol=1e-5)
    # Example 1: positive dominates -> loss ~ 0 (not NaN).
    np.testing.assert_allclose(got[1], 0.0, atol=1e-6)
    grad = jax.grad(losses_sum, argnums=(0, 1))(jnp.asarray(pos_lp), jnp.asarray(neg_lp), match, num_distinct)
    assert all(bool(jnp.isfinite(g).all()) for g in grad)


def test_pairwise_gradient_matches_finite_differences():
    pos_lp, neg_lp, pos_tokens, neg_tokens, num_distinct = random_pairwise_inputs(15)
    match = np_prefix_match(pos_tokens, neg_tokens, dedup=False)
    grad_pos, grad_neg = jax.grad(losses_sum, argnums=(0, 1))(
        jnp.asarray(pos_lp), jnp.asarray(neg_lp), match, num_distinct, 0.7
    )

    def ref(p, n):
        return np_pairwise_per_example(p, n, match, num_distinct, SID_LEN, 0.7).sum()

    eps = 1e-5
    rng = np.random.default_rng(16)
    p64, n64 = pos_lp.astype(np.float64), neg_lp.astype(np.float64)
    for _ in range(6):
        b, j = rng.integers(BATCH), rng.integers(SID_LEN)
        bump = np.zeros_like(p64)
        bump[b, j] = eps
        fd = (ref(p64 + bump, n64) - ref(p64 - bump, n64)) / (2 * eps)
        np.testing.assert_allclose(grad_pos[b, j], fd, rtol=1e-3, atol=1e-5)
        k = rng.integers(NUM_NEGS)
        bump = np.zeros_like(n64)
        bump[b, k, j] = eps
        fd = (ref(p64, n64 + bump) - ref(p64, n64 - bump)) / (2 * eps)
        np.testing.assert_allclose(grad_neg[b, k, j], fd, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------------
# Adaptive weights
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 1e-4, 0.5, 3.0])
def test_adaptive_weights_match_numpy(eta):
    losses = np.array([0.3, 2.5, 1.1, 0.05])
    got = adaptive_prefix_weights(jnp.asarray(losses, jnp.float32), eta)
    np.testing.assert_allclose(got, np_adaptive_weights(losses, eta), rtol=1e-5)
    assert float(got.sum()) == pytest.approx(1.0, abs=1e-6)
    if eta > 0:  # the worst prefix gains weight relative to eta = 0
        assert float(got[1]) > float(np_adaptive_weights(losses, 0.0)[1])


def test_adaptive_weights_zero_non_finite_uniform_fallback_and_no_overflow():
    losses = jnp.asarray([1.0, jnp.nan, 3.0, jnp.inf])
    got = adaptive_prefix_weights(losses, 0.1)
    np.testing.assert_allclose(got, np_adaptive_weights(np.asarray(losses), 0.1), rtol=1e-5)
    assert float(got[1]) == 0.0 and float(got[3]) == 0.0
    np.testing.assert_allclose(adaptive_prefix_weights(jnp.zeros(3), 1.0), np.full(3, 1 / 3), rtol=1e-6)
    big = adaptive_prefix_weights(jnp.asarray([100.0, 200.0]), 10.0)  # e^{2000} would overflow
    np.testing.assert_allclose(big, [0.0, 1.0], atol=1e-6)
    # No gradient flows through the weights.
    grad = jax.grad(lambda x: adaptive_prefix_weights(x, 0.3)[0])(jnp.asarray([1.0, 2.0]))
    np.testing.assert_array_equal(grad, [0.0, 0.0])


def test_running_weights_follow_the_numpy_recurrence():
    """LossConfig.running_weights: w_k = normalise(w_{k-1} * exp(eta * b_k)) from
    uniform, i.e. proportional to exp(eta * sum of the b's); zero stays zero."""
    rng = np.random.default_rng(0)
    eta = 0.05
    w = jnp.full(4, 0.25)
    total = np.zeros(4)
    for _ in range(5):
        b = rng.uniform(0.5, 4.0, 4)
        total += b
        w = adaptive_prefix_weights(jnp.asarray(b, jnp.float32), eta, prior=w)
        expected = np.exp(eta * (total - total.max()))
        np.testing.assert_allclose(w, expected / expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(adaptive_prefix_weights(jnp.ones(3), 0.0, prior=jnp.asarray([0.2, 0.3, 0.5])),
                               [0.2, 0.3, 0.5], rtol=1e-6)  # eta 0: the prior stays
    held = adaptive_prefix_weights(jnp.asarray([1.0, jnp.nan, 2.0]), 1.0, prior=jnp.asarray([0.0, 0.5, 0.5]))
    assert float(held[0]) == 0.0 and float(held[2]) > float(held[1]) > 0.0  # NaN loss counts as 0
    np.testing.assert_allclose(adaptive_prefix_weights(jnp.ones(2), 1.0, prior=jnp.zeros(2)), [0.5, 0.5])
    with pytest.raises(ValueError, match="prior has shape"):
        adaptive_prefix_weights(jnp.ones(3), 1.0, prior=jnp.ones(2))
    with pytest.raises(ValueError, match="running_weights"):
        LossConfig(kind="ce", running_weights=True)


# ---------------------------------------------------------------------------
# Negatives and prefix masks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dedup", [False, True])
def test_prefix_match_from_tokens_matches_numpy(dedup):
    _, _, pos_tokens, neg_tokens, _ = random_pairwise_inputs(17, codebook=2)
    got = prefix_match_from_tokens(
        jnp.asarray(pos_tokens), jnp.asarray(neg_tokens), mask_repeated_negatives=dedup
    )
    assert got.dtype == jnp.bool_ and got.shape == (BATCH, NUM_NEGS, SID_LEN)
    np.testing.assert_array_equal(got, np_prefix_match(pos_tokens, neg_tokens, dedup))
    # Once a prefix diverges it stays diverged (without dedup).
    if not dedup:
        assert not (np.asarray(got)[..., 1:] & ~np.asarray(got)[..., :-1]).any()


def test_sample_negatives_uniform_and_never_positive():
    num_items, neg_k = 7, 4000
    positives = jnp.asarray([0, 3, 6], jnp.int32)
    negs = sample_negatives(jax.random.key(0), num_items, positives, neg_k)
    assert negs.dtype == jnp.int32 and negs.shape == (3, neg_k)
    negs = np.asarray(negs)
    assert ((negs >= 0) & (negs < num_items)).all()
    assert (negs != np.asarray(positives)[:, None]).all()
    for row, pos in zip(negs, np.asarray(positives)):
        counts = np.bincount(row, minlength=num_items)
        others = np.delete(counts, pos)
        # each of the 6 other items expects 4000/6 ~ 667 draws (sd ~ 24)
        assert np.all(np.abs(others - neg_k / 6) < 120)
    again = sample_negatives(jax.random.key(0), num_items, positives, neg_k)
    np.testing.assert_array_equal(again, negs)
    with pytest.raises(ValueError, match="at least 2"):
        sample_negatives(jax.random.key(0), 1, positives, 3)


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


def test_auc_and_mrr_match_numpy_with_ties_and_masks():
    rng = np.random.default_rng(19)
    pos_s = rng.integers(-3, 3, (BATCH, SID_LEN)).astype(np.float32)  # integers -> ties
    neg_s = rng.integers(-3, 3, (BATCH, NUM_NEGS, SID_LEN)).astype(np.float32)
    unmasked = rng.uniform(size=(BATCH, NUM_NEGS, SID_LEN)) < 0.6
    unmasked[1, :, 2] = False  # example 1 has no competitor at prefix 3
    for example_mask in (None, EXAMPLE_MASK):
        mask = None if example_mask is None else jnp.asarray(example_mask)
        auc = prefix_auc(jnp.asarray(pos_s), jnp.asarray(neg_s), jnp.asarray(unmasked), mask)
        mrr = prefix_mrr(jnp.asarray(pos_s), jnp.asarray(neg_s), jnp.asarray(unmasked), mask)
        want_auc, want_mrr = np_auc_mrr(pos_s, neg_s, unmasked, example_mask)
        np.testing.assert_allclose(auc, want_auc, rtol=1e-6)
        np.testing.assert_allclose(mrr, want_mrr, rtol=1e-6)


def test_auc_mrr_extremes():
    pos_s = jnp.zeros((2, 1))
    neg_best = jnp.full((2, 3, 1), -1.0)
    unmasked = jnp.ones((2, 3, 1), bool)
    assert float(prefix_auc(pos_s, neg_best, unmasked)[0]) == 1.0
    assert float(prefix_mrr(pos_s, neg_best, unmasked)[0]) == 1.0
    assert float(prefix_auc(pos_s, -neg_best, unmasked)[0]) == 0.0
    assert float(prefix_mrr(pos_s, -neg_best, unmasked)[0]) == pytest.approx(0.25)
    assert np.isnan(float(prefix_auc(pos_s, neg_best, ~unmasked)[0]))  # nothing to rank against
    assert float(prefix_mrr(pos_s, neg_best, ~unmasked)[0]) == 1.0


# ---------------------------------------------------------------------------
# The combining objective
# ---------------------------------------------------------------------------


def objective_inputs(seed=20):
    logits = random_logits(seed, (BATCH, SID_LEN, VOCAB))
    neg_logits = random_logits(seed + 1, (BATCH, NUM_NEGS, SID_LEN, VOCAB))
    rng = np.random.default_rng(seed + 2)
    targets = rng.integers(0, 3, (BATCH, SID_LEN)).astype(np.int32)
    neg_tokens = rng.integers(0, 3, (BATCH, NUM_NEGS, SID_LEN)).astype(np.int32)
    valid = rng.uniform(size=(BATCH, SID_LEN, VOCAB)) < 0.5
    np.put_along_axis(valid, targets[..., None], True, axis=-1)
    num_distinct = np.array([3, 9, 27, 70])
    return logits, targets, neg_logits, neg_tokens, valid, num_distinct


def np_objective(config, logits, targets, neg_logits, neg_tokens, valid, num_distinct, example_mask):
    ce = np_cross_entropy(logits, targets, config.ce_tau, example_mask)
    num_prefixes = config.num_prefixes or SID_LEN
    if config.kind == "ce":
        return ce, None
    if config.kind == "msl":
        return np_msl(logits, targets, valid, config.msl_tau, example_mask), None
    pos_lp = np_token_log_probs(logits, targets, config.ce_tau)
    if config.kind == "apao_pointwise":
        losses = np_pointwise(pos_lp, num_prefixes, config.prefix_tau, example_mask)
    else:
        neg_lp = np_token_log_probs(neg_logits, neg_tokens, config.ce_tau)
        match = np_prefix_match(targets, neg_tokens, config.dedup_negative_prefixes)
        per_example = np_pairwise_per_example(pos_lp, neg_lp, match, num_distinct, num_prefixes, config.prefix_tau)
        losses = np_masked_mean(per_example, example_mask)
    weights = np_adaptive_weights(losses, config.eta)
    total = config.beta * (weights * losses).sum() + (ce if config.use_ce else 0.0)
    return total, (losses, weights)


CONFIGS = [
    LossConfig(kind="ce", ce_tau=1.3),
    LossConfig(kind="msl", msl_tau=2.0),
    LossConfig(kind="apao_pointwise", beta=0.3, eta=1e-4),
    LossConfig(kind="apao_pointwise", beta=0.2, eta=0.5, prefix_tau=0.5, ce_tau=1.5, num_prefixes=3),
    LossConfig(kind="apao_pointwise", use_ce=False, eta=1.0),
    LossConfig(kind="apao_pairwise", neg_k=NUM_NEGS, beta=0.1, eta=0.5, prefix_tau=0.8),
    LossConfig(kind="apao_pairwise", neg_k=NUM_NEGS, use_ce=False, num_prefixes=3,
               dedup_negative_prefixes=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.kind}-{c.use_ce}-{c.num_prefixes}")
def test_objective_matches_numpy_and_has_finite_gradients(config):
    logits, targets, neg_logits, neg_tokens, valid, num_distinct = objective_inputs()
    mask = jnp.asarray(EXAMPLE_MASK)

    @jax.jit
    def loss_fn(pos_logits, neg_logits):
        return training_objective(
            pos_logits, jnp.asarray(targets), config=config, example_mask=mask,
            valid_next_mask=jnp.asarray(valid), neg_logits=neg_logits, neg_tokens=jnp.asarray(neg_tokens),
            num_distinct_prefixes=jnp.asarray(num_distinct),
        )

    (total, aux), grads = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        jnp.asarray(logits), jnp.asarray(neg_logits)
    )
    want_total, want_parts = np_objective(config, logits, targets, neg_logits, neg_tokens, valid, num_distinct,
                                          EXAMPLE_MASK)
    np.testing.assert_allclose(total, want_total, rtol=5e-5)
    np.testing.assert_allclose(aux["total_loss"], want_total, rtol=5e-5)
    np.testing.assert_allclose(aux["ce_loss"], np_cross_entropy(logits, targets, config.ce_tau, EXAMPLE_MASK),
                               rtol=5e-5)
    num_prefixes = config.num_prefixes or SID_LEN
    assert aux["prefix_losses"].shape == aux["prefix_weights"].shape == (num_prefixes,)
    if want_parts is not None:
        np.testing.assert_allclose(aux["prefix_losses"], want_parts[0], rtol=5e-5, atol=1e-6)
        np.testing.assert_allclose(aux["prefix_weights"], want_parts[1], rtol=5e-5, atol=1e-6)
    assert all(bool(jnp.isfinite(g).all()) for g in grads)
    assert float(jnp.abs(grads[0]).sum()) > 0
    # Padding rows get no gradient.
    assert float(jnp.abs(grads[0][~EXAMPLE_MASK]).sum()) == 0.0
    if config.kind == "apao_pairwise":
        assert float(jnp.abs(grads[1]).sum()) > 0
        for key in ("prefix_auc", "prefix_mrr", "mean_competing_negatives"):
            assert aux[key].shape == (num_prefixes,)
    if config.kind == "msl":
        assert float(aux["msl_target_outside_mask_fraction"]) == 0.0


def test_objective_pairwise_precomputed_inputs_equal_token_path():
    logits, targets, neg_logits, neg_tokens, _, num_distinct = objective_inputs(30)
    config = LossConfig(kind="apao_pairwise", neg_k=NUM_NEGS, ce_tau=1.7, eta=0.2)
    from_tokens, _ = training_objective_jit(
        jnp.asarray(logits), jnp.asarray(targets), config=config, neg_logits=jnp.asarray(neg_logits),
        neg_tokens=jnp.asarray(neg_tokens), num_distinct_prefixes=jnp.asarray(num_distinct),
    )
    neg_lp = token_log_probs(jnp.asarray(neg_logits), jnp.asarray(neg_tokens), config.ce_tau)
    match = prefix_match_from_tokens(jnp.asarray(targets), jnp.asarray(neg_tokens))
    precomputed, _ = training_objective_jit(
        jnp.asarray(logits), jnp.asarray(targets), config=config, neg_token_logprobs=neg_lp,
        prefix_match=match, num_distinct_prefixes=num_distinct,
    )
    np.testing.assert_allclose(precomputed, from_tokens, rtol=1e-6)


def test_objective_excludes_non_finite_prefix_loss():
    logits, targets, neg_logits, neg_tokens, _, num_distinct = objective_inputs(40)
    config = LossConfig(kind="apao_pairwise", neg_k=NUM_NEGS, eta=0.1)
    neg_lp = np.array(token_log_probs(jnp.asarray(neg_logits), jnp.asarray(neg_tokens)))
    neg_lp[0, :, 3] = np.nan  # poisons S_4 of example 0 -> prefix loss 4 is NaN
    match = np.asarray(prefix_match_from_tokens(jnp.asarray(targets), jnp.asarray(neg_tokens)))
    total, aux = training_objective_jit(
        jnp.asarray(logits), jnp.asarray(targets), config=config, neg_token_logprobs=jnp.asarray(neg_lp),
        prefix_match=jnp.asarray(match), num_distinct_prefixes=num_distinct,
    )
    assert np.isnan(float(aux["prefix_losses"][3]))
    assert float(aux["prefix_weights"][3]) == 0.0
    assert np.isfinite(float(total))
    finite = np.asarray(aux["prefix_losses"][:3])
    want = float(aux["ce_loss"]) + config.beta * (np_adaptive_weights(finite, config.eta) * finite).sum()
    np.testing.assert_allclose(total, want, rtol=5e-5)


def test_config_validation_and_shape_errors():
    with pytest.raises(ValueError, match="kind"):
        LossConfig(kind="bpr")
    with pytest.raises(ValueError, match="msl_tau"):
        LossConfig(kind="msl", msl_tau=0.0)
    with pytest.raises(ValueError, match="use_ce"):
        LossConfig(kind="ce", use_ce=False)
    assert hash(LossConfig()) == hash(dataclasses.replace(LossConfig()))
    logits, targets, neg_logits, neg_tokens, _, num_distinct = objective_inputs(50)
    with pytest.raises(ValueError, match="valid_next_mask"):
        training_objective(jnp.asarray(logits), jnp.asarray(targets), config=LossConfig(kind="msl"))
    with pytest.raises(ValueError, match="neg_k"):
        training_objective(
            jnp.asarray(logits), jnp.asarray(targets), config=LossConfig(kind="apao_pairwise", neg_k=5),
            neg_logits=jnp.asarray(neg_logits), neg_tokens=jnp.asarray(neg_tokens),
            num_distinct_prefixes=num_distinct,
        )
    with pytest.raises(ValueError, match="num_prefixes"):
        training_objective(jnp.asarray(logits), jnp.asarray(targets),
                       config=LossConfig(kind="apao_pointwise", num_prefixes=SID_LEN + 1))
