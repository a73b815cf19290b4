"""serving/recommender.py: catalogue-only outputs, filters, exclude_seen,
batching invariance, and the documented edge cases, with a tiny random model."""

import numpy as np
import pytest
from flax import nnx

from genrec.models import ModelConfig, build_model
from genrec.synthetic import make_synthetic_dataset
from genrec.vocab import SIDVocabulary
from serving.recommender import Recommender

TOP_K = 8


@pytest.fixture(scope="module")
def data():
    return make_synthetic_dataset(num_items=60, num_users=30, num_levels=3, codebook_size=4, seed=3)


@pytest.fixture(scope="module")
def model(data):
    config = ModelConfig.tiny(data.vocab.vocab_size, data.num_levels, num_encoder_layers=1, num_decoder_layers=1)
    return build_model(config, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def recommender(data, model):
    return Recommender(model, data.vocab, data.sid_codes, data.item_ids, num_beams=10, batch_size=8, max_history=6)


def _histories(data, num=5):
    return [[data.item_ids[r] for r in seq[:-1]] for seq in data.sequences[:num]]


def test_returns_catalogue_items_best_first(data, recommender):
    out = recommender.recommend(_histories(data, 11), top_k=TOP_K)  # 11 requests: chunks of 8 and 3
    assert out.item_ids.shape == out.scores.shape == out.valid.shape == (11, TOP_K)
    assert out.valid.all()
    np.testing.assert_array_equal(out.item_ids, data.item_ids[out.item_rows])
    assert np.isin(out.item_ids, data.item_ids).all()
    assert np.all(np.diff(out.scores, axis=1) <= 0)
    assert all(len(set(row)) == TOP_K for row in out.item_ids.tolist())
    assert [item for item, _ in out.for_request(0)] == out.item_ids[0].tolist()


def test_batch_equals_single_calls(data, recommender):
    histories = _histories(data, 5)
    batch = recommender.recommend(histories, top_k=TOP_K)
    for i, history in enumerate(histories):
        single = recommender.recommend([history], top_k=TOP_K)
        np.testing.assert_array_equal(single.item_ids[0], batch.item_ids[i])
        np.testing.assert_allclose(single.scores[0], batch.scores[i], atol=1e-5)


def test_allow_mask_is_respected(data, recommender):
    rng = np.random.default_rng(0)
    allow = rng.random((5, data.num_items)) < 0.3
    allow[4] = False
    allow[4, [3, 17]] = True  # fewer allowed items than top_k
    out = recommender.recommend(_histories(data, 5), top_k=TOP_K, allow_mask=allow)
    for i in range(5):
        rows = out.item_rows[i][out.valid[i]]
        assert allow[i, rows].all()
        assert len(rows) == min(TOP_K, int(allow[i].sum()))
    assert sorted(out.item_rows[4][:2].tolist()) == [3, 17]
    assert out.item_ids[4, 2:].tolist() == [""] * (TOP_K - 2)
    assert np.all(np.isneginf(out.scores[4, 2:]))


def test_exclude_seen_never_returns_history_items(data, recommender):
    # Full sequences (up to 30 items) are longer than max_history=6: items seen before
    # the truncation point must be excluded too.
    histories = [[data.item_ids[r] for r in seq] for seq in data.sequences[:10]]
    unfiltered = recommender.recommend(histories, top_k=TOP_K)
    out = recommender.recommend(histories, top_k=TOP_K, exclude_seen=True)
    hit_before = 0
    for i, history in enumerate(histories):
        assert not set(out.item_ids[i].tolist()) & set(history)
        assert out.valid[i].all()
        hit_before += len(set(unfiltered.item_ids[i].tolist()) & set(history))
    assert hit_before > 0  # the filter had something to remove
    # Combined with an allow mask (the dense path) the same holds.
    allow = np.ones((10, data.num_items), bool)
    allow[:, :10] = False
    both = recommender.recommend(histories, top_k=TOP_K, exclude_seen=True, allow_mask=allow)
    for i, history in enumerate(histories):
        assert not set(both.item_ids[i].tolist()) & set(history)
        assert (both.item_rows[i] >= 10).all()


def test_history_is_truncated_to_max_history(data, recommender):
    long_history = [data.item_ids[r] for r in data.sequences[0]]
    assert len(long_history) > recommender.max_history
    full = recommender.recommend([long_history], top_k=TOP_K)
    recent = recommender.recommend([long_history[-recommender.max_history:]], top_k=TOP_K)
    np.testing.assert_array_equal(full.item_ids, recent.item_ids)


def test_unknown_ids_error_or_skip(data, recommender):
    history = _histories(data, 1)[0]
    with pytest.raises(KeyError, match="'no-such-item'.*request 1.*on_unknown='skip'"):
        recommender.recommend([history, history + ["no-such-item"]])
    skipped = recommender.recommend([history + ["no-such-item"]], on_unknown="skip", top_k=TOP_K)
    plain = recommender.recommend([history], top_k=TOP_K)
    np.testing.assert_array_equal(skipped.item_ids, plain.item_ids)
    # Integer ids are compared as strings, like the dataset loader does.
    as_ints = recommender.recommend([[int(i) for i in history]], top_k=TOP_K)
    np.testing.assert_array_equal(as_ints.item_ids, plain.item_ids)


def test_empty_history_gives_cold_start_ranking(data, recommender):
    out = recommender.recommend([[], _histories(data, 1)[0], []], top_k=TOP_K)
    assert out.valid.all()
    np.testing.assert_array_equal(out.item_ids[0], out.item_ids[2])
    only_unknown = recommender.recommend([["nope"]], on_unknown="skip", top_k=TOP_K)
    np.testing.assert_array_equal(only_unknown.item_ids[0], out.item_ids[0])


@pytest.fixture(scope="module")
def small(model):
    """4 items, 3 SIDs ('a' and 'd' share one), 4 beams: every SID is always in the beam."""
    vocab = SIDVocabulary((4, 4, 4))
    sid_codes = np.array([[0, 0, 0], [1, 2, 3], [2, 1, 0], [0, 0, 0]])
    return Recommender(model, vocab, sid_codes, np.array(["a", "b", "c", "d"]), num_beams=4,
                       batch_size=2, max_history=4)


def test_top_k_limits(small):
    with pytest.raises(ValueError, match="num_beams >= 5"):
        small.recommend([[]], top_k=5)
    # 3 distinct SIDs for 4 slots: the last slot is invalid.
    out = small.recommend([["b"]], top_k=4)
    assert out.valid.tolist() == [[True, True, True, False]]
    assert out.item_rows[0, 3] == -1 and out.item_ids[0, 3] == "" and np.isneginf(out.scores[0, 3])


def test_shared_sid_fills_one_slot_with_an_allowed_member(small):
    assert small.num_sids == 3
    plain, seen_a, seen_both = (
        small.recommend([["b"]], top_k=4),
        small.recommend([["a"]], top_k=4, exclude_seen=True),
        small.recommend([["a", "d"]], top_k=4, exclude_seen=True),
    )
    assert sorted(plain.item_ids[0, :3].tolist()) == ["a", "b", "c"]  # first member in catalogue order
    assert sorted(seen_a.item_ids[0, :3].tolist()) == ["b", "c", "d"]
    assert sorted(seen_both.item_ids[0, :2].tolist()) == ["b", "c"] and seen_both.valid.sum() == 2
    allow = np.array([[False, True, True, True], [True, True, False, False]])
    allowed = small.recommend([["b"], ["b", "c"]], top_k=4, allow_mask=allow)
    assert sorted(allowed.item_ids[0, :3].tolist()) == ["b", "c", "d"]
    # Allow mask and exclude_seen together: 'a' seen, 'c' and 'd' not allowed.
    both = small.recommend([["a"]], top_k=4, allow_mask=np.array([[True, True, False, False]]), exclude_seen=True)
    assert both.item_ids[0, :1].tolist() == ["b"] and both.valid.sum() == 1


def test_input_validation(data, model, recommender):
    with pytest.raises(ValueError, match="allow_mask has shape"):
        recommender.recommend([[]], allow_mask=np.ones((2, data.num_items), bool))
    with pytest.raises(ValueError, match="vocabulary saved with the model"):
        Recommender(model, SIDVocabulary((5, 4, 4)), data.sid_codes, data.item_ids)
    with pytest.raises(ValueError, match="repeated ids"):
        Recommender(model, data.vocab, data.sid_codes[:2], np.array(["x", "x"]))


def test_from_workdir(tmp_path, data, model, recommender):
    """A workdir written by the checkpoint module loads back into the same recommendations."""
    from training.checkpoint import Checkpointer, TrainingProgress, write_run_files
    from training.config import CheckpointConfig, DataConfig, TrainConfig

    config = TrainConfig(data=DataConfig(max_history=6))
    write_run_files(tmp_path, config, model.config, data.vocab, data.sid_codes, data.item_ids)
    checkpointer = Checkpointer(tmp_path, CheckpointConfig(async_save=False))
    checkpointer.save_best(nnx.state(model, nnx.Param), TrainingProgress(step=1, data_step=1, rng_key=(0, 0)),
                           {"ndcg@10": 0.0})
    checkpointer.close()

    loaded = Recommender.from_workdir(tmp_path, num_beams=10, batch_size=8)
    assert loaded.max_history == 6
    assert loaded.normalization == "vocab"
    histories = _histories(data, 3)
    np.testing.assert_array_equal(loaded.recommend(histories).item_ids, recommender.recommend(histories).item_ids)


def test_from_workdir_of_an_msl_run_scores_over_trie_children(tmp_path, data, model):
    """An MSL-trained model is served with the softmax it was trained with."""
    from training.checkpoint import Checkpointer, TrainingProgress, write_run_files
    from training.config import CheckpointConfig, DataConfig, TrainConfig
    from training.losses import LossConfig

    config = TrainConfig(data=DataConfig(max_history=6), loss=LossConfig(kind="msl"))
    write_run_files(tmp_path, config, model.config, data.vocab, data.sid_codes, data.item_ids)
    checkpointer = Checkpointer(tmp_path, CheckpointConfig(async_save=False))
    checkpointer.save_best(nnx.state(model, nnx.Param), TrainingProgress(step=1, data_step=1, rng_key=(0, 0)),
                           {"ndcg@10": 0.0})
    checkpointer.close()
    loaded = Recommender.from_workdir(tmp_path, batch_size=8)
    assert loaded.normalization == "trie"
    assert Recommender.from_workdir(tmp_path, normalization="vocab").normalization == "vocab"


def test_trie_normalization_scores_form_a_distribution_over_distinct_sids(data, model):
    """With every distinct SID in the beam, trie-normalised probabilities sum to 1;
    whole-vocabulary ones sum to less (mass on tokens that are no valid child)."""
    histories = _histories(data, 3)
    sums = {}
    for normalization in ("trie", "vocab"):
        rec = Recommender(model, data.vocab, data.sid_codes, data.item_ids, num_beams=64, batch_size=4,
                          max_history=6, normalization=normalization)
        assert rec.num_sids <= 64
        out = rec.recommend(histories, top_k=rec.num_sids)
        # One row per distinct SID: items sharing a SID share its score, count it once.
        sid_scores = [{tuple(data.sid_codes[r]): s for r, s in zip(out.item_rows[i], out.scores[i])}
                      for i in range(len(histories))]
        sums[normalization] = np.array([np.exp(list(d.values())).sum() for d in sid_scores])
    np.testing.assert_allclose(sums["trie"], 1.0, rtol=1e-4)
    assert np.all(sums["vocab"] < 0.999)
    with pytest.raises(ValueError, match="normalization"):
        Recommender(model, data.vocab, data.sid_codes, data.item_ids, normalization="full")


def test_a_string_history_is_refused_and_no_requests_give_an_empty_result(data, recommender):
    # Seen: recommend(["1433"]) split the string into the items "1", "4", "3", "3".
    item = str(data.item_ids[0])
    for histories in ([item], item, [[item], item]):
        with pytest.raises(TypeError, match="a history must be a sequence of item ids, not a string"):
            recommender.recommend(histories)
    empty = recommender.recommend([], top_k=5)
    assert len(empty) == 0 and empty.item_ids.shape == (0, 5) and empty.valid.dtype == bool
    assert len(recommender.recommend([[]], top_k=5)) == 1  # an empty history is a cold-start request


def test_iterators_of_histories_and_item_lists_equal_lists(data, recommender):
    # Seen: a generator of histories gave 0 results (the string check used it up) and a generator of
    # exclude_items lists raised "object of type 'generator' has no len()".
    histories = [list(h) for h in _histories(data, num=4)]
    excluded = [h[-1:] for h in histories]
    want = recommender.recommend(histories, top_k=5, exclude_items=excluded)
    for make in (iter, lambda xs: (x for x in xs), lambda xs: map(list, xs)):
        got = recommender.recommend(make(histories), top_k=5, exclude_items=make(excluded))
        assert len(got) == len(histories)
        np.testing.assert_array_equal(got.item_ids, want.item_ids)
        np.testing.assert_array_equal(got.valid, want.valid)
    got = recommender.recommend(histories, top_k=5, allow_items=iter([h for h in histories]))
    np.testing.assert_array_equal(got.item_ids,
                                  recommender.recommend(histories, top_k=5, allow_items=histories).item_ids)
