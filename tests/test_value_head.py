"""The RL stage's model side (docs/rl.md, "Model"): decode_hidden, ValueHead,
prefix_values_and_logits and VED's node_fn, both architectures, tiny preset, jitted.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genrec.models import (
    BOS_ID,
    PAD_ID,
    ModelConfig,
    ValueHead,
    build_model,
    make_node_fn,
    prefix_values_and_logits,
)
from genrec.models.layers import shift_targets_right

ARCHS = ["encoder_decoder", "decoder_only"]
NUM_LEVELS, CODES = 3, 8
OFFSETS = tuple(2 + CODES * level for level in range(NUM_LEVELS))  # SIDVocabulary((8, 8, 8)).level_offsets
VOCAB_SIZE = 2 + NUM_LEVELS * CODES
BATCH, GROUP, HIST_LEN = 2, 4, 12
ATOL = 1e-5


def _config(arch):
    return ModelConfig.tiny(VOCAB_SIZE, NUM_LEVELS, arch=arch)


@nnx.jit
def _encode(model, history_tokens, history_mask):
    return model.encode(history_tokens, history_mask)


@nnx.jit
def _decode_hidden(model, shared, input_tokens):
    return model.decode_hidden(shared, input_tokens)


@nnx.jit
def _score_targets(model, shared, target_tokens):
    return model.score_targets(shared, target_tokens)


@nnx.jit
def _prefix(model, head, shared, sid_codes):
    return prefix_values_and_logits(model, head, shared, sid_codes, OFFSETS)


@nnx.jit
def _nodes(model, head, shared, prefix_codes, prefix_len):
    return make_node_fn(model, head, shared, OFFSETS)(prefix_codes, prefix_len)


def _codes(rng, shape):
    return rng.integers(0, CODES, size=shape + (NUM_LEVELS,)).astype(np.int32)


def _history(rng):
    """Left-padded history [BATCH, HIST_LEN] of SID tokens with 9 and 5 real tokens."""
    tokens = np.full((BATCH, HIST_LEN), PAD_ID, np.int32)
    mask = np.zeros((BATCH, HIST_LEN), bool)
    for row, length in enumerate((9, 5)):
        tokens[row, -length:] = rng.integers(2, VOCAB_SIZE, size=length)
        mask[row, -length:] = True
    return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.fixture(scope="module", params=ARCHS)
def setup(request):
    """(model, value head, history, shared) of one architecture."""
    model = build_model(_config(request.param), rngs=nnx.Rngs(0))
    head = ValueHead(model.config, rngs=nnx.Rngs(1))
    history = _history(np.random.default_rng(0))
    return model, head, history, _encode(model, *history)


def test_decode_hidden_equals_score_targets(setup):
    model, _, _, shared = setup
    target_tokens = jnp.asarray(_codes(np.random.default_rng(1), (BATCH, GROUP)) + np.asarray(OFFSETS))
    logits, hidden = _decode_hidden(model, shared, shift_targets_right(model.config, target_tokens))
    assert logits.shape == (BATCH, GROUP, NUM_LEVELS, VOCAB_SIZE) and logits.dtype == jnp.float32
    assert hidden.shape == (BATCH, GROUP, NUM_LEVELS, model.config.d_model)
    np.testing.assert_allclose(logits, _score_targets(model, shared, target_tokens), atol=ATOL, rtol=0)


def test_decode_hidden_is_causal_over_num_levels_plus_one_positions(setup):
    """P = L + 1 runs (T5 bias / RoPE past the last level); position p reads tokens < p+1 only."""
    model, _, _, shared = setup
    rng = np.random.default_rng(2)
    tokens = np.concatenate([np.full((BATCH, GROUP, 1), BOS_ID),
                             _codes(rng, (BATCH, GROUP)) + np.asarray(OFFSETS)], axis=-1).astype(np.int32)
    logits, hidden = _decode_hidden(model, shared, jnp.asarray(tokens))
    assert hidden.shape == (BATCH, GROUP, NUM_LEVELS + 1, model.config.d_model)
    assert np.isfinite(logits).all() and np.isfinite(hidden).all()
    # Appending the last token leaves the first L positions as they were.
    short_logits, short_hidden = _decode_hidden(model, shared, jnp.asarray(tokens[..., :-1]))
    np.testing.assert_allclose(short_logits, logits[:, :, :-1], atol=ATOL, rtol=0)
    np.testing.assert_allclose(short_hidden, hidden[:, :, :-1], atol=ATOL, rtol=0)
    for position in range(1, NUM_LEVELS + 1):
        changed = tokens.copy()
        changed[..., position] = (tokens[..., position] - 2 + 3) % (VOCAB_SIZE - 2) + 2  # another code token
        new_logits, new_hidden = _decode_hidden(model, shared, jnp.asarray(changed))
        np.testing.assert_allclose(new_hidden[:, :, :position], hidden[:, :, :position], atol=ATOL, rtol=0)
        np.testing.assert_allclose(new_logits[:, :, :position], logits[:, :, :position], atol=ATOL, rtol=0)
        assert np.abs(new_hidden[:, :, position] - hidden[:, :, position]).min(axis=-1).max() > 0
        assert np.abs(new_hidden[:, :, position] - hidden[:, :, position]).max() > 1e-3


@pytest.mark.parametrize("length", [0, NUM_LEVELS + 2])
def test_decode_hidden_rejects_lengths_outside_one_to_num_levels_plus_one(setup, length):
    model, _, _, shared = setup
    with pytest.raises(ValueError, match="num_levels \\+ 1"):
        model.decode_hidden(shared, jnp.full((BATCH, 1, length), BOS_ID, jnp.int32))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


@pytest.mark.parametrize("initial_value", [0.0, 0.4])
def test_value_head_matches_numpy_and_starts_near_initial_value(initial_value):
    config = _config("encoder_decoder")
    head = ValueHead(config, d_hidden=16, initial_value=initial_value, rngs=nnx.Rngs(3))
    hidden = np.random.default_rng(3).normal(size=(3, 5, config.d_model)).astype(np.float32) * 2.0
    values = head(jnp.asarray(hidden, jnp.bfloat16).astype(jnp.float32))
    assert values.shape == (3, 5) and values.dtype == jnp.float32

    as_np = lambda p: np.asarray(p[...], np.float64)  # noqa: E731
    x = hidden.astype(jnp.bfloat16).astype(np.float64)
    normed = x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + config.norm_epsilon) * as_np(head.norm.scale)
    features = _gelu_tanh(normed @ as_np(head.hidden_layer.kernel) + as_np(head.hidden_layer.bias))
    expected = (features @ as_np(head.output_layer.kernel) + as_np(head.output_layer.bias))[..., 0]
    np.testing.assert_allclose(values, expected, atol=1e-5, rtol=1e-5)
    # Small output init: values start near initial_value but do depend on the input.
    assert np.abs(np.asarray(values) - initial_value).max() < 0.05
    assert np.std(np.asarray(values)) > 0


def test_prefix_values_and_logits(setup):
    model, head, _, shared = setup
    codes = _codes(np.random.default_rng(4), (BATCH, GROUP))
    codes[1, 3] = -1  # an empty rollout slot
    logits, values = _prefix(model, head, shared, jnp.asarray(codes))
    assert logits.shape == (BATCH, GROUP, NUM_LEVELS, VOCAB_SIZE)
    assert values.shape == (BATCH, GROUP, NUM_LEVELS + 1) and values.dtype == jnp.float32
    assert np.isfinite(logits).all() and np.isfinite(values).all()
    # Logits of valid slots are score_targets' of the same SIDs as tokens.
    valid_tokens = jnp.asarray(np.where(codes >= 0, codes + np.asarray(OFFSETS), OFFSETS))
    expected = np.asarray(_score_targets(model, shared, valid_tokens))
    np.testing.assert_allclose(logits[0], expected[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits[1, :3], expected[1, :3], atol=ATOL, rtol=0)
    # Values are the head applied to decode_hidden's states over [BOS, y_1..y_L].
    tokens = np.where(codes >= 0, codes + np.asarray(OFFSETS), PAD_ID)
    inputs = np.concatenate([np.full((BATCH, GROUP, 1), BOS_ID), tokens], -1).astype(np.int32)
    _, hidden = _decode_hidden(model, shared, jnp.asarray(inputs))
    np.testing.assert_allclose(values, head(hidden), atol=ATOL, rtol=0)


def test_node_fn_equals_prefix_positions_for_every_length(setup):
    model, head, _, shared = setup
    rng = np.random.default_rng(5)
    codes = _codes(rng, (BATCH, GROUP))
    full_logits, full_values = _prefix(model, head, shared, jnp.asarray(codes))
    # Node (g, p): slot g's prefix of length p, nodes of every length mixed in one call.
    lengths = np.tile(np.arange(NUM_LEVELS + 1), GROUP)  # [N]
    slots = np.repeat(np.arange(GROUP), NUM_LEVELS + 1)
    prefix_codes = codes[:, slots].copy()  # [B, N, L]
    after = np.arange(NUM_LEVELS) >= lengths[:, None]
    prefix_len = jnp.asarray(np.broadcast_to(lengths, (BATCH, len(lengths))), jnp.int32)
    for padding in ("minus_one", "garbage"):
        fill = -1 if padding == "minus_one" else _codes(rng, (BATCH, len(lengths)))
        padded = np.where(after[None], fill, prefix_codes).astype(np.int32)
        node_logits, node_values = _nodes(model, head, shared, jnp.asarray(padded), prefix_len)
        assert node_logits.shape == (BATCH, len(lengths), VOCAB_SIZE) and node_values.shape == (BATCH, len(lengths))
        np.testing.assert_allclose(node_values, full_values[:, slots, lengths], atol=ATOL, rtol=0)
        inner = lengths < NUM_LEVELS  # logits at a complete SID predict nothing
        np.testing.assert_allclose(node_logits[:, inner], full_logits[:, slots[inner], lengths[inner]],
                                   atol=ATOL, rtol=0)


@functools.lru_cache(maxsize=None)
def _value_grads_fn():
    def total_value(model, head, history_tokens, history_mask, sid_codes):
        shared = model.encode(history_tokens, history_mask)
        return prefix_values_and_logits(model, head, shared, sid_codes, OFFSETS).values.sum()

    return nnx.jit(nnx.grad(total_value, argnums=(0, 1)))


@pytest.mark.parametrize("to_trunk", [True, False])
def test_value_grad_to_trunk(setup, to_trunk):
    model, _, history, _ = setup
    head = ValueHead(model.config, value_grad_to_trunk=to_trunk, rngs=nnx.Rngs(1))
    codes = jnp.asarray(_codes(np.random.default_rng(6), (BATCH, GROUP)))
    trunk_grads, head_grads = _value_grads_fn()(model, head, *history, codes)
    trunk_max = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(nnx.state(trunk_grads, nnx.Param)))
    head_leaves = jax.tree.leaves(nnx.state(head_grads, nnx.Param))
    assert all(float(jnp.abs(g).max()) > 0 for g in head_leaves)
    if to_trunk:
        assert trunk_max > 0
    else:
        assert trunk_max == 0.0
