"""Per-request item lists by id (serving/recommender.py, constrained/item_lists.py):
the sparse filter against a NumPy reference, exactness of the search, equivalence
to the dense allow_mask, every output within its lists, compiled shapes that
follow list buckets (not the catalogue), unknown ids."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from catalogues import random_catalogue
from flax import nnx
from test_beam_search import START, PrefixHashModel, assert_matches_reference

import serving.recommender as recommender_module
from constrained.beam_search import _make_target_filter, constrained_beam_search
from constrained.index import build_index
from constrained.reference import build_dict_trie, prune_trie, reference_beam_search, reference_listed_prefix
from genrec.models import ModelConfig, build_model
from genrec.synthetic import make_synthetic_dataset
from serving.recommender import Recommender

TOP_K = 8


def _random_lists(rng, batch, num_items, width):
    """int[batch, width] input rows with repeats and -1 padding; row 0 stays empty."""
    rows = np.full((batch, width), -1, np.int64)
    for b in range(1, batch):
        count = rng.integers(1, width + 1)
        rows[b, :count] = rng.integers(0, num_items, count)
    return rows


def test_list_filter_matches_numpy_reference():
    """keep() on every trie state and leaf equals "some listed, non-excluded item lies under the prefix"."""
    rng = np.random.default_rng(5)
    codes = random_catalogue(rng, 60, (4, 5, 3))
    index = build_index(codes)
    batch, num_items = 5, len(codes)
    allow, exclude = _random_lists(rng, batch, num_items, 6), _random_lists(rng, batch, num_items, 9)
    exclude[2, :] = -1
    # Per level: the targets (trie states; sorted item rows at the last level) and their prefixes.
    levels = []
    for level in range(index.num_levels - 1):
        states = np.arange(index.level_state_start[level + 1], index.level_state_start[level + 2])
        levels.append((states, index.sorted_codes[index.state_row_lo[states], : level + 1]))
    levels.append((np.arange(num_items), index.sorted_codes))

    @jax.jit
    def keep_all(device_index, allow_rows, exclude_rows):
        keep = _make_target_filter(device_index, None, exclude_rows, allow_rows=allow_rows)
        return [keep(jnp.broadcast_to(targets, (batch, len(targets))), level == len(levels) - 1)
                for level, (targets, _) in enumerate(levels)]

    kept = keep_all(index.to_device(), jnp.asarray(allow, jnp.int32), jnp.asarray(exclude, jnp.int32))
    for level, ((_, prefixes), level_kept) in enumerate(zip(levels, kept)):
        for b in range(batch):
            expected = [reference_listed_prefix(codes, p, allow_rows=allow[b], exclude_rows=exclude[b])
                        for p in prefixes]
            np.testing.assert_array_equal(np.asarray(level_kept[b]), expected, err_msg=f"level {level}, request {b}")


def test_allow_lists_search_equals_search_over_allowed_subcatalogue():
    """The beam search with allow_rows (+ exclude_rows) is exact: it equals the oracle on the pruned trie."""
    rng = np.random.default_rng(11)
    sizes, batch, num_beams = (4, 5, 3), 4, 6
    codes = random_catalogue(rng, 50, sizes)
    n = len(codes)
    item_ids = np.arange(500, 500 + n)
    index = build_index(codes, item_ids, dense_depth=2)
    model = PrefixHashModel(rng, batch, len(sizes), max(sizes))
    allow = _random_lists(rng, batch, n, 12)  # request 0: no allow list = no constraint
    allow[3, :3] = [7, 8, 9]  # fewer allowed items than beams
    exclude = _random_lists(rng, batch, n, 4)
    decode = jax.jit(functools.partial(constrained_beam_search, step_fn=model.step, num_beams=num_beams,
                                       start_token=START))
    out = decode(index.to_device(), shared={"table": jnp.asarray(model.table)},
                 beam_cache={"hash": jnp.zeros((batch, num_beams), jnp.int32)},
                 allow_rows=jnp.asarray(allow, jnp.int32), exclude_rows=jnp.asarray(exclude, jnp.int32))
    out = jax.tree_util.tree_map(np.asarray, out)
    trie = build_dict_trie(codes, item_ids)
    for b in range(batch):
        listed = allow[b][allow[b] >= 0]
        remaining = set(listed.tolist() if listed.size else range(n)) - set(exclude[b].tolist())
        allowed = set(item_ids[sorted(remaining)].tolist())
        assert set(out.item_ids[b][out.valid[b]].tolist()) <= allowed
        ref = reference_beam_search(prune_trie(trie, allowed), model.logits_fn(b, (0, 0, 0)),
                                    num_levels=3, num_beams=num_beams, token_offsets=(0, 0, 0))
        assert_matches_reference(out, b, ref)


# ---------------------------------------------------------------- Recommender


@pytest.fixture(scope="module")
def data():
    return make_synthetic_dataset(num_items=60, num_users=20, num_levels=3, codebook_size=4, seed=3)


@pytest.fixture(scope="module")
def rec(data):
    """Items 5 and 11 share item 6's SID (a shared SID whose first member is 5)."""
    config = ModelConfig.tiny(data.vocab.vocab_size, data.num_levels, num_encoder_layers=1, num_decoder_layers=1)
    sid_codes = data.sid_codes.copy()
    sid_codes[[5, 11]] = sid_codes[6]
    return Recommender(build_model(config, rngs=nnx.Rngs(0)), data.vocab, sid_codes, data.item_ids,
                       num_beams=10, batch_size=4, max_history=6)


