"""Catalogue updates without recompiling: the padded index (constrained/index.py,
``IndexCapacity``) searches exactly like the exact one, and
``Recommender.update_catalogue`` (serving/recommender.py) swaps catalogues
atomically, with no new compile of the decode within the capacity, results
equal to a fresh recommender's, and a logged rebuild beyond it."""

import contextlib
import logging
import threading

import jax
import numpy as np
import pytest
from catalogues import random_catalogue
from flax import nnx
from test_beam_search import PrefixHashModel, assert_matches_reference, run_search

from constrained.decode import decode_batch
from constrained.index import (
    IndexCapacity,
    IndexCapacityError,
    IndexFileError,
    TrieIndex,
    build_index,
    pad_index,
)
from constrained.reference import build_dict_trie, prune_trie, reference_beam_search
from genrec.models import ModelConfig, build_model
from genrec.synthetic import make_synthetic_dataset
from serving.batch_job import run_batch_job
from serving.recommender import Recommender

TOP_K = 5
SETTINGS = dict(num_beams=5, batch_size=4, max_history=4)


def _signature(index: TrieIndex):
    """What the compiled search depends on: static metadata, leaf shapes and dtypes."""
    device = index.to_device()
    return device.meta, [(leaf.shape, leaf.dtype) for leaf in jax.tree_util.tree_leaves(device)]


# ---------------------------------------------------------------- the padded index


def test_padded_index_searches_like_the_exact_index_and_the_reference():
    # One CSR level-1 (dense_depth 1), token offsets, the trie normaliser (the padded gather widens the softmax
    # support's row) and both filters: the paths padding could leak through.
    sizes, dense_depth, token_offsets, normalization = (7, 9, 8), 1, (2, 9, 18), "trie"
    rng = np.random.default_rng(0)
    batch, num_beams, vocab = 3, 7, 26
    codes = random_catalogue(rng, 70, sizes)
    item_ids = rng.permutation(10 * len(codes))[: len(codes)]
    capacity = IndexCapacity.for_catalogue(codes, headroom=1.7)
    exact = build_index(codes, item_ids, dense_depth=dense_depth, token_offsets=token_offsets)
    padded = build_index(codes, item_ids, dense_depth=dense_depth, token_offsets=token_offsets, capacity=capacity)
    assert padded.num_item_slots > exact.num_items and padded.csr_indptr.size > exact.csr_indptr.size
    assert padded.max_branch[-1] > exact.max_branch[-1]  # a wider gather: padded candidates in CSR rows
    assert IndexCapacity.of_index(padded) == IndexCapacity.of_index(exact)
    model = PrefixHashModel(rng, batch, len(sizes), vocab)
    # Every padded slot allowed, some excluded: padding must stay unreachable all the same. Request 0 allows
    # every item and has only exclusions; the others exclude rows they do not allow (with both filters the
    # search prunes a prefix per filter, which is exact only when an allowed item is never also excluded).
    allow = rng.random((batch, len(codes))) < 0.6
    allow[0] = True
    exclude = np.stack([rng.integers(0, len(codes), 6)] + [rng.choice(np.flatnonzero(~allow[b]), 6)
                                                            for b in range(1, batch)])
    filters_exact = (allow, exclude)
    filters_padded = (np.concatenate([allow, np.ones((batch, padded.num_item_slots - len(codes)), bool)], 1),
                      np.concatenate([exclude, np.arange(len(codes), len(codes) + 3)[None].repeat(batch, 0)], 1))
    trie = build_dict_trie(codes, item_ids)
    request_tries = [prune_trie(trie, set(item_ids[np.setdiff1d(np.flatnonzero(allow[b]), exclude[b])].tolist()))
                     for b in range(batch)]
    out_exact = run_search(exact, model, batch, num_beams, *filters_exact, normalization=normalization)
    out_padded = run_search(padded, model, batch, num_beams, *filters_padded, normalization=normalization)
    for name in ("item_ids", "sid_codes", "valid"):
        np.testing.assert_array_equal(getattr(out_padded, name), getattr(out_exact, name))
    np.testing.assert_allclose(out_padded.scores, out_exact.scores, rtol=0, atol=1e-6)
    for b in range(batch):
        ref = reference_beam_search(request_tries[b], model.logits_fn(b, token_offsets), num_levels=len(sizes),
                                    num_beams=num_beams, token_offsets=token_offsets,
                                    normalization=normalization, normalizer_trie=trie)
        assert_matches_reference(out_padded, b, ref)


