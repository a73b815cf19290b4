"""Constrained beam search: equivalence to the NumPy oracle, exhaustive
ranking, filters, invalid slots and NaN logits."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from catalogues import PrefixHashModel, random_catalogue

from constrained.beam_search import constrained_beam_search
from constrained.index import build_index
from constrained.reference import build_dict_trie, log_softmax, prune_trie, reference_beam_search

START = 1


def run_search(index, model, batch, num_beams, allow_mask=None, exclude_rows=None, normalization="vocab"):
    decode = jax.jit(functools.partial(constrained_beam_search, step_fn=model.step, num_beams=num_beams,
                                       start_token=START, normalization=normalization))
    shared = {"table": jnp.asarray(model.table)}
    cache = {"hash": jnp.zeros((batch, num_beams), jnp.int32)}
    out = decode(
        index.to_device(), shared=shared, beam_cache=cache,
        allow_mask=None if allow_mask is None else jnp.asarray(allow_mask),
        exclude_rows=None if exclude_rows is None else jnp.asarray(exclude_rows, jnp.int32),
    )
    return jax.tree_util.tree_map(np.asarray, out)


def assert_matches_reference(out, b, ref, tol=1e-4):
    """Same valid beams in the same order; positions may swap only on near-ties."""
    valid = out.valid[b]
    assert valid.sum() == len(ref), (valid.sum(), len(ref))
    assert np.all(valid[: len(ref)]) and not np.any(valid[len(ref) :])
    ref_scores = np.array([r[0] for r in ref])
    np.testing.assert_allclose(out.scores[b, : len(ref)], ref_scores, rtol=0, atol=tol)
    for j, (score, codes, item) in enumerate(ref):
        if out.item_ids[b, j] != item:
            # Only allowed when the two candidates tie within tolerance.
            assert abs(out.scores[b, j] - score) < tol
        else:
            assert tuple(out.sid_codes[b, j]) == codes


@pytest.mark.parametrize(
    "sizes,num_items,num_beams,dense_depth,offsets",
    [
        ((6, 5, 4), 80, 7, 2, None),
        ((6, 5, 4), 80, 7, 1, None),
        ((9, 9, 9, 9), 400, 12, None, (2, 11, 20, 29)),
        ((4, 3), 10, 16, 2, None),  # more beams than items
        ((30,), 20, 5, 1, None),  # one level
        ((3, 40, 2), 150, 50, 2, None),  # wide dense level 1, beams > branching
    ],
)
def test_matches_reference(sizes, num_items, num_beams, dense_depth, offsets):
    rng = np.random.default_rng(num_items + num_beams)
    batch = 3
    codes = random_catalogue(rng, num_items, sizes)
    item_ids = rng.permutation(10 * len(codes))[: len(codes)]
    token_offsets = offsets or (0,) * len(sizes)
    vocab = (offsets[-1] + sizes[-1]) if offsets else max(sizes)
    index = build_index(codes, item_ids, dense_depth=dense_depth, token_offsets=token_offsets)
    model = PrefixHashModel(rng, batch, len(sizes), vocab)
    out = run_search(index, model, batch, num_beams)
    trie = build_dict_trie(codes, item_ids)
    item_to_codes = {int(i): tuple(c) for i, c in zip(item_ids, codes.tolist())}
    for b in range(batch):
        ref = reference_beam_search(
            trie, model.logits_fn(b, token_offsets), num_levels=len(sizes),
            num_beams=num_beams, token_offsets=token_offsets,
        )
        assert_matches_reference(out, b, ref)
        for j in np.flatnonzero(out.valid[b]):
            assert item_to_codes[int(out.item_ids[b, j])] == tuple(out.sid_codes[b, j])
        assert np.all(out.item_ids[b][~out.valid[b]] == -1)
        assert np.all(out.scores[b][~out.valid[b]] == -np.inf)
        assert np.all(np.diff(out.scores[b][out.valid[b]]) <= 0)


def test_enough_beams_equals_exhaustive_ranking():
    rng = np.random.default_rng(7)
    sizes, batch = (5, 4, 6), 2
    codes = random_catalogue(rng, 70, sizes)
    index = build_index(codes)
    model = PrefixHashModel(rng, batch, len(sizes), max(sizes))
    num_beams = len(codes) + 5
    out = run_search(index, model, batch, num_beams)
    for b in range(batch):
        fn = model.logits_fn(b, (0, 0, 0))
        totals = np.array([
            sum(log_softmax(fn(tuple(c[:l])))[c[l]] for l in range(len(sizes))) for c in codes.tolist()
        ])
        order = np.argsort(-totals, kind="stable")
        assert out.valid[b].sum() == len(codes)
        np.testing.assert_allclose(out.scores[b, : len(codes)], totals[order], atol=1e-4)
        np.testing.assert_array_equal(out.item_ids[b, : len(codes)], order)


def test_filters_match_search_over_allowed_subcatalogue():
    rng = np.random.default_rng(11)
    sizes, batch, num_beams = (5, 6, 4), 4, 9
    codes = random_catalogue(rng, 100, sizes)
    item_ids = np.arange(100, 100 + len(codes))
    index = build_index(codes, item_ids)
    model = PrefixHashModel(rng, batch, len(sizes), max(sizes))
    keep_prob = [0.5, 0.1, 0.03, 0.0]  # the last request allows nothing
    allow = np.stack([rng.random(len(codes)) < p for p in keep_prob])
    allow[2, :] = False
    allow[2, [3, 50, 51]] = True  # three allowed items: 6 slots must be invalid
    out = run_search(index, model, batch, num_beams, allow_mask=allow)
    trie = build_dict_trie(codes, item_ids)
    for b in range(batch):
        allowed = set(item_ids[allow[b]].tolist())
        returned = out.item_ids[b][out.valid[b]]
        assert set(returned.tolist()) <= allowed
        ref = reference_beam_search(
            prune_trie(trie, allowed), model.logits_fn(b, (0, 0, 0)),
            num_levels=3, num_beams=num_beams, token_offsets=(0, 0, 0),
        )
        assert_matches_reference(out, b, ref)
    assert out.valid[2].sum() == 3 and out.valid[3].sum() == 0


@pytest.mark.parametrize("dense_depth,offsets", [(2, None), (1, (2, 9, 15))])
def test_trie_normalization_matches_reference_with_and_without_filter(dense_depth, offsets):
    """normalization="trie": softmax over each prefix's valid children; a filter
    removes items but keeps the normaliser of the unfiltered trie."""
    rng = np.random.default_rng(21 + dense_depth)
    sizes, batch, num_beams = (7, 6, 5), 3, 8
    token_offsets = offsets or (0, 0, 0)
    vocab = (offsets[-1] + sizes[-1]) if offsets else max(sizes)
    codes = random_catalogue(rng, 90, sizes)
    item_ids = np.arange(len(codes)) * 3
    index = build_index(codes, item_ids, dense_depth=dense_depth, token_offsets=token_offsets)
    model = PrefixHashModel(rng, batch, len(sizes), vocab)
    trie = build_dict_trie(codes, item_ids)
    allow = rng.random((batch, len(codes))) < 0.3
    for allow_mask in (None, allow):
        out = run_search(index, model, batch, num_beams, allow_mask=allow_mask, normalization="trie")
        for b in range(batch):
            request_trie = trie if allow_mask is None else prune_trie(trie, set(item_ids[allow[b]].tolist()))
            ref = reference_beam_search(
                request_trie, model.logits_fn(b, token_offsets), num_levels=3, num_beams=num_beams,
                token_offsets=token_offsets, normalization="trie", normalizer_trie=trie,
            )
            assert_matches_reference(out, b, ref)
    # The two normalisations really rank differently here (the test is not vacuous).
    vocab_out = run_search(index, model, batch, num_beams)
    assert not np.allclose(vocab_out.scores, run_search(index, model, batch, num_beams, normalization="trie").scores)


def test_trie_normalization_gives_a_distribution_over_the_catalogue():
    rng = np.random.default_rng(8)
    sizes = (4, 3, 5)
    codes = random_catalogue(rng, 30, sizes)
    index = build_index(codes)
    model = PrefixHashModel(rng, 2, len(sizes), max(sizes))
    out = run_search(index, model, 2, num_beams=len(codes), normalization="trie")
    assert out.valid.all()
    np.testing.assert_allclose(np.exp(out.scores).sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="normalization"):
        run_search(index, model, 2, num_beams=4, normalization="softmax")


def test_nan_logits_never_returned_as_valid():
    rng = np.random.default_rng(5)
    sizes, batch, num_beams = (4, 5, 3), 2, 6
    codes = random_catalogue(rng, 40, sizes)
    index = build_index(codes)
    model = PrefixHashModel(rng, batch, len(sizes), max(sizes))
    model.table[0, 1, :, :] = np.nan  # every level-1 logit of request 0
    model.table[1, 2, ::2, 1] = np.nan  # some level-2 logits of request 1
    out = run_search(index, model, batch, num_beams)
    assert not out.valid[0].any() and np.all(out.item_ids[0] == -1)
    assert out.valid[1].any()
    assert np.all(np.isfinite(out.scores[1][out.valid[1]]))
    assert not np.isnan(out.scores).any()
    ref = reference_beam_search(
        build_dict_trie(codes, np.arange(len(codes))), model.logits_fn(1, (0, 0, 0)),
        num_levels=3, num_beams=num_beams, token_offsets=(0, 0, 0),
    )
    assert_matches_reference(out, 1, ref)


def test_full_catalogue_equals_unconstrained_search():
    """With every code combination in the catalogue the trie allows all, so
    the constrained and the plain beam search must agree."""
    from constrained.beam_search import unconstrained_beam_search

    rng = np.random.default_rng(3)
    sizes, batch, num_beams = (4, 5, 3), 2, 8
    grids = np.meshgrid(*[np.arange(k) for k in sizes], indexing="ij")
    codes = np.stack([g.ravel() for g in grids], axis=1).astype(np.int32)
    index = build_index(codes, token_offsets=(2, 6, 11))
    model = PrefixHashModel(rng, batch, len(sizes), 14)
    out = run_search(index, model, batch, num_beams)
    free = jax.jit(
        lambda shared, cache: unconstrained_beam_search(
            model.step, shared, cache, num_beams=num_beams, start_token=START,
            num_levels=3, codebook_sizes=sizes, token_offsets=(2, 6, 11),
        )
    )
    free_codes, free_scores = free(
        {"table": jnp.asarray(model.table)}, {"hash": jnp.zeros((batch, num_beams), jnp.int32)}
    )
    np.testing.assert_allclose(out.scores, np.asarray(free_scores), atol=1e-5)
    np.testing.assert_array_equal(out.sid_codes, np.asarray(free_codes))


@pytest.mark.parametrize("width,k,chunk", [(5000, 20, 128), (4096, 70, 128), (300, 7, 16), (130, 5, 128)])
def test_chunked_top_k_equals_top_k_including_ties(width, k, chunk):
    from constrained.beam_search import _chunked_top_k

    rng = np.random.default_rng(width + k)
    # Few distinct values: many ties; some -inf entries and an all -inf row.
    values = rng.integers(0, 12, size=(6, width)).astype(np.float32)
    values[rng.random(values.shape) < 0.3] = -np.inf
    values[3] = -np.inf
    got_v, got_i = _chunked_top_k(jnp.asarray(values), k, chunk)
    want_v, want_i = jax.lax.top_k(jnp.asarray(values), k)
    np.testing.assert_array_equal(np.asarray(got_v), np.asarray(want_v))
    finite = np.isfinite(np.asarray(want_v))
    np.testing.assert_array_equal(np.asarray(got_i)[finite], np.asarray(want_i)[finite])


@pytest.mark.parametrize("per_beam_max_rows", [0, 10**6])
def test_wide_level_selection_strategies_match_reference(per_beam_max_rows, monkeypatch):
    import constrained.beam_search as bs

    monkeypatch.setattr(bs, "PER_BEAM_MAX_ROWS", per_beam_max_rows)
    rng = np.random.default_rng(21)
    sizes, batch, num_beams = (3, 300, 3), 2, 20  # dense level 1: 20 x 300 candidates
    codes = random_catalogue(rng, 1500, sizes)
    index = build_index(codes)
    model = PrefixHashModel(rng, batch, len(sizes), max(sizes))
    out = run_search(index, model, batch, num_beams)
    trie = build_dict_trie(codes, np.arange(len(codes)))
    for b in range(batch):
        ref = reference_beam_search(
            trie, model.logits_fn(b, (0, 0, 0)), num_levels=3, num_beams=num_beams, token_offsets=(0, 0, 0)
        )
        assert_matches_reference(out, b, ref)


@pytest.mark.parametrize("with_allow_mask", [False, True])
def test_exclusion_lists_match_search_over_remaining_items(with_allow_mask):
    rng = np.random.default_rng(13)
    sizes, batch, num_beams = (4, 5, 3), 4, 8
    codes = random_catalogue(rng, 50, sizes)
    n = len(codes)
    item_ids = np.arange(1000, 1000 + n)
    index = build_index(codes, item_ids, dense_depth=2)
    model = PrefixHashModel(rng, batch, len(sizes), max(sizes))
    # Request 0: nothing excluded; 1: random with repeats and padding;
    # 2: a whole level-0 subtree plus one more; 3: everything but two items.
    exclude = np.full((batch, n + 4), -1, np.int64)
    picks = rng.integers(0, n, 15)
    exclude[1, : len(picks)] = picks
    exclude[1, len(picks)] = picks[0]
    subtree = np.flatnonzero(codes[:, 0] == codes[0, 0])
    exclude[2, : len(subtree) + 1] = np.append(subtree, 7 if 7 not in subtree else 8)
    others = np.setdiff1d(np.arange(n), [5, 9])
    exclude[3, : len(others)] = rng.permutation(others)
    allow = rng.random((batch, n)) < 0.7 if with_allow_mask else None
    out = run_search(index, model, batch, num_beams, allow_mask=allow, exclude_rows=exclude)
    trie = build_dict_trie(codes, item_ids)
    for b in range(batch):
        remaining = set(range(n)) - set(exclude[b][exclude[b] >= 0].tolist())
        if allow is not None:
            remaining &= set(np.flatnonzero(allow[b]).tolist())
        allowed = set(item_ids[sorted(remaining)].tolist())
        assert set(out.item_ids[b][out.valid[b]].tolist()) <= allowed
        ref = reference_beam_search(
            prune_trie(trie, allowed), model.logits_fn(b, (0, 0, 0)),
            num_levels=3, num_beams=num_beams, token_offsets=(0, 0, 0),
        )
        assert_matches_reference(out, b, ref)


def test_repeated_exclusions_do_not_hide_siblings():
    """An item listed many times is one exclusion: with beams >= items every
    other item must still come back."""
    rng = np.random.default_rng(17)
    sizes = (3, 3, 3)
    codes = random_catalogue(rng, 20, sizes)
    n = len(codes)
    index = build_index(codes)
    model = PrefixHashModel(rng, 1, len(sizes), 3)
    exclude = np.full((1, 3 * n), -1)
    exclude[0, : 2 * n] = 4  # item 4 listed 2n times
    exclude[0, 2 * n] = 11
    out = run_search(index, model, 1, n + 2, exclude_rows=exclude)
    returned = set(out.item_ids[0][out.valid[0]].tolist())
    assert returned == set(range(n)) - {4, 11}


@pytest.mark.parametrize("allow_kind", ["mask", "rows"])
def test_allow_and_exclusion_together_equal_search_over_what_both_permit(allow_kind):
    """A prefix whose allowed items are all excluded (its other items not allowed) must not take a beam:
    with both filters on one request the search equals the oracle on the allowed-minus-excluded trie."""
    rng = np.random.default_rng(29)
    sizes, batch, num_beams = (4, 5, 3), 4, 5
    codes = random_catalogue(rng, 50, sizes)
    n = len(codes)
    item_ids = np.arange(200, 200 + n)
    index = build_index(codes, item_ids, dense_depth=2)
    model = PrefixHashModel(rng, batch, len(sizes), max(sizes))
    allow = np.full((batch, 24), -1, np.int64)  # request 0: no allow list
    exclude = np.full((batch, 24), -1, np.int64)
    for b in range(1, batch):
        allowed = rng.choice(n, 16, replace=False)
        # Exclude every allowed item under half of the level-1 prefixes: those prefixes keep items
        # (not allowed) and allowed items (excluded), so each filter alone keeps them alive.
        under_excluded_prefix = (codes[allowed, 0] * 5 + codes[allowed, 1]) % 2 == b % 2
        allow[b, :16] = allowed
        exclude[b, : under_excluded_prefix.sum()] = allowed[under_excluded_prefix]
    exclude[0, :24] = rng.choice(n, 24, replace=False)  # no allow list: the exclusions alone apply
    allow[3, :16] = allow[3, 16:] = -1
    allow[3, :3] = exclude[3, :3] = [1, 2, 3]  # a list whose items are all excluded allows nothing
    mask = np.ones((batch, n), bool)
    for b in range(batch):
        if (allow[b] >= 0).any():
            mask[b] = np.isin(np.arange(n), allow[b])
    decode = jax.jit(functools.partial(constrained_beam_search, step_fn=model.step, num_beams=num_beams,
                                       start_token=START))
    out = decode(index.to_device(), shared={"table": jnp.asarray(model.table)},
                 beam_cache={"hash": jnp.zeros((batch, num_beams), jnp.int32)},
                 allow_mask=jnp.asarray(mask) if allow_kind == "mask" else None,
                 allow_rows=jnp.asarray(allow, jnp.int32) if allow_kind == "rows" else None,
                 exclude_rows=jnp.asarray(exclude, jnp.int32))
    out = jax.tree_util.tree_map(np.asarray, out)
    trie = build_dict_trie(codes, item_ids)
    for b in range(batch):
        permitted = set(np.flatnonzero(mask[b]).tolist()) - set(exclude[b].tolist())
        ref = reference_beam_search(prune_trie(trie, set(item_ids[sorted(permitted)].tolist())),
                                    model.logits_fn(b, (0, 0, 0)), num_levels=3, num_beams=num_beams,
                                    token_offsets=(0, 0, 0))
        assert_matches_reference(out, b, ref)
    assert not out.valid[3].any()
