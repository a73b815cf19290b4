"""The models inside the constrained beam search (constrained/beam_search.py).

With at least as many beams as catalogue items the search is exhaustive, so
its ranking and scores must equal brute-force teacher-forced scoring of every
item with ``score_targets``: this checks that decode_step, the beam-cache
reorder done by the search, and the shared history encoding fit together.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from constrained.beam_search import constrained_beam_search
from constrained.index import build_index
from genrec.models import BOS_ID, PAD_ID, ModelConfig, build_model

CODEBOOK_SIZES = (8, 8, 8)
TOKEN_OFFSETS = (2, 10, 18)  # genrec/vocab.py layout: 2 + sum(codebook_sizes[:l])
VOCAB_SIZE = 2 + sum(CODEBOOK_SIZES)
NUM_ITEMS = 24


@nnx.jit
def _search_and_brute_force(model, index, history_tokens, history_mask, catalogue_tokens):
    """Returns the exhaustive beam search result and every item's log-prob [batch, items]."""
    shared = model.encode(history_tokens, history_mask)
    beam_cache = model.init_beam_cache(shared, NUM_ITEMS)
    found = constrained_beam_search(
        index, model.decode_step, shared, beam_cache,
        num_beams=NUM_ITEMS, start_token=BOS_ID,
    )
    batch = history_tokens.shape[0]
    candidates = jnp.broadcast_to(catalogue_tokens, (batch,) + catalogue_tokens.shape)
    log_probs = jax.nn.log_softmax(model.score_targets(shared, candidates))
    item_log_probs = jnp.take_along_axis(log_probs, candidates[..., None], -1)[..., 0].sum(-1)
    return found, item_log_probs


@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder_only"])
def test_exhaustive_constrained_search_equals_brute_force_scoring(arch):
    rng = np.random.default_rng(0)
    flat_codes = rng.choice(np.prod(CODEBOOK_SIZES), size=NUM_ITEMS, replace=False)
    sid_codes = np.stack(np.unravel_index(flat_codes, CODEBOOK_SIZES), axis=1).astype(np.int32)
    catalogue_tokens = (sid_codes + np.array(TOKEN_OFFSETS)).astype(np.int32)  # [items, L]
    index = build_index(sid_codes, codebook_sizes=CODEBOOK_SIZES,
                        token_offsets=TOKEN_OFFSETS).to_device()

    # Two requests with different history lengths (left-padded).
    history_mask = np.zeros((2, 12), bool)
    history_mask[0, 3:] = True
    history_mask[1, 6:] = True
    history_tokens = np.where(
        history_mask, catalogue_tokens[rng.integers(0, NUM_ITEMS, size=(2, 4))].reshape(2, 12),
        PAD_ID).astype(np.int32)

    model = build_model(ModelConfig.tiny(VOCAB_SIZE, len(CODEBOOK_SIZES), arch=arch),
                        rngs=nnx.Rngs(0))
    found, item_log_probs = _search_and_brute_force(
        model, index, history_tokens, history_mask, catalogue_tokens)

    assert bool(jnp.all(found.valid))
    expected_order = np.argsort(-np.asarray(item_log_probs), axis=1, kind="stable")
    # Item ids default to input rows, so the search's ids index the brute force.
    np.testing.assert_array_equal(np.sort(found.item_ids, axis=1),
                                  np.tile(np.arange(NUM_ITEMS), (2, 1)))
    np.testing.assert_allclose(
        found.scores, np.take_along_axis(np.asarray(item_log_probs), np.asarray(found.item_ids), 1),
        atol=1e-4)
    np.testing.assert_allclose(
        found.scores, np.take_along_axis(np.asarray(item_log_probs), expected_order, 1), atol=1e-4)
    # The two requests rank differently: the history matters end to end.
    assert not np.array_equal(found.item_ids[0], found.item_ids[1])
