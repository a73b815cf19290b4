"""The Hugging Face T5 options of ModelConfig (attention_dropout, ffn_dropout,
attention_logit_scale, init; docs/models.md): at their defaults the model is
today's to the bit, each option does what HF T5 does (against NumPy / the
initializer's formula), dropout acts only while training, and the KV-cache
decode still equals the teacher-forced pass with every option on."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genrec.models import BOS_ID, ModelConfig, build_model, layers

VOCAB_SIZE, NUM_LEVELS = 26, 3  # 3 levels of 8 codes
HF_OPTIONS = dict(attention_dropout=0.1, ffn_dropout=0.1, attention_logit_scale="unscaled", init="hf_t5")

# One request pair: [batch 2, 9 history tokens] (row 1 left-padded by 3), [batch 2, 2 candidates, 3 levels].
HISTORY = np.array([[8, 15, 22, 4, 12, 18, 2, 10, 19], [0, 0, 0, 6, 14, 25, 7, 15, 22]], np.int32)
HISTORY_MASK = HISTORY != 0
TARGETS = np.array([[[6, 17, 20], [8, 15, 18]], [[5, 16, 22], [2, 16, 23]]], np.int32)

# Logits [0, 0, :, :4] of ModelConfig.tiny(26, 3, dropout_rate=0.1) built from
# nnx.Rngs(params=0, dropout=1), written by the model before these options existed
# (commit b5d41ab): eval first, then the first training call (its dropout masks).
REFERENCE_EVAL = [[-0.705571, 4.251659, -1.347999, 2.339940],
                  [-0.525017, 0.832018, 0.421087, 0.477628],
                  [-0.929220, -1.884856, 2.480691, -0.527312]]
REFERENCE_TRAIN = [[-0.345153, 3.483967, -0.808541, 1.933248],
                   [-0.883342, 0.665389, 2.072578, 1.318070],
                   [0.178952, -1.902012, 2.062430, -0.519417]]


def _config(**overrides):
    return ModelConfig.tiny(VOCAB_SIZE, NUM_LEVELS, **overrides)


def _model(**overrides):
    return build_model(_config(**overrides), rngs=nnx.Rngs(params=0, dropout=1))


@nnx.jit
def _eval_and_train(model):
    """Logits [batch, candidates, L, vocab] in eval mode, then in training mode (dropout on)."""
    return (model(HISTORY, HISTORY_MASK, TARGETS, deterministic=True),
            model(HISTORY, HISTORY_MASK, TARGETS, deterministic=False))


def test_defaults_give_the_model_of_before_to_the_bit():
    defaults = dict(attention_dropout=0.0, ffn_dropout=0.0, attention_logit_scale="inv_sqrt_d", init="default")
    model = _model(dropout_rate=0.1, **defaults)
    assert model.config == _config(dropout_rate=0.1)
    # No new variables: 10 RNG leaves (5 dropout streams: key + count), 61 state leaves in all.
    assert len(jax.tree.leaves(nnx.state(model, nnx.RngState))) == 10
    assert len(jax.tree.leaves(nnx.state(model))) == 61
    eval_logits, train_logits = _eval_and_train(model)
    np.testing.assert_allclose(eval_logits[0, 0, :, :4], REFERENCE_EVAL, atol=2e-5)
    np.testing.assert_allclose(train_logits[0, 0, :, :4], REFERENCE_TRAIN, atol=2e-5)


def _numpy_attention(queries, keys, values, allowed, scale):
    """queries [q, d], keys/values [s, d], allowed bool[q, s] -> weights [q, s], outputs [q, d]."""
    logits = np.where(allowed, scale * queries.astype(np.float64) @ keys.T, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return weights, weights @ values


def test_unscaled_attention_and_probability_dropout_match_numpy():
    # HF T5 attention: softmax(q k^T + bias) unscaled; dropout on those probabilities, before the values.
    rng = np.random.default_rng(0)
    batch, beams, q_len, heads, head_dim, hist_len = 2, 2, 3, 2, 8, 5
    queries = rng.normal(size=(batch, beams, q_len, heads, head_dim)).astype(np.float32)
    keys, values = rng.normal(size=(2, batch, hist_len, heads, head_dim)).astype(np.float32)
    history_mask = np.array([[False, True, True, True, True], [True] * 5])
    drop = rng.random((batch, beams, heads, q_len, hist_len)) < 0.3  # a fixed dropout mask
    inputs = dict(history_keys=keys, history_values=values, history_allowed=history_mask[:, None, None, None, :])

    unscaled = layers.attend(jnp.asarray(queries), scale_logits=False, **inputs)
    dropped = layers.attend(jnp.asarray(queries), scale_logits=False,
                            probability_dropout=lambda weights: jnp.where(drop, 0.0, weights / 0.7), **inputs)
    scaled = layers.attend(jnp.asarray(queries), **inputs)
    for b, k, h in np.ndindex(batch, beams, heads):
        allowed = np.broadcast_to(history_mask[b], (q_len, hist_len))
        weights, want = _numpy_attention(queries[b, k, :, h], keys[b, :, h], values[b, :, h], allowed, 1.0)
        np.testing.assert_allclose(unscaled[b, k, :, h], want, atol=1e-5)
        want_dropped = np.where(drop[b, k, h], 0.0, weights / 0.7) @ values[b, :, h]
        np.testing.assert_allclose(dropped[b, k, :, h], want_dropped, atol=1e-5)
        _, want_scaled = _numpy_attention(queries[b, k, :, h], keys[b, :, h], values[b, :, h], allowed,
                                          head_dim ** -0.5)
        np.testing.assert_allclose(scaled[b, k, :, h], want_scaled, atol=1e-5)
    assert float(jnp.abs(unscaled - scaled).max()) > 1e-2  # the scale matters on these inputs


def test_hf_t5_init_has_hf_stds_untruncated():
    d_model, heads, head_dim, d_ff = 256, 8, 32, 512
    config = ModelConfig.tiny(VOCAB_SIZE, NUM_LEVELS, d_model=d_model, num_heads=heads, head_dim=head_dim,
                              d_ff=d_ff, ffn_activation="relu", relative_attention_num_buckets=512,
                              tie_embeddings=False, init="hf_t5")
    rngs = nnx.Rngs(0)
    attention = layers.AttentionProjections(config, rngs=rngs)
    ffn = layers.FeedForward(config, rngs=rngs)
    bias = layers.RelativePositionBias(config, bidirectional=True, rngs=rngs)
    embedding = layers.TokenEmbedding(config, rngs=rngs)
    want = {  # T5PreTrainedModel._init_weights, initializer_factor 1
        "q": (attention.query.kernel, (d_model * head_dim) ** -0.5),
        "k": (attention.key.kernel, d_model ** -0.5),
        "v": (attention.value.kernel, d_model ** -0.5),
        "o": (attention.output.kernel, (heads * head_dim) ** -0.5),
        "wi": (ffn.up.kernel, d_model ** -0.5),
        "wo": (ffn.down.kernel, d_ff ** -0.5),
        "relative_attention_bias": (bias.table, d_model ** -0.5),
        "lm_head": (embedding.output_projection.kernel, 1.0),
        "shared": (embedding.table, 1.0),
    }
    for name, (param, stddev) in want.items():
        values = np.asarray(param[...])
        assert values.size >= 1024 * 4, name
        assert abs(values.std() / stddev - 1) < 0.05, (name, values.std(), stddev)
        assert abs(values.mean()) < 0.1 * stddev, name
        # A normal, not Flax's LeCun normal truncated at about 2.3 std.
        assert np.abs(values).max() > 3 * stddev, name
    # The default keeps q at LeCun's d_model ** -0.5 (the logit scale does the rest).
    default_query = layers.AttentionProjections(dataclasses.replace(config, init="default"), rngs=nnx.Rngs(0))
    assert abs(np.asarray(default_query.query.kernel[...]).std() * d_model ** 0.5 - 1) < 0.05


def test_ffn_dropout_acts_on_the_hidden_activation_only_while_training():
    config = _config(ffn_activation="relu", d_ff=16, ffn_dropout=0.25)  # d_ff < d_model: the mask is solvable
    ffn = layers.FeedForward(config, rngs=nnx.Rngs(params=0, dropout=1))
    hidden = jnp.tile(jnp.asarray(np.random.default_rng(1).normal(size=(1, 32)), jnp.float32), (4096, 1))
    plain = ffn(hidden[:1])
    np.testing.assert_array_equal(ffn(hidden[:1], deterministic=True), plain)
    dropped = ffn(hidden, deterministic=False)  # one mask per row
    activated = np.asarray(jax.nn.relu(ffn.up(hidden[:1])))[0]
    # Each row is down(activated * mask / 0.75): solve for the mask and check it is one.
    kept = np.linalg.lstsq(np.asarray(ffn.down.kernel[...]).T, np.asarray(dropped[:64]).T, rcond=None)[0].T
    live = activated > 1e-3
    ratio = kept[:, live] / (activated[live] / 0.75)
    assert np.all((np.abs(ratio) < 1e-3) | (np.abs(ratio - 1) < 1e-3))
    assert 0.1 < np.mean(np.abs(ratio) < 1e-3) < 0.4  # about a quarter dropped
    # Inverted dropout keeps the expectation.
    np.testing.assert_allclose(np.asarray(dropped).mean(0), plain[0], atol=0.05 * float(jnp.abs(plain).max()))


@nnx.jit
def _decode_and_score(model):
    """Every level through decode_step (the KV cache), and the teacher-forced logits; both deterministic."""
    shared = model.encode(HISTORY, HISTORY_MASK)
    cache = model.init_beam_cache(shared, TARGETS.shape[1])
    last_tokens = jnp.full(TARGETS.shape[:2], BOS_ID, jnp.int32)
    step_logits = []
    for step in range(NUM_LEVELS):
        logits, cache = model.decode_step(shared, cache, last_tokens, step)
        step_logits.append(logits)
        last_tokens = TARGETS[:, :, step]
    return jnp.stack(step_logits, axis=2), model.score_targets(shared, TARGETS)


def test_attention_dropout_drops_probabilities_only_while_training():
    config = _config(attention_dropout=0.25)
    attention = layers.AttentionProjections(config, rngs=nnx.Rngs(params=0, dropout=1))
    rng = np.random.default_rng(2)
    beams = 4096  # identical queries: one dropout mask per beam
    queries = jnp.tile(jnp.asarray(rng.normal(size=(1, 1, 2, 4, 8)), jnp.float32), (1, beams, 1, 1, 1))
    keys, values = jnp.asarray(rng.normal(size=(2, 1, 6, 4, 8)), jnp.float32)
    inputs = dict(history_keys=keys, history_values=values)
    plain = layers.attend(queries[:, :1], **inputs)
    np.testing.assert_array_equal(attention.attend(queries[:, :1], deterministic=True, **inputs), plain)
    dropped = attention.attend(queries, deterministic=False, **inputs)
    assert float(jnp.abs(dropped[:, 0] - dropped[:, 1]).max()) > 1e-3
    # Inverted dropout on the probabilities keeps the expected output.
    np.testing.assert_allclose(dropped.mean(axis=1), plain[:, 0], atol=0.03)


def test_hf_dropouts_act_while_training_and_never_in_eval_or_decoding():
    # Every HF option on, dropout_rate 0 (only the new dropouts act), one layer a stack (a smaller compile).
    hf = _model(num_encoder_layers=1, num_decoder_layers=1, **HF_OPTIONS)
    eval_logits, train_first = _eval_and_train(hf)
    eval_again, train_second = _eval_and_train(hf)
    np.testing.assert_array_equal(eval_again, eval_logits)  # eval draws no mask, though the rng advanced
    assert float(jnp.abs(train_first - eval_logits).max()) > 1e-3
    assert float(jnp.abs(train_first - train_second).max()) > 1e-3  # the rng advances
    decoded, scored = _decode_and_score(hf)
    np.testing.assert_allclose(scored, eval_logits, atol=1e-6)
    np.testing.assert_allclose(decoded, scored, atol=1e-5)  # the KV-cache decode = teacher forcing
    assert float(jnp.abs(scored[:, 0, 1:] - scored[:, 1, 1:]).max()) > 1e-3  # beams differ: not vacuous


@pytest.mark.parametrize("overrides, message", [
    (dict(attention_dropout=1.0), r"ModelConfig.attention_dropout=1.0: must be in \[0, 1\)"),
    (dict(ffn_dropout=-0.1), r"ModelConfig.ffn_dropout=-0.1: must be in \[0, 1\)"),
    (dict(attention_logit_scale="sqrt"), "ModelConfig.attention_logit_scale='sqrt': use one of"),
    (dict(init="xavier"), "ModelConfig.init='xavier': use one of"),
    (dict(arch="decoder_only", num_encoder_layers=0, attention_dropout=0.1),
     "ModelConfig.attention_dropout=0.1: a Hugging Face T5 option, for arch='encoder_decoder' only"),
    (dict(arch="decoder_only", num_encoder_layers=0, init="hf_t5"), "ModelConfig.init='hf_t5'"),
])
def test_invalid_hf_options_fail_in_one_line_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message) as raised:
        dataclasses.replace(_config(), **overrides)
    assert "\n" not in str(raised.value)


def test_hf_init_keeps_the_parameter_tree():
    # Only the distributions change: the same parameters, shapes and dtypes (checkpoints load either way).
    default, hf = (nnx.state(_model(init=init), nnx.Param) for init in ("default", "hf_t5"))
    assert jax.tree.structure(default) == jax.tree.structure(hf)
    assert [(x.shape, x.dtype) for x in jax.tree.leaves(default)] == [(x.shape, x.dtype) for x in jax.tree.leaves(hf)]