def _histories(data, num):
    return [[data.item_ids[r] for r in seq[:-1]] for seq in data.sequences[:num]]


def _dense_mask(num_items, histories_rows, allow_rows, exclude_rows):
    """The allow_mask equivalent to per-request lists with exclude_seen."""
    mask = np.ones((len(histories_rows), num_items), bool)
    for i, (seen, allow, exclude) in enumerate(zip(histories_rows, allow_rows, exclude_rows)):
        if allow:  # None or empty: no constraint
            mask[i] = np.isin(np.arange(num_items), allow)
        mask[i, seen] = False
        mask[i, exclude or []] = False
    return mask


def test_item_lists_equal_the_dense_allow_mask_and_are_respected(data, rec):
    rng = np.random.default_rng(2)
    histories = _histories(data, 7)  # chunks of 4 and 3
    ids = data.item_ids
    allow_rows = [None, [], rng.choice(60, 3, replace=False).tolist(), [11], rng.choice(60, 40).tolist(),
                  [5, 6, 11, 3], rng.choice(60, 12, replace=False).tolist()]
    exclude_rows = [rng.choice(60, 5).tolist(), None, [], [6], [], [6, 5], rng.choice(60, 30).tolist()]
    as_ids = [[None if rows is None else [ids[r] for r in rows] for rows in lists]
              for lists in (allow_rows, exclude_rows)]
    out = rec.recommend(histories, top_k=TOP_K, exclude_seen=True, allow_items=as_ids[0], exclude_items=as_ids[1])
    seen = [rec.item_rows(h) for h in histories]
    dense = rec.recommend(histories, top_k=TOP_K, allow_mask=_dense_mask(60, seen, allow_rows, exclude_rows))
    np.testing.assert_array_equal(out.item_rows, dense.item_rows)
    np.testing.assert_allclose(out.scores, dense.scores, atol=1e-5)
    for i in range(len(histories)):
        returned = out.item_rows[i][out.valid[i]]
        if allow_rows[i]:
            assert np.isin(returned, allow_rows[i]).all()
        assert not np.isin(returned, seen[i]).any() and not np.isin(returned, exclude_rows[i] or []).any()
    assert out.valid[0].all() and out.valid[1].all()
    assert out.item_rows[3, 0] == 11 and out.valid[3].sum() == 1  # a shared SID shows its listed member
    assert set(out.item_rows[5][out.valid[5]].tolist()) <= {11, 3}  # 5 and 6 excluded, 11 keeps the SID
    # The row-level twin gives the same.
    by_rows = rec.recommend_rows(seen, top_k=TOP_K, exclude_seen=True, allow_rows=allow_rows, exclude_rows=exclude_rows)
    np.testing.assert_array_equal(by_rows.item_rows, out.item_rows)


