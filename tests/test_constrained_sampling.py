"""Rollouts of the RL stage (constrained/sampling.py): sampled frequencies
match the exact constrained distribution (tempered, truncated, filtered),
every rollout is a catalogue item, the reported log-probs equal the NumPy
reference, teacher-forced log-probs and entropies match it too, and a real
genrec model samples and beam-rolls out through the jitted entries."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from catalogues import PrefixHashModel, random_catalogue
from flax import nnx
from scipy import stats

from constrained.beam_search import constrained_beam_search
from constrained.index import build_index
from constrained.reference import (
    build_dict_trie,
    log_softmax,
    prune_trie,
    reference_sample_distribution,
    reference_token_log_probs,
)
from constrained.sampling import (
    beam_rollouts,
    constrained_sample,
    restricted_entropy,
    sample_batch,
    token_log_probs_of,
)
from genrec.models import PAD_ID, ModelConfig, build_model

START = 1


def draw(index, model, num_samples, seed=0, normalization="trie", **kwargs):
    """constrained_sample under jit; keyword knobs (temperature, top_k, top_p,
    allow_mask) are traced, so one compile serves every value."""
    shared, cache = model.inputs(num_samples)
    # An rbg key compiles faster than the default threefry (which the genrec-model test uses).
    key = jax.random.key(seed, impl="rbg")
    out = _jitted_sample(index.to_device(), shared, cache, key, kwargs,
                         step_fn=model.step, num_samples=num_samples, normalization=normalization)
    return jax.tree_util.tree_map(np.asarray, out)


@functools.partial(jax.jit, static_argnames=("step_fn", "num_samples", "normalization"))
def _jitted_sample(index, shared, cache, key, knobs, *, step_fn, num_samples, normalization):
    return constrained_sample(index, step_fn, shared, cache, key, num_samples=num_samples, start_token=START,
                              normalization=normalization, **knobs)


def assert_frequencies_match(drawn_items, probs):
    """Chi-square goodness of fit; items of probability 0 must never be drawn."""
    ids = np.array(list(probs))
    p = np.array([probs[i] for i in ids])
    assert set(drawn_items.tolist()) <= set(ids[p > 0].tolist())
    observed = np.array([(drawn_items == i).sum() for i in ids])
    expected = p * len(drawn_items)
    big = expected >= 5  # pool the rare items into one bin
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    obs, exp = obs[exp > 0], exp[exp > 0]
    assert len(obs) >= 2  # a real comparison, not one bin
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3


def assert_catalogue_rollouts(out, item_to_codes, trie, model, offsets, normalization, valid_rows=None):
    """Every valid rollout is a catalogue SID with its item id, and its
    token_log_probs equal the reference (checked once per distinct item)."""
    seen = set()
    for b in range(out.valid.shape[0]):
        for g in np.flatnonzero(out.valid[b]):
            item = int(out.item_ids[b, g])
            assert item_to_codes[item] == tuple(out.sid_codes[b, g].tolist())
            if (b, item) in seen:
                continue
            seen.add((b, item))
            want = reference_token_log_probs(trie, model.logits_fn(b, offsets), item_to_codes[item],
                                             token_offsets=offsets, normalization=normalization)
            np.testing.assert_allclose(out.token_log_probs[b, g], want, atol=2e-5)
    assert np.all(out.item_ids[~out.valid] == -1) and np.all(out.sid_codes[~out.valid] == -1)
    assert np.all(out.token_log_probs[~out.valid] == 0.0)


# (temperature, top_k, top_p, filtered); None = off.
SAMPLING_CASES = [(1.0, None, None, False), (0.6, None, None, False), (1.5, 2, None, False),
                  (1.0, None, 0.8, False), (0.8, 3, None, True)]


def test_sample_frequencies_match_exact_constrained_distribution():
    """Dense levels 0 and 1, a CSR level 2; the beam-rollout test walks CSR level 1 and "vocab"."""
    dense_depth, offsets, normalization = 2, (2, 6, 11), "trie"
    rng = np.random.default_rng(2)
    sizes, batch, num_samples = (4, 5, 6), 2, 10_000
    codes = random_catalogue(rng, 15, sizes)
    item_ids = 100 + rng.permutation(len(codes))
    index = build_index(codes, item_ids, dense_depth=dense_depth, token_offsets=offsets)
    assert index.dense_depth == dense_depth
    model = PrefixHashModel(rng, batch, len(sizes), offsets[-1] + sizes[-1], scale=0.7)
    trie = build_dict_trie(codes, item_ids)
    item_to_codes = dict(zip(item_ids.tolist(), map(tuple, codes.tolist())))
    for case, (temperature, top_k, top_p, filtered) in enumerate(SAMPLING_CASES):
        allow = rng.random((batch, len(codes))) < 0.6 if filtered else np.ones((batch, len(codes)), bool)
        # Off = values that truncate nothing, so every case shares one compile.
        out = draw(index, model, num_samples, seed=case, normalization=normalization, temperature=temperature,
                   top_k=top_k or 100, top_p=top_p or 1.0, allow_mask=jnp.asarray(allow))
        assert out.valid.all()
        for b in range(batch):
            request_trie = prune_trie(trie, set(item_ids[allow[b]].tolist())) if filtered else trie
            probs = reference_sample_distribution(
                request_trie, model.logits_fn(b, offsets), num_levels=3, token_offsets=offsets,
                temperature=temperature, top_k=top_k, top_p=top_p)
            assert_frequencies_match(out.item_ids[b], probs)
        # Log-probs are the untempered, untruncated, unfiltered policy's.
        assert_catalogue_rollouts(out, item_to_codes, trie, model, offsets, normalization)

    # Edge cases on the same compile: a request with no allowed item, then one with NaN logits,
    # each beside a normal request; their slots are invalid, the other request's are not.
    allow = np.zeros((batch, len(codes)), bool)
    allow[1, :3] = True
    out = draw(index, model, num_samples, normalization=normalization, temperature=1.0, top_k=100, top_p=1.0,
               allow_mask=jnp.asarray(allow))
    assert not out.valid[0].any() and out.valid[1].all()
    assert set(out.item_ids[1].tolist()) == set(item_ids[:3].tolist())
    model.table[1, 1] = np.nan  # every level-1 logit of request 1
    out = draw(index, model, num_samples, normalization=normalization, temperature=1.0, top_k=100, top_p=1.0,
               allow_mask=jnp.ones((batch, len(codes)), bool))
    assert out.valid[0].all() and not out.valid[1].any()
    assert_catalogue_rollouts(out, item_to_codes, trie, model, offsets, normalization)
    with pytest.raises(ValueError, match="temperature"):
        constrained_sample(index.to_device(), model.step, *model.inputs(4), jax.random.key(0), num_samples=4,
                           start_token=START, temperature=0.0)


def test_beam_rollouts_are_the_top_beams_with_their_per_level_log_probs():
    rng = np.random.default_rng(5)
    sizes, offsets = (4, 5, 6), (2, 6, 11)
    codes = random_catalogue(rng, 30, sizes)
    index = build_index(codes, dense_depth=1, token_offsets=offsets)  # the real-model test has dense_depth 2
    model = PrefixHashModel(rng, 2, len(sizes), 17, scale=3.0)

    @jax.jit
    def rollouts_and_search(index, shared, cache):
        search = constrained_beam_search(index, model.step, shared, cache, num_beams=12, start_token=START,
                                         normalization="vocab")
        return beam_rollouts(index, model.step, shared, cache, num_rollouts=5, start_token=START,
                             normalization="vocab"), search

    out, search = rollouts_and_search(index.to_device(), *model.inputs(12))
    # The top 5 of decode_batch's search (same engine), with per-level log-probs summing to its scores.
    np.testing.assert_array_equal(out.sid_codes, search.sid_codes[:, :5])
    np.testing.assert_allclose(out.token_log_probs.sum(-1), search.scores[:, :5], atol=1e-5)
    trie = build_dict_trie(codes, np.arange(len(codes)))
    totals = np.array([[reference_token_log_probs(trie, model.logits_fn(b, offsets), c, token_offsets=offsets,
                                                  normalization="vocab").sum()
                        for c in codes.tolist()] for b in range(2)])
    # Width 12 >> 5 on this small trie: the top 5 are the exact top 5 items.
    np.testing.assert_array_equal(out.item_ids, np.argsort(-totals, axis=1)[:, :5])
    assert_catalogue_rollouts(jax.tree_util.tree_map(np.asarray, out), dict(enumerate(map(tuple, codes.tolist()))),
                              trie, model, offsets, "vocab")


def test_token_log_probs_of_matches_reference_with_finite_gradient():
    """CSR levels 1 and 2 here; the genrec-model test covers the dense level-1 table."""
    rng = np.random.default_rng(1)
    sizes, offsets, vocab, batch, num_rollouts = (4, 5, 6), (2, 6, 11), 17, 2, 6
    codes = random_catalogue(rng, 25, sizes)
    index = build_index(codes, dense_depth=1, token_offsets=offsets)
    trie = build_dict_trie(codes, np.arange(len(codes)))
    first = rng.standard_normal((batch, vocab)).astype(np.float32) * 2
    rest = rng.standard_normal((batch, num_rollouts, 2, vocab)).astype(np.float32) * 2
    sids = codes[rng.integers(0, len(codes), (batch, num_rollouts))]
    sids[0, 4] = -1  # an empty slot
    outside = next(c for c in range(sizes[2]) if (*sids[1, 5, :2], c) not in set(map(tuple, codes.tolist())))
    sids[1, 5, 2] = outside  # a valid prefix, then a code that is not its child

    @jax.jit
    def log_probs_and_grads(index, first, rest):
        def total(first, rest, normalization):
            logp = token_log_probs_of(index, first, rest, jnp.asarray(sids), normalization)
            return jnp.sum(jnp.where(jnp.isfinite(logp), logp, 0.0)), logp

        return {norm: jax.grad(total, argnums=(0, 1), has_aux=True)(first, rest, norm) for norm in ("trie", "vocab")}

    results = log_probs_and_grads(index.to_device(), jnp.asarray(first), jnp.asarray(rest))
    for normalization, (grads, got) in results.items():
        got = np.asarray(got)
        for b in range(batch):
            for g in range(num_rollouts):
                if (b, g) in ((0, 4), (1, 5)):
                    continue

                def logits_fn(prefix, b=b, g=g):
                    return first[b] if not prefix else rest[b, g, len(prefix) - 1]

                want = reference_token_log_probs(trie, logits_fn, sids[b, g].tolist(), token_offsets=offsets,
                                                 normalization=normalization)
                np.testing.assert_allclose(got[b, g], want, atol=1e-5)
        np.testing.assert_array_equal(got[0, 4], 0.0)
        assert np.all(np.isfinite(got[1, 5, :2])) and got[1, 5, 2] == -np.inf
        for grad in grads:
            assert np.all(np.isfinite(grad)) and np.any(grad != 0)
        root_children = np.zeros(vocab, bool)
        root_children[offsets[0] + np.unique(codes[:, 0])] = True
        # Under the trie policy only the prefix's children get a gradient; under "vocab" every token does.
        assert np.all((np.asarray(grads[0]) != 0) == (root_children if normalization == "trie" else True))


def test_restricted_entropy_matches_reference():
    rng = np.random.default_rng(9)
    sizes, offsets, vocab = (4, 5, 6), (2, 6, 11), 17
    codes = random_catalogue(rng, 25, sizes)
    index = build_index(codes, dense_depth=2, token_offsets=offsets)
    trie = build_dict_trie(codes, np.arange(len(codes)))
    nodes = 12
    prefix_len = rng.integers(0, 4, nodes)
    prefix = np.where(np.arange(3) < prefix_len[:, None], codes[rng.integers(0, len(codes), nodes)], -1)
    logits = rng.standard_normal((nodes, vocab)).astype(np.float32) * 2
    got = np.asarray(jax.jit(restricted_entropy)(index.to_device(), jnp.asarray(logits), jnp.asarray(prefix),
                                                 jnp.asarray(prefix_len)))
    for n in range(nodes):
        if prefix_len[n] == 3:
            assert got[n] == 0.0
            continue
        node = trie
        for code in prefix[n, : prefix_len[n]]:
            node = node[int(code)]
        logp = log_softmax(logits[n, np.asarray(sorted(node)) + offsets[prefix_len[n]]])
        np.testing.assert_allclose(got[n], -np.sum(np.exp(logp) * logp), atol=1e-5)


CODEBOOK_SIZES = (8, 8, 8)
TOKEN_OFFSETS = (2, 10, 18)  # genrec/vocab.py layout
VOCAB_SIZE = 2 + sum(CODEBOOK_SIZES)


def test_genrec_model_samples_catalogue_items_with_teacher_forced_log_probs():
    """sample_batch on a real model: valid SIDs, and log-probs equal to the
    teacher-forced ones the RL loss recomputes (so the first PPO ratio is 1)."""
    rng = np.random.default_rng(0)
    num_items = 24
    flat = rng.choice(np.prod(CODEBOOK_SIZES), size=num_items, replace=False)
    codes = np.stack(np.unravel_index(flat, CODEBOOK_SIZES), axis=1).astype(np.int32)
    index = build_index(codes, codebook_sizes=CODEBOOK_SIZES, token_offsets=TOKEN_OFFSETS).to_device()
    mask = np.zeros((2, 9), bool)
    mask[0, 3:] = mask[1, 6:] = True
    history = np.where(mask, (codes + TOKEN_OFFSETS)[rng.integers(0, num_items, (2, 3))].reshape(2, 9), PAD_ID)
    model = build_model(ModelConfig.tiny(VOCAB_SIZE, 3, num_encoder_layers=1, num_decoder_layers=1),
                        rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    history, mask = jnp.asarray(history, jnp.int32), jnp.asarray(mask)

    @jax.jit
    def teacher_forced(state, sid_codes):
        model = nnx.merge(graphdef, state)
        first, rest = model.score_candidates(model.encode(history, mask), sid_codes + jnp.asarray(TOKEN_OFFSETS))
        return token_log_probs_of(index, first, rest, sid_codes)

    out = sample_batch(graphdef, state, index, history, mask, jax.random.key(1), num_samples=num_items,
                       temperature=1.3, top_k=6)
    assert bool(out.valid.all())
    np.testing.assert_array_equal(codes[np.asarray(out.item_ids)], out.sid_codes)
    np.testing.assert_allclose(teacher_forced(state, out.sid_codes), out.token_log_probs, atol=1e-4)
