"""The exact KL of the trie-restricted policies at every prefix of the rollouts
(constrained.sampling.restricted_kl): equal to the NumPy reference over dense
and CSR levels, non-negative, 0 where the two policies agree or the prefix has
one child, and its gradient is the closed form ``p (log p - log q - KL)`` on the
prefix's children, 0 elsewhere and finite everywhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from catalogues import random_catalogue

from constrained.index import build_index
from constrained.reference import build_dict_trie, log_softmax, reference_restricted_kl
from constrained.sampling import restricted_kl

SIZES, OFFSETS, VOCAB, BATCH, ROLLOUTS = (4, 5, 6), (2, 6, 11), 17, 2, 6


@jax.jit
def kl_and_grads(index, new_first, new_rest, ref_first, ref_rest, sids):
    """The KL, the gradient of its sum (all four logits) and of each entry w.r.t. the new rest logits."""

    def kl(new_first, new_rest, ref_first, ref_rest):
        return restricted_kl(index, new_first, new_rest, ref_first, ref_rest, sids)

    def total(*logits):
        return jnp.sum(kl(*logits))

    out = kl(new_first, new_rest, ref_first, ref_rest)
    grads = jax.grad(total, argnums=(0, 1, 2, 3))(new_first, new_rest, ref_first, ref_rest)
    # d kl[b, g, l] / d new_rest[b, g, l - 1]: the entry's own logits (other entries do not read them).
    own = jax.grad(lambda rest: jnp.sum(kl(new_first, rest, ref_first, ref_rest)[..., 1:]))(new_rest)
    same = kl(new_first, new_rest, new_first, new_rest)
    return out, grads, own, same


@pytest.mark.parametrize("dense_depth", [1, 2])
def test_restricted_kl_matches_reference_with_closed_form_gradient(dense_depth):
    """dense_depth 1: CSR levels 1 and 2; dense_depth 2: the dense level-1 table, then CSR level 2."""
    rng = np.random.default_rng(dense_depth)
    codes = random_catalogue(rng, 25, SIZES)
    index = build_index(codes, dense_depth=dense_depth, token_offsets=OFFSETS)
    assert index.dense_depth == dense_depth
    trie = build_dict_trie(codes, np.arange(len(codes)))
    new_first, ref_first = (2 * rng.standard_normal((2, BATCH, VOCAB))).astype(np.float32)
    new_rest, ref_rest = (2 * rng.standard_normal((2, BATCH, ROLLOUTS, 2, VOCAB))).astype(np.float32)
    sids = codes[rng.integers(0, len(codes), (BATCH, ROLLOUTS))]
    sids[0, 4] = -1  # an empty slot
    single = [i for i, c in enumerate(codes) if len(trie[c[0]][c[1]]) == 1]
    sids[1, 2] = codes[single[0]]  # its depth-2 prefix has one child

    got, grads, own, same = jax.tree.map(np.asarray, kl_and_grads(
        index.to_device(), *map(jnp.asarray, (new_first, new_rest, ref_first, ref_rest, sids))))
    for b in range(BATCH):
        for g in range(ROLLOUTS):
            if (b, g) == (0, 4):
                continue
            want = reference_restricted_kl(
                trie, lambda p, b=b, g=g: new_first[b] if not p else new_rest[b, g, len(p) - 1],
                lambda p, b=b, g=g: ref_first[b] if not p else ref_rest[b, g, len(p) - 1],
                sids[b, g].tolist(), token_offsets=OFFSETS)
            np.testing.assert_allclose(got[b, g], want, rtol=1e-5, atol=1e-6)
            # The gradient in closed form: p_c (log p_c - log q_c - KL) on the prefix's children, 0 elsewhere.
            for level in (1, 2):
                node = trie
                for code in sids[b, g, :level]:
                    node = node[int(code)]
                children = np.asarray(sorted(node)) + OFFSETS[level]
                p = log_softmax(new_rest[b, g, level - 1, children])
                q = log_softmax(ref_rest[b, g, level - 1, children])
                want_grad = np.zeros(VOCAB)
                want_grad[children] = np.exp(p) * (p - q - np.sum(np.exp(p) * (p - q)))
                np.testing.assert_allclose(own[b, g, level - 1], want_grad, atol=2e-6)
    assert got.shape == sids.shape and got.dtype == np.float32
    assert np.all(got >= -1e-6) and np.any(got > 0.1)
    np.testing.assert_array_equal(got[0, 4], 0.0)
    assert got[1, 2, 2] == 0.0 and np.all(own[1, 2, 1] == 0.0)  # one child: KL 0, gradient 0 (not NaN)
    np.testing.assert_allclose(got[:, :, 0], got[:, :1, 0].repeat(ROLLOUTS, 1) * (sids[..., 0] >= 0))
    np.testing.assert_array_equal(same, 0.0)
    for grad in grads:
        assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    np.testing.assert_array_equal(own[0, 4], 0.0)  # an empty slot gets no gradient
