"""Flax NNX generative-retrieval models over semantic-ID tokens.

Data flow: history SID tokens -> ``model.encode`` (once per request) ->
``model.decode_step`` per SID level inside the constrained beam search, or
``model.score_targets`` / ``model(...)`` for teacher-forced training;
``model.decode_hidden`` + :class:`ValueHead` for the RL stage (docs/rl.md).
See docs/models.md for the interface and the cache layout.
"""

from __future__ import annotations

import jax
from flax import nnx

from genrec.models.base import SIDRecommender
from genrec.models.config import (
    BOS_ID,
    NUM_SPECIAL_TOKENS,
    PAD_ID,
    ModelConfig,
    expected_num_params,
)
from genrec.models.decoder_only import DecoderOnlyRecommender
from genrec.models.encoder_decoder import EncoderDecoderRecommender
from genrec.models.layers import BeamCache, HistoryCache
from genrec.models.value_head import (
    PrefixLogitsValues,
    ValueHead,
    codes_to_input_tokens,
    make_cached_node_fn,
    make_node_fn,
    prefix_values_and_logits,
)

_MODEL_CLASSES = {
    "encoder_decoder": EncoderDecoderRecommender,
    "decoder_only": DecoderOnlyRecommender,
}

__all__ = [
    "BOS_ID",
    "PAD_ID",
    "NUM_SPECIAL_TOKENS",
    "BeamCache",
    "DecoderOnlyRecommender",
    "EncoderDecoderRecommender",
    "HistoryCache",
    "ModelConfig",
    "PrefixLogitsValues",
    "SIDRecommender",
    "ValueHead",
    "build_model",
    "codes_to_input_tokens",
    "count_params",
    "expected_num_params",
    "make_cached_node_fn",
    "make_node_fn",
    "prefix_values_and_logits",
]


def build_model(config: ModelConfig, *, rngs: nnx.Rngs) -> SIDRecommender:
    """The model class named by ``config.arch``, initialized from ``rngs``.

    Both classes subclass :class:`SIDRecommender` (encode / init_beam_cache /
    decode_step / score_targets / ``__call__`` with identical signatures), so
    callers need not know which one they hold.
    """
    return _MODEL_CLASSES[config.arch](config, rngs=rngs)


def count_params(model: nnx.Module) -> int:
    """Number of scalar parameters (nnx.Param leaves) in ``model``."""
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