def test_every_catalogue_within_a_capacity_has_the_same_shapes():
    rng = np.random.default_rng(4)
    sizes = (8, 6, 5)
    base = random_catalogue(rng, 120, sizes)
    capacity = IndexCapacity.for_catalogue(base, headroom=1.25, codebook_sizes=sizes)
    need = IndexCapacity.of_index(build_index(base))
    assert capacity.num_items == int(np.ceil(need.num_items * 1.25))
    assert all(w <= k for w, k in zip(capacity.max_branch, sizes)) and capacity.covers(need)
    signatures = []
    for num_items in (1, 40, 120, 140):
        codes = random_catalogue(rng, num_items, sizes)
        index = build_index(codes, codebook_sizes=sizes, capacity=capacity)
        assert IndexCapacity.of_index(index) == IndexCapacity.of_index(build_index(codes, codebook_sizes=sizes))
        signatures.append(_signature(index))
    assert all(s == signatures[0] for s in signatures[1:])
    too_big = random_catalogue(rng, capacity.num_items + 20, sizes)
    with pytest.raises(IndexCapacityError, match=r"items > .*IndexCapacity\.for_catalogue"):
        build_index(too_big, codebook_sizes=sizes, capacity=capacity)
    with pytest.raises(ValueError, match="already padded"):
        pad_index(build_index(base, capacity=capacity), capacity)
    with pytest.raises(ValueError, match="headroom"):
        need.with_headroom(0.9)


def test_padded_index_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    codes = random_catalogue(rng, 60, (6, 6, 6))
    index = build_index(codes, rng.permutation(60), token_offsets=(2, 8, 14),
                        capacity=IndexCapacity.for_catalogue(codes, headroom=1.5))
    path = tmp_path / "padded.npz"
    index.save(path)
    loaded = TrieIndex.load(path)
    assert loaded.capacity == index.capacity and loaded.max_branch == index.max_branch
    assert _signature(loaded) == _signature(index)
    for name, array in index._arrays().items():
        np.testing.assert_array_equal(getattr(loaded, name), array)
        assert getattr(loaded, name).dtype == array.dtype
    with np.load(path) as npz:
        assert int(npz["__version__"]) == 2
    build_index(codes).save(tmp_path / "exact.npz")
    with np.load(tmp_path / "exact.npz") as npz:  # exact indexes keep the format older readers load
        assert int(npz["__version__"]) == 1
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 32):
        raw[i] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(IndexFileError, match="bad.npz"):
        TrieIndex.load(tmp_path / "bad.npz")


# ---------------------------------------------------------------- the recommender


@pytest.fixture(scope="module")
def catalogues():
    """Catalogue A (the synthetic one) and B: A less 10 retired items plus 8 new ones, within A's capacity."""
    data = make_synthetic_dataset(num_items=60, num_users=20, num_levels=3, codebook_size=8, seed=3)
    rng = np.random.default_rng(0)
    kept = np.setdiff1d(np.arange(data.num_items), np.arange(3, data.num_items, 6))
    new_codes = rng.integers(0, 8, (8, 3)).astype(data.sid_codes.dtype)
    codes_b = np.concatenate([data.sid_codes[kept], new_codes])
    ids_b = np.concatenate([data.item_ids[kept], [f"new-{i}" for i in range(8)]])
    capacity = IndexCapacity.for_catalogue(data.sid_codes, headroom=1.25, codebook_sizes=data.vocab.codebook_sizes)
    assert capacity.covers(IndexCapacity.for_catalogue(codes_b, headroom=1.0))  # the update fits
    config = ModelConfig.tiny(data.vocab.vocab_size, data.num_levels, num_encoder_layers=1, num_decoder_layers=1)
    model = build_model(config, rngs=nnx.Rngs(0))
    return data, model, capacity, codes_b, ids_b


def _histories(item_ids, rng, num=6):
    return [list(rng.choice(item_ids, size=n, replace=False)) for n in rng.integers(0, 6, num)]


