"""ModelConfig presets, the hand parameter count, and input validation."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genrec.models import (
    DecoderOnlyRecommender,
    EncoderDecoderRecommender,
    ModelConfig,
    build_model,
    count_params,
    expected_num_params,
)

# 4 SID levels x 256 codes + PAD + BOS, the APAO setup.
PAPER_VOCAB_SIZE, PAPER_NUM_LEVELS = 2 + 4 * 256, 4


def _abstract_param_count(config):
    """Parameters of the built module, without allocating them."""
    return count_params(nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0))))


@pytest.mark.parametrize(
    "config, documented_count",
    [
        (ModelConfig.t5_small_rec(PAPER_VOCAB_SIZE, PAPER_NUM_LEVELS), 4_590_976),
        (ModelConfig.t5_small_rec(PAPER_VOCAB_SIZE, PAPER_NUM_LEVELS, ffn_activation="geglu"),
         5_639_552),
        (ModelConfig.llama_small_rec(PAPER_VOCAB_SIZE, PAPER_NUM_LEVELS), 3_803_520),
    ],
    ids=["t5_small_rec", "t5_small_rec_geglu", "llama_small_rec"],
)
def test_preset_param_counts_match_hand_computation(config, documented_count):
    assert _abstract_param_count(config) == expected_num_params(config) == documented_count


def test_t5_preset_count_by_hand():
    # Spelled out once so the formula itself is checked, not just its use.
    d, width, ff, vocab, heads, buckets = 128, 6 * 64, 1024, PAPER_VOCAB_SIZE, 6, 32
    attention, relu_ffn = 4 * d * width, 2 * d * ff
    encoder = 4 * (attention + relu_ffn + 2 * d) + d
    decoder = 4 * (2 * attention + relu_ffn + 3 * d) + d
    by_hand = vocab * d + 2 * buckets * heads + encoder + decoder
    assert by_hand == expected_num_params(ModelConfig.t5_small_rec(vocab, PAPER_NUM_LEVELS))


@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder_only"])
@pytest.mark.parametrize("tie_embeddings", [True, False])
@pytest.mark.parametrize("ffn_activation", ["geglu", "swiglu", "relu"])
def test_tiny_param_counts_match_hand_computation(arch, tie_embeddings, ffn_activation):
    config = ModelConfig.tiny(26, 3, arch=arch, tie_embeddings=tie_embeddings,
                              ffn_activation=ffn_activation)
    assert _abstract_param_count(config) == expected_num_params(config)


def test_build_model_dispatches_on_arch():
    encoder_decoder = build_model(ModelConfig.tiny(26, 3), rngs=nnx.Rngs(0))
    decoder_only = build_model(ModelConfig.tiny(26, 3, arch="decoder_only"), rngs=nnx.Rngs(0))
    assert isinstance(encoder_decoder, EncoderDecoderRecommender)
    assert isinstance(decoder_only, DecoderOnlyRecommender)
    with pytest.raises(ValueError, match="arch"):
        DecoderOnlyRecommender(ModelConfig.tiny(26, 3), rngs=nnx.Rngs(0))


def test_config_is_hashable_and_canonicalizes_dtypes():
    by_string = ModelConfig.tiny(26, 3, dtype="bfloat16")
    by_jnp = ModelConfig.tiny(26, 3, dtype=jnp.bfloat16)
    assert by_string == by_jnp and hash(by_string) == hash(by_jnp)
    assert by_string.dtype == jnp.dtype(jnp.bfloat16)
    assert by_string.param_dtype == jnp.dtype(jnp.float32)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(arch="rnn"), "arch"),
        (dict(vocab_size=2), "vocab_size"),
        (dict(num_encoder_layers=0), "num_encoder_layers"),
        (dict(ffn_activation="tanh"), "ffn_activation"),
        (dict(dropout_rate=1.0), "dropout_rate"),
    ],
)
def test_invalid_config_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ModelConfig.tiny(26, 3), **overrides)


def test_decoder_only_config_rules():
    with pytest.raises(ValueError, match="num_encoder_layers"):
        ModelConfig.tiny(26, 3, arch="decoder_only", num_encoder_layers=2)
    with pytest.raises(ValueError, match="even head_dim"):
        ModelConfig.tiny(26, 3, arch="decoder_only", head_dim=7)


@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder_only"])
def test_bad_inputs_fail_at_trace_time_with_the_fix(arch):
    model = build_model(ModelConfig.tiny(26, 3, arch=arch, max_history_tokens=6),
                        rngs=nnx.Rngs(0))
    tokens, mask = np.full((1, 6), 2, np.int32), np.ones((1, 6), bool)
    with pytest.raises(ValueError, match="max_history_tokens"):
        model.encode(np.full((1, 9), 2, np.int32), np.ones((1, 9), bool))
    shared = model.encode(tokens, mask)
    with pytest.raises(ValueError, match="num_levels=3"):
        model.score_targets(shared, np.full((1, 2, 4), 2, np.int32))
    cache = model.init_beam_cache(shared, 2)
    with pytest.raises(ValueError, match="static Python int"):
        model.decode_step(shared, cache, np.full((1, 2), 1, np.int32), 3)
