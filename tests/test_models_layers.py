"""Pure math of genrec/models/layers.py against plain NumPy references."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from genrec.models import layers


def _numpy_attention(queries, keys, values, allowed):
    """queries [q, d], keys/values [s, d], allowed bool[q, s] -> [q, d]."""
    logits = queries @ keys.T / math.sqrt(queries.shape[-1])
    logits = np.where(allowed, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return weights @ values


def test_attend_matches_numpy_over_history_union_targets():
    # One softmax over [history keys, the beam's own target keys]; history keys
    # are shared by beams. The reference concatenates them per beam explicitly.
    rng = np.random.default_rng(0)
    batch, beams, q_len, heads, head_dim, hist_len, t_len = 2, 3, 2, 2, 4, 5, 3
    queries = rng.normal(size=(batch, beams, q_len, heads, head_dim)).astype(np.float32)
    history_keys = rng.normal(size=(batch, hist_len, heads, head_dim)).astype(np.float32)
    history_values = rng.normal(size=(batch, hist_len, heads, head_dim)).astype(np.float32)
    target_keys = rng.normal(size=(batch, beams, t_len, heads, head_dim)).astype(np.float32)
    target_values = rng.normal(size=(batch, beams, t_len, heads, head_dim)).astype(np.float32)
    history_mask = np.array([[False, False, True, True, True], [True] * 5])
    target_allowed = layers.causal_allowed(1, q_len, t_len)  # queries at positions 1, 2

    got = layers.attend(
        jnp.asarray(queries),
        history_keys=history_keys,
        history_values=history_values,
        history_allowed=history_mask[:, None, None, None, :],
        target_keys=target_keys,
        target_values=target_values,
        target_allowed=target_allowed,
    )

    for b in range(batch):
        for k in range(beams):
            for h in range(heads):
                keys = np.concatenate([history_keys[b, :, h], target_keys[b, k, :, h]])
                values = np.concatenate([history_values[b, :, h], target_values[b, k, :, h]])
                allowed = np.concatenate(
                    [np.broadcast_to(history_mask[b], (q_len, hist_len)), target_allowed], axis=1
                )
                want = _numpy_attention(queries[b, k, :, h], keys, values, allowed)
                np.testing.assert_allclose(np.asarray(got[b, k, :, h]), want, atol=1e-5)


def test_causal_allowed_offsets_queries_by_start():
    np.testing.assert_array_equal(
        layers.causal_allowed(2, 2, 4),
        [[True, True, True, False], [True, True, True, True]],
    )


def test_rope_matches_complex_rotation_and_preserves_relative_dot_products():
    rng = np.random.default_rng(1)
    head_dim, base = 8, 10_000.0
    inputs = rng.normal(size=(3, 1, head_dim)).astype(np.float32)  # [seq, heads, head_dim]
    positions = np.array([0, 5, 17])
    got = np.asarray(layers.apply_rope(jnp.asarray(inputs), jnp.asarray(positions), base))

    half = head_dim // 2
    frequencies = base ** (-np.arange(half) / half)
    as_complex = inputs[..., :half] + 1j * inputs[..., half:]
    rotated = as_complex * np.exp(1j * positions[:, None, None] * frequencies)
    want = np.concatenate([rotated.real, rotated.imag], axis=-1)
    np.testing.assert_allclose(got, want, atol=1e-5)

    # The property RoPE exists for: q.k depends only on the position offset.
    query, key = inputs[0], inputs[1]
    def score(query_position, key_position):
        q = layers.apply_rope(jnp.asarray(query[None]), jnp.asarray([query_position]), base)
        k = layers.apply_rope(jnp.asarray(key[None]), jnp.asarray([key_position]), base)
        return float(jnp.sum(q * k))
    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)


def _numpy_bucket(relative_position, bidirectional, num_buckets, max_distance):
    bucket = 0
    distance = -relative_position
    if bidirectional:
        num_buckets //= 2
        if distance < 0:
            bucket += num_buckets
        distance = abs(distance)
    else:
        distance = max(distance, 0)
    max_exact = num_buckets // 2
    if distance < max_exact:
        return bucket + distance
    large = max_exact + int(
        math.log(distance / max_exact) / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    )
    return bucket + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bucket_matches_reference(bidirectional):
    relative = np.arange(-200, 201)
    got = np.asarray(layers.relative_position_bucket(
        relative, bidirectional=bidirectional, num_buckets=32, max_distance=128
    ))
    want = [_numpy_bucket(int(r), bidirectional, 32, 128) for r in relative]
    np.testing.assert_array_equal(got, want)
    assert got.min() >= 0 and got.max() < 32
    if not bidirectional:
        # Causal buckets cannot tell future keys apart (they are masked anyway).
        assert len(set(got[relative >= 0])) == 1