@contextlib.contextmanager
def _count_compiles():
    """Counts new programs of the decode (its jit cache) and every JAX trace in the block."""
    counts = {"traces": 0}

    def listener(event, seconds, **kwargs):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            counts["traces"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    before = decode_batch._cache_size()
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
        counts["decode"] = decode_batch._cache_size() - before


def _assert_same(out, expected):
    for name in ("item_ids", "item_rows", "scores", "valid"):
        np.testing.assert_array_equal(getattr(out, name), getattr(expected, name))


def test_update_within_capacity_compiles_nothing_and_equals_a_fresh_recommender(catalogues):
    data, model, capacity, codes_b, ids_b = catalogues
    rec = Recommender(model, data.vocab, data.sid_codes, data.item_ids, capacity=capacity, **SETTINGS)
    histories_b = _histories(ids_b, np.random.default_rng(1))
    rec.recommend(_histories(data.item_ids, np.random.default_rng(2)), top_k=TOP_K)  # compiled here
    with _count_compiles() as compiles:
        assert rec.update_catalogue(codes_b, ids_b)
        out = rec.recommend(histories_b, top_k=TOP_K)
    assert compiles == {"decode": 0, "traces": 0}
    assert rec.num_items == len(ids_b) and rec.capacity == capacity
    assert set(out.item_ids[out.valid].tolist()) <= set(ids_b.tolist())
    fresh = Recommender(model, data.vocab, codes_b, ids_b, capacity=capacity, **SETTINGS)
    _assert_same(out, fresh.recommend(histories_b, top_k=TOP_K))
    exact = Recommender(model, data.vocab, codes_b, ids_b, **SETTINGS)  # default: exact shapes
    expected = exact.recommend(histories_b, top_k=TOP_K)
    np.testing.assert_array_equal(out.item_ids, expected.item_ids)
    np.testing.assert_allclose(out.scores, expected.scores, rtol=0, atol=1e-5)


def test_a_request_in_flight_sees_one_catalogue(catalogues, monkeypatch):
    data, model, capacity, codes_b, ids_b = catalogues
    rec = Recommender(model, data.vocab, data.sid_codes, data.item_ids, capacity=capacity, **SETTINGS)
    # Histories of items in both catalogues, whose rows differ between them.
    histories = _histories(np.intersect1d(data.item_ids, ids_b), np.random.default_rng(3))
    expected_a = rec.recommend(histories, top_k=TOP_K)
    expected_b = Recommender(model, data.vocab, codes_b, ids_b, capacity=capacity,
                             **SETTINGS).recommend(histories, top_k=TOP_K)
    assert not np.array_equal(expected_a.item_ids, expected_b.item_ids)  # a mix would show

    in_decode, release = threading.Event(), threading.Event()
    real_decode = decode_batch

    def paused_decode(*args, **kwargs):  # the request stops inside its decode until the swap is done
        in_decode.set()
        assert release.wait(timeout=60)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr("serving.recommender.decode_batch", paused_decode)
    results = {}
    thread = threading.Thread(target=lambda: results.update(out=rec.recommend(histories, top_k=TOP_K)))
    thread.start()
    assert in_decode.wait(timeout=60)
    rec.update_catalogue(codes_b, ids_b)
    release.set()
    thread.join(timeout=60)
    _assert_same(results["out"], expected_a)
    _assert_same(rec.recommend(histories, top_k=TOP_K), expected_b)


def test_exceeding_the_capacity_rebuilds_with_one_log_line(catalogues, caplog):
    data, model, capacity, _, _ = catalogues
    small = np.arange(0, data.num_items, 2)  # half of A, at exact shapes (no headroom)
    exact_small = IndexCapacity.for_catalogue(data.sid_codes[small], headroom=1.0)
    rec = Recommender(model, data.vocab, data.sid_codes[small], data.item_ids[small], capacity=exact_small,
                      **SETTINGS)
    with caplog.at_level(logging.INFO, logger="serving.recommender"):
        assert not rec.update_catalogue(data.sid_codes, data.item_ids)  # all of A: more than the capacity
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING
    assert "exceeds the index capacity" in caplog.text and "recompile" in caplog.text
    # Grown to cover A with the default headroom (1.25): A's own capacity, nothing truncated.
    assert rec.capacity == capacity and rec.num_items == data.num_items
    allow = np.random.default_rng(5).random((4, data.num_items)) < 0.5
    histories = _histories(data.item_ids, np.random.default_rng(4), num=4)
    out = rec.recommend(histories, top_k=TOP_K, allow_mask=allow)
    fresh = Recommender(model, data.vocab, data.sid_codes, data.item_ids, capacity=capacity, **SETTINGS)
    _assert_same(out, fresh.recommend(histories, top_k=TOP_K, allow_mask=allow))
    assert out.valid.all() and all(allow[r, out.item_rows[r]].all() for r in range(4))


def test_the_batch_job_serves_one_catalogue_and_refuses_to_resume_over_another(catalogues, tmp_path):
    data, model, capacity, codes_b, ids_b = catalogues
    rec = Recommender(model, data.vocab, data.sid_codes, data.item_ids, capacity=capacity, **SETTINGS)
    snapshot = rec.snapshot()
    rec.update_catalogue(codes_b, ids_b)
    assert snapshot.num_items == data.num_items and rec.num_items == len(ids_b)
    first = run_batch_job(snapshot, data, tmp_path, top_k=TOP_K, users_per_shard=4, max_shards=1, log=lambda _: None)
    assert first.shards_written == 1 and not first.finished
    with pytest.raises(ValueError, match="other settings \\(catalogue"):
        run_batch_job(rec, data, tmp_path, top_k=TOP_K, users_per_shard=4, skip_unknown=True, log=lambda _: None)