def test_allow_list_with_fewer_items_than_top_k_leaves_invalid_slots(data, rec):
    """As with allow_mask: the allowed items first, then valid=False, score -inf, id "" in every other slot;
    a list whose ids are all excluded or unknown allows nothing."""
    history = _histories(data, 1)[0]
    ids = data.item_ids
    out = rec.recommend([history, history, history], top_k=TOP_K, on_unknown="skip", exclude_seen=True,
                        allow_items=[[ids[17], ids[3]], [ids[17]], ["no-such-item"]],
                        exclude_items=[None, [ids[17]], None])
    assert sorted(out.item_rows[0, :2].tolist()) == [3, 17] and out.valid[0].tolist() == [True] * 2 + [False] * 6
    assert out.item_ids[0, 2:].tolist() == [""] * (TOP_K - 2) and np.isneginf(out.scores[0, 2:]).all()
    assert (out.item_rows[1:] == -1).all() and not out.valid[1:].any() and np.isneginf(out.scores[1:]).all()


def test_list_shapes_follow_the_bucket_not_the_catalogue(data, rec, monkeypatch):
    """Lists of 3 and 40 ids share one bucket (64 wide) and one compile; so do dense masks of other values.
    (exclude_seen=True: the program the other tests compile.)"""
    widths = []
    real_decode = recommender_module.decode_batch

    def spy(*args, **kwargs):
        widths.append(None if args[7] is None else args[7].shape)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(recommender_module, "decode_batch", spy)
    rng = np.random.default_rng(4)
    histories = _histories(data, 2)
    ids = data.item_ids
    rec.recommend(histories, top_k=TOP_K, exclude_seen=True, allow_items=[[ids[0], ids[1], ids[2]], None])
    compiled = real_decode._cache_size()
    rec.recommend(histories, top_k=TOP_K, exclude_seen=True, allow_items=[list(rng.choice(ids, 40)), [ids[9]]])
    assert widths == [(rec.batch_size, 64)] * 2
    assert real_decode._cache_size() == compiled
    rec.recommend(histories, top_k=TOP_K, allow_mask=rng.random((2, 60)) < 0.5)
    compiled = real_decode._cache_size()
    rec.recommend(histories, top_k=TOP_K, allow_mask=rng.random((2, 60)) < 0.1)
    assert real_decode._cache_size() == compiled


def test_unknown_ids_and_malformed_lists(data, rec):
    history = _histories(data, 1)[0]
    known_row = next(r for r in range(60) if data.item_ids[r] not in history)
    known = data.item_ids[known_row]
    for kind in ("allow_items", "exclude_items"):
        with pytest.raises(ValueError, match=f"^{kind} of request 1: item id 'nope' is not in .*on_unknown='skip'"):
            rec.recommend([history, history], **{kind: [[known], [known, "nope"]]})
        with pytest.raises(ValueError, match=f"{kind} has 1 lists for 2 requests"):
            rec.recommend([history, history], **{kind: [[known]]})
        with pytest.raises(TypeError, match=f"{kind}\\[0\\] is the string"):
            rec.recommend([history], **{kind: [known]})
    skipped = rec.recommend([history], top_k=TOP_K, on_unknown="skip", exclude_seen=True,
                            allow_items=[[known, "nope"]], exclude_items=[["nope"]])
    plain = rec.recommend([history], top_k=TOP_K, allow_items=[[known]], exclude_seen=True)
    np.testing.assert_array_equal(skipped.item_rows, plain.item_rows)
    assert skipped.item_rows[0, 0] == known_row and skipped.valid.sum() == 1
    with pytest.raises(ValueError, match="allow_mask and allow_items are both given"):
        rec.recommend([history], allow_mask=np.ones((1, 60), bool), allow_items=[[known]])
    with pytest.raises(ValueError, match="allow_rows of request 0: item row 60 is outside the catalogue of 60"):
        rec.recommend_rows([[1]], allow_rows=[[60]])
