"""Decoding contract of both recommenders (tiny preset, CPU).

The constrained beam search relies on: incremental decode_step == teacher-forced
score_targets; reordering the beam cache between steps == decoding the
reordered prefixes; causality; left-padding invariance; jit-ability.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genrec.models import BOS_ID, PAD_ID, ModelConfig, build_model

ARCHS = ["encoder_decoder", "decoder_only"]
VOCAB_SIZE = 2 + 3 * 8  # 3 levels of 8 codes
NUM_LEVELS = 3
# Shared shapes keep jit compilations to a few per model.
BATCH, HIST_LEN, BEAMS = 2, 12, 4
ATOL = 1e-5


def _config(arch, **overrides):
    return ModelConfig.tiny(VOCAB_SIZE, NUM_LEVELS, arch=arch, **overrides)


class JittedModel:
    """The model's public methods, each behind jax.jit via nnx.split / nnx.merge.

    Eager NNX runs op by op; jitting keeps the suite fast and tests what the
    beam search and the train step will actually run.
    """

    def __init__(self, model):
        graphdef, self._state = nnx.split(model)
        def merge(state):
            return nnx.merge(graphdef, state)

        self._encode = jax.jit(lambda state, *a: merge(state).encode(*a))
        self._score = jax.jit(lambda state, *a: merge(state).score_targets(*a))
        self._init_cache = jax.jit(
            lambda state, shared, num_beams: merge(state).init_beam_cache(shared, num_beams),
            static_argnums=2)
        self._decode_step = jax.jit(
            lambda state, shared, cache, last, step: merge(state).decode_step(
                shared, cache, last, step),
            static_argnums=4)

    def encode(self, history_tokens, history_mask):
        return self._encode(self._state, history_tokens, history_mask)

    def score_targets(self, shared, target_tokens):
        return self._score(self._state, shared, target_tokens)

    def __call__(self, history_tokens, history_mask, target_tokens):
        shared = self.encode(history_tokens, history_mask)
        return self.score_targets(shared, target_tokens)

    def init_beam_cache(self, shared, num_beams):
        return self._init_cache(self._state, shared, num_beams)

    def decode_step(self, shared, cache, last_tokens, step):
        return self._decode_step(self._state, shared, cache, last_tokens, step)


@pytest.fixture(scope="module", params=ARCHS)
def raw_model(request):
    """A float32 tiny model of each architecture (seed 0)."""
    return build_model(_config(request.param), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def model(raw_model):
    return JittedModel(raw_model)


def _level_tokens(rng, shape):
    """Random valid SID token ids [..., NUM_LEVELS]: level l draws from its own block."""
    codes = rng.integers(0, 8, size=shape + (NUM_LEVELS,))
    return (2 + 8 * np.arange(NUM_LEVELS) + codes).astype(np.int32)


def _history(rng, lengths, hist_len):
    """Left-padded history tokens [batch, hist_len] and mask with the given real lengths."""
    tokens = np.full((len(lengths), hist_len), PAD_ID, np.int32)
    mask = np.zeros((len(lengths), hist_len), bool)
    for row, length in enumerate(lengths):
        items = _level_tokens(rng, (length // NUM_LEVELS,)).reshape(-1)
        tokens[row, hist_len - length:] = items
        mask[row, hist_len - length:] = True
    return tokens, mask


def _decode_all(model, shared, sequences, parents_after_step=None):
    """Runs decode_step over every level; returns logits [batch, beams, L, vocab].

    sequences: int32[batch, beams, L], the tokens fed after each step.
    parents_after_step: optional {step: int[batch, beams]}; after that step the
    cache and the sequences are reordered by parent, as beam search does.
    """
    parents_after_step = parents_after_step or {}
    batch, beams, _ = sequences.shape
    cache = model.init_beam_cache(shared, beams)
    last_tokens = jnp.full((batch, beams), BOS_ID, jnp.int32)
    sequences = jnp.asarray(sequences)
    step_logits = []
    for step in range(NUM_LEVELS):
        logits, cache = model.decode_step(shared, cache, last_tokens, step)
        step_logits.append(logits)
        if step in parents_after_step:
            parents = jnp.asarray(parents_after_step[step])
            cache = jax.tree.map(
                lambda leaf: jnp.take_along_axis(
                    leaf, parents.reshape(parents.shape + (1,) * (leaf.ndim - 2)), axis=1
                ),
                cache,
            )
            sequences = jnp.take_along_axis(sequences, parents[:, :, None], axis=1)
        last_tokens = sequences[:, :, step]
    return jnp.stack(step_logits, axis=2)


@nnx.jit
def _decode_and_score_in_one_jit(model, history_tokens, history_mask, targets):
    """Encode once, decode every level, and teacher-force the same targets.

    The shape beam search takes: one jit boundary around encode and every
    decode step, the steps unrolled at trace time.
    Returns (decoded, scored) logits, each [batch, beams, L, vocab].
    """
    batch, beams, _ = targets.shape
    shared = model.encode(history_tokens, history_mask)
    cache = model.init_beam_cache(shared, beams)
    last_tokens = jnp.full((batch, beams), BOS_ID, jnp.int32)
    step_logits = []
    for step in range(NUM_LEVELS):
        logits, cache = model.decode_step(shared, cache, last_tokens, step)
        step_logits.append(logits)
        last_tokens = targets[:, :, step]
    return jnp.stack(step_logits, axis=2), model.score_targets(shared, targets)


def _inputs(seed):
    rng = np.random.default_rng(seed)
    history_tokens, history_mask = _history(rng, lengths=[9, 3], hist_len=HIST_LEN)
    return history_tokens, history_mask, jnp.asarray(_level_tokens(rng, (BATCH, BEAMS)))


def test_incremental_decode_matches_teacher_forcing(raw_model):
    history_tokens, history_mask, targets = _inputs(0)  # different tokens per beam
    decoded, scored = _decode_and_score_in_one_jit(raw_model, history_tokens, history_mask,
                                                   targets)
    assert decoded.dtype == jnp.float32
    np.testing.assert_allclose(decoded, scored, atol=ATOL)
    # Different beams really differ after step 0, so the check is not vacuous.
    assert float(jnp.abs(scored[:, 0, 1:] - scored[:, 1, 1:]).max()) > 1e-3


@nnx.jit
def _score_both_ways(model, history_tokens, history_mask, targets):
    shared = model.encode(history_tokens, history_mask)
    first, rest = model.score_candidates(shared, targets)
    return first, rest, model.score_targets(shared, targets)


def test_score_candidates_shares_the_first_position_and_matches_score_targets(raw_model):
    history_tokens, history_mask, targets = _inputs(4)
    first, rest, scored = _score_both_ways(raw_model, history_tokens, history_mask, targets)
    assert first.shape == (BATCH, VOCAB_SIZE)
    assert rest.shape == (BATCH, BEAMS, NUM_LEVELS - 1, VOCAB_SIZE)
    for beam in range(BEAMS):
        np.testing.assert_allclose(first, scored[:, beam, 0], atol=ATOL)
    np.testing.assert_allclose(rest, scored[:, :, 1:], atol=ATOL)
    assert float(jnp.abs(rest[:, 0] - rest[:, 1]).max()) > 1e-3


def test_reordering_beam_cache_matches_decoding_reordered_prefixes(model):
    rng = np.random.default_rng(2)
    history_tokens, history_mask = _history(rng, lengths=[12, 6], hist_len=HIST_LEN)
    sequences = _level_tokens(rng, (BATCH, BEAMS))
    # Beam search keeps some parents twice and drops others.
    parents = {0: np.array([[1, 1, 0, 3], [2, 0, 0, 1]]),
               1: np.array([[3, 0, 2, 2], [1, 3, 0, 2]])}
    shared = model.encode(history_tokens, history_mask)
    reordered_logits = _decode_all(model, shared, sequences, parents)

    # After each reorder, beam j continues the whole prefix of its parent.
    after_step0 = np.take_along_axis(sequences, parents[0][:, :, None], axis=1)
    after_step1 = np.take_along_axis(after_step0, parents[1][:, :, None], axis=1)
    np.testing.assert_allclose(reordered_logits[:, :, 1],
                               model.score_targets(shared, after_step0)[:, :, 1], atol=ATOL)
    np.testing.assert_allclose(reordered_logits[:, :, 2],
                               model.score_targets(shared, after_step1)[:, :, 2], atol=ATOL)
    # Without the reorder the last level would differ: the check has teeth.
    unordered = model.score_targets(shared, sequences)[:, :, 2]
    assert float(jnp.abs(unordered - reordered_logits[:, :, 2]).max()) > 1e-3


def test_changing_a_future_target_token_leaves_earlier_logits_unchanged(model):
    rng = np.random.default_rng(3)
    history_tokens, history_mask = _history(rng, lengths=[9, 6], hist_len=HIST_LEN)
    targets = _level_tokens(rng, (BATCH, BEAMS))
    changed = targets.copy()
    level1_codes = changed[:, :, 1] - (2 + 8)
    changed[:, :, 1] = 2 + 8 + (level1_codes + 3) % 8  # another level-1 code
    shared = model.encode(history_tokens, history_mask)
    before = model.score_targets(shared, targets)
    after = model.score_targets(shared, changed)
    # y_2 is the input at position 2: positions 0 and 1 must not see it.
    np.testing.assert_allclose(after[:, :, :2], before[:, :, :2], atol=ATOL)
    assert float(jnp.abs(after[:, :, 2] - before[:, :, 2]).max()) > 1e-3


def test_extra_left_padding_changes_nothing(model):
    rng = np.random.default_rng(4)
    history_tokens, history_mask = _history(rng, lengths=[9, 6], hist_len=HIST_LEN)
    extra = 6
    padded_tokens = np.concatenate([np.full((BATCH, extra), PAD_ID, np.int32), history_tokens], 1)
    padded_mask = np.concatenate([np.zeros((BATCH, extra), bool), history_mask], 1)
    padded_tokens[:, :extra] = 5  # garbage under the mask must not leak either
    targets = _level_tokens(rng, (BATCH, BEAMS))

    unpadded = model(history_tokens, history_mask, targets)
    padded = model(padded_tokens, padded_mask, targets)
    np.testing.assert_allclose(padded, unpadded, atol=ATOL)


def test_history_changes_the_prediction(model):
    # Guards the padding test against a model that ignores its history.
    rng = np.random.default_rng(5)
    history_tokens, history_mask = _history(rng, lengths=[9, 9], hist_len=HIST_LEN)
    same_targets = np.repeat(_level_tokens(rng, (1, BEAMS)), BATCH, axis=0)
    logits = model(history_tokens, history_mask, same_targets)
    assert float(jnp.abs(logits[0] - logits[1]).max()) > 1e-3


def test_empty_history_gives_finite_logits(model):
    rng = np.random.default_rng(6)
    history_tokens, history_mask = _history(rng, lengths=[0, 6], hist_len=HIST_LEN)
    logits = model(history_tokens, history_mask, _level_tokens(rng, (BATCH, BEAMS)))
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_bfloat16_compute_stays_close_to_float32(raw_model):
    model_bf16 = build_model(dataclasses.replace(raw_model.config, dtype=jnp.bfloat16),
                             rngs=nnx.Rngs(0))
    # Same seed and float32 storage: identical parameters, only compute differs.
    for param in jax.tree.leaves(nnx.state(model_bf16, nnx.Param)):
        assert param.dtype == jnp.float32
    inputs = _inputs(0)

    _, scored_fp32 = _decode_and_score_in_one_jit(raw_model, *inputs)  # compiled already
    decoded_bf16, scored_bf16 = _decode_and_score_in_one_jit(model_bf16, *inputs)

    assert decoded_bf16.dtype == jnp.float32
    # bf16: the cached path and the teacher-forced path round differently.
    np.testing.assert_allclose(decoded_bf16, scored_bf16, atol=0.1)
    np.testing.assert_allclose(decoded_bf16, scored_fp32, atol=0.1)
    probs_bf16 = jax.nn.softmax(decoded_bf16)
    probs_fp32 = jax.nn.softmax(scored_fp32)
    assert float(jnp.abs(probs_bf16 - probs_fp32).max()) < 0.02


@pytest.mark.parametrize("arch", ARCHS)
def test_dropout_only_in_training_and_every_param_gets_gradient(arch):
    model = build_model(_config(arch, dropout_rate=0.3), rngs=nnx.Rngs(params=0, dropout=1))
    history_tokens, history_mask, targets = _inputs(8)

    @nnx.jit
    def train_and_eval(model):
        def loss_fn(model):
            logits = model(history_tokens, history_mask, targets, deterministic=False)
            log_probs = jax.nn.log_softmax(logits)
            loss = -jnp.mean(jnp.take_along_axis(log_probs, targets[..., None], -1))
            return loss, logits
        grads, train_logits = nnx.grad(loss_fn, has_aux=True)(model)
        eval_logits = model(history_tokens, history_mask, targets, deterministic=True)
        grad_max = jax.tree.map(lambda grad: jnp.abs(grad).max(), grads)
        return train_logits, eval_logits, grad_max

    train_first, eval_first, grad_max = train_and_eval(model)
    train_second, eval_second, _ = train_and_eval(model)
    np.testing.assert_allclose(eval_first, eval_second, atol=0)
    assert float(jnp.abs(train_first - eval_first).max()) > 1e-3
    assert float(jnp.abs(train_first - train_second).max()) > 1e-3  # the rng advances
    # Every parameter takes part in the training forward pass.
    for path, value in jax.tree_util.tree_leaves_with_path(grad_max):
        assert float(value) > 0, path


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_qkv_projections_change_neither_parameters_nor_results(arch):
    # Fusing is a compute layout only: the same seed gives the same parameter
    # tree, and the incremental decode, the teacher-forced logits and every
    # gradient agree with the separate projections.
    models = [build_model(_config(arch, fuse_qkv_projections=fuse), rngs=nnx.Rngs(0)) for fuse in (False, True)]
    states = [nnx.state(m, nnx.Param) for m in models]
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])
    for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
        np.testing.assert_array_equal(a, b)
    inputs = _inputs(3)
    (decoded, scored), (decoded_fused, scored_fused) = (_decode_and_score_in_one_jit(m, *inputs) for m in models)
    np.testing.assert_allclose(decoded_fused, decoded, atol=ATOL)
    np.testing.assert_allclose(scored_fused, scored, atol=ATOL)

    @nnx.jit
    def grads(model):
        def loss_fn(model):
            log_probs = jax.nn.log_softmax(model(*inputs, deterministic=True))
            return -jnp.mean(jnp.take_along_axis(log_probs, inputs[2][..., None], -1))
        return nnx.grad(loss_fn)(model)

    for a, b in zip(jax.tree.leaves(grads(models[0])), jax.tree.leaves(grads(models[1]))):
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-5)
