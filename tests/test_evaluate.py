"""training/evaluate.py (with constrained/decode.py, training/ranking.py and
training/diagnostics.py): metric math by hand, the SID-level collision policy,
and the whole loop through the constrained beam search with an oracle model
(all probability on the right SID) and a real tiny model."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from constrained.decode import build_eval_index, history_tokens
from genrec.datasets import InteractionData
from genrec.models import ModelConfig, build_model
from genrec.split import SplitArrays, leave_one_out_split
from genrec.synthetic import make_synthetic_dataset
from genrec.vocab import BOS_ID, SIDVocabulary
from training.evaluate import evaluate_split, popularity_baseline, validation_ce
from training.ranking import hit_ranks, ranking_metrics


class RepeatLastItemOracle(nnx.Module):
    """Puts (almost) all probability on the SID of the last history item.

    ``offset_items`` shifts the prediction to another SID: with a catalogue
    whose rows are listed in a known order, predicting "last item + offset"
    lets a test choose between hits and misses.
    """

    def __init__(self, vocab_size: int, num_levels: int):
        self.vocab_size = vocab_size
        self.num_levels = num_levels
        self.boost = nnx.Param(jnp.asarray(30.0))  # a weight, so it goes through nnx.split

    def encode(self, history_tokens, history_mask):
        return history_tokens[:, -self.num_levels:]  # tokens of the most recent item [B, L]

    def init_beam_cache(self, shared, num_beams):
        return jnp.zeros((shared.shape[0], num_beams), jnp.int32)

    def decode_step(self, shared, beam_cache, last_tokens, step):
        logits = jax.nn.one_hot(shared[:, step], self.vocab_size) * self.boost[...]
        return jnp.broadcast_to(logits[:, None, :], last_tokens.shape + (self.vocab_size,)), beam_cache


def _toy_data(sid_codes, codebook_sizes):
    sid_codes = np.asarray(sid_codes, np.int32)
    return InteractionData(
        item_ids=np.array([f"item{r}" for r in range(len(sid_codes))]),
        sid_codes=sid_codes,
        vocab=SIDVocabulary(tuple(codebook_sizes)),
        user_ids=["u0"],
        sequences=[np.arange(3, dtype=np.int32)],
        name="toy",
    )


def test_ranking_metrics_match_hand_computation():
    ranks = np.array([1, 3, 0, 12, 5])
    metrics = ranking_metrics(ranks, ks=(5, 10, 20))
    assert metrics["recall@5"] == pytest.approx(3 / 5)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / 2 + 1 / math.log2(6)) / 5)
    assert metrics["recall@10"] == pytest.approx(3 / 5)
    assert metrics["recall@20"] == pytest.approx(4 / 5)
    assert metrics["ndcg@20"] == pytest.approx((1 + 1 / 2 + 1 / math.log2(6) + 1 / math.log2(13)) / 5)
    assert metrics["num_examples"] == 5


def test_hit_ranks_first_valid_match():
    beam_codes = np.array([
        [[0, 1], [2, 3], [4, 5]],
        [[0, 1], [2, 3], [4, 5]],
        [[9, 9], [-1, -1], [-1, -1]],
    ])
    valid = np.array([[True] * 3, [True, False, False], [True, False, False]])
    targets = np.array([[4, 5], [2, 3], [-1, -1]])
    # Row 1's match sits in an invalid slot; row 2's target equals the invalid padding codes.
    np.testing.assert_array_equal(hit_ranks(beam_codes, valid, targets), [3, 0, 0])


def test_popularity_baseline_by_hand():
    sid_codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    train_targets = np.array([2, 2, 2, 1, 1, 3])  # SID ranking: item 2, item 1, item 3, item 0
    metrics = popularity_baseline(sid_codes, train_targets, np.array([1, 0, 2]), ks=(1, 3))
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["recall@3"] == pytest.approx(2 / 3)
    assert metrics["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1) / 3)


def test_build_eval_index_keeps_distinct_sids():
    sid_codes = np.array([[1, 2], [0, 3], [1, 2], [0, 0]])
    index, sid_row_of_item = build_eval_index(sid_codes, SIDVocabulary((2, 4)))
    assert index.num_items == 3
    # Distinct SIDs in lexicographic order: (0,0) (0,3) (1,2).
    np.testing.assert_array_equal(sid_row_of_item, [2, 1, 2, 0])
    assert index.token_offsets == (2, 4)


def test_history_tokens_left_padding():
    item_tokens = np.array([[2, 5], [3, 6]], np.int32)
    tokens, mask = history_tokens(np.array([[-1, 1, 0], [-1, -1, -1]]), item_tokens)
    np.testing.assert_array_equal(tokens, [[0, 0, 3, 6, 2, 5], [0] * 6])
    np.testing.assert_array_equal(mask, [[False, False, True, True, True, True], [False] * 6])


def _oracle_setup(num_examples=7):
    codebook_sizes = (4, 4, 4)
    rng = np.random.default_rng(0)
    flat = rng.choice(64, size=20, replace=False)
    sid_codes = np.stack(np.unravel_index(flat, codebook_sizes), axis=1)
    data = _toy_data(sid_codes, codebook_sizes)
    histories = rng.integers(0, 20, size=(num_examples, 4)).astype(np.int32)
    histories[0, :3] = -1  # one history of a single item
    return data, histories


def test_oracle_gets_perfect_scores_with_padded_last_batch():
    data, histories = _oracle_setup()
    split = SplitArrays(histories=histories, targets=histories[:, -1].copy(),
                        user_rows=np.zeros(len(histories), np.int32))
    index, _ = build_eval_index(data.sid_codes, data.vocab)
    oracle = RepeatLastItemOracle(data.vocab.vocab_size, data.num_levels)
    result = evaluate_split(oracle, index, data, split, num_beams=5, batch_size=3, ks=(1, 5))
    assert result.metrics == {"recall@1": 1.0, "ndcg@1": 1.0, "recall@5": 1.0, "ndcg@5": 1.0, "num_examples": 7.0}
    np.testing.assert_array_equal(result.ranks, np.ones(7))  # every target first, the padded rows dropped
    assert result.prefix_ranks is None

    # Targets that are never the predicted SID: no hits at all.
    wrong = SplitArrays(histories=histories, targets=(histories[:, -1] + 1) % 20,
                        user_rows=split.user_rows)
    result = evaluate_split(oracle, index, data, wrong, num_beams=5, batch_size=3, ks=(1,))
    assert result.metrics["recall@1"] == 0.0 and result.metrics["ndcg@1"] == 0.0
    assert not (result.ranks == 1).any()

    # max_examples takes the first examples only.
    first_two = evaluate_split(oracle, index, data, split, num_beams=5, ks=(1,), max_examples=2)
    assert first_two.metrics["num_examples"] == 2 and first_two.ranks.shape == (2,)


def test_colliding_sids_count_as_hits():
    """Items 0 and 1 share a SID: predicting item 0's SID is a hit for target item 1."""
    sid_codes = np.array([[0, 1], [0, 1], [1, 0], [1, 1]])
    data = _toy_data(sid_codes, (2, 2))
    split = SplitArrays(histories=np.array([[2, 0], [3, 1]], np.int32), targets=np.array([1, 0], np.int32),
                        user_rows=np.zeros(2, np.int32))
    index, _ = build_eval_index(data.sid_codes, data.vocab)
    oracle = RepeatLastItemOracle(data.vocab.vocab_size, data.num_levels)
    metrics = evaluate_split(oracle, index, data, split, num_beams=3, ks=(1,)).metrics
    assert metrics["recall@1"] == 1.0


def test_unconstrained_diagnosis():
    data, histories = _oracle_setup()
    split = SplitArrays(histories=histories, targets=histories[:, -1].copy(),
                        user_rows=np.zeros(len(histories), np.int32))
    oracle = RepeatLastItemOracle(data.vocab.vocab_size, data.num_levels)
    index, _ = build_eval_index(data.sid_codes, data.vocab)
    # 20 of 64 SIDs exist: at most 20 of the free beam's 30 SIDs can be in the catalogue,
    # and the top one (the oracle's pick) always is.
    metrics = evaluate_split(oracle, index, data, split, num_beams=30, ks=(1,), diagnose_unconstrained=True).metrics
    assert 1 / 30 <= metrics["unconstrained_valid_fraction"] <= 20 / 30

    # Every code combination is an item: the free beam never leaves the catalogue.
    full_codes = np.stack(np.unravel_index(np.arange(8), (2, 2, 2)), axis=1)
    full = _toy_data(full_codes, (2, 2, 2))
    full_split = SplitArrays(histories=np.array([[0, 5], [-1, 3]], np.int32), targets=np.array([5, 3], np.int32),
                             user_rows=np.zeros(2, np.int32))
    full_index, _ = build_eval_index(full.sid_codes, full.vocab)
    metrics = evaluate_split(RepeatLastItemOracle(full.vocab.vocab_size, 3), full_index, full, full_split,
                             num_beams=6, ks=(1,), diagnose_unconstrained=True).metrics
    assert metrics["unconstrained_valid_fraction"] == 1.0
    assert metrics["recall@1"] == 1.0


def test_real_model_runs_and_metrics_are_consistent():
    data = make_synthetic_dataset(num_items=60, num_users=40, num_levels=3, codebook_size=4, seed=1)
    split = leave_one_out_split(data.sequences, max_history=5)
    index, _ = build_eval_index(data.sid_codes, data.vocab)
    model = build_model(ModelConfig.tiny(data.vocab.vocab_size, data.num_levels), rngs=nnx.Rngs(0))
    metrics = evaluate_split(model, index, data, split.test, num_beams=10, batch_size=16, ks=(1, 5, 10)).metrics
    assert metrics["num_examples"] == 40
    assert metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@10"]
    for k in (1, 5, 10):
        assert 0.0 <= metrics[f"ndcg@{k}"] <= metrics[f"recall@{k}"]
    assert metrics["ndcg@1"] == metrics["recall@1"]


def test_cutoff_above_beam_width_is_rejected():
    data, histories = _oracle_setup()
    split = SplitArrays(histories=histories, targets=histories[:, -1].copy(),
                        user_rows=np.zeros(len(histories), np.int32))
    index, _ = build_eval_index(data.sid_codes, data.vocab)
    with pytest.raises(ValueError, match="raise num_beams"):
        evaluate_split(RepeatLastItemOracle(data.vocab.vocab_size, 3), index, data, split, num_beams=5, ks=(10,))


def test_validation_ce_is_the_mean_token_nll_and_ignores_batching():
    data = make_synthetic_dataset(num_items=60, num_users=23, num_levels=3, codebook_size=4, seed=2)
    split = leave_one_out_split(data.sequences, max_history=5)
    model = build_model(ModelConfig.tiny(data.vocab.vocab_size, data.num_levels), rngs=nnx.Rngs(1))
    item_tokens = data.vocab.codes_to_tokens(data.sid_codes)
    tokens, mask = history_tokens(np.asarray(split.valid.histories), item_tokens)
    targets = item_tokens[np.asarray(split.valid.targets)]
    logits = np.asarray(model(jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(targets)[:, None])[:, 0], np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    expected = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0].mean()
    for batch_size in (23, 7, 4):  # one batch, and padded last batches
        np.testing.assert_allclose(validation_ce(model, data, split.valid, batch_size=batch_size), expected, rtol=1e-5)
    first_ten = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[:10, :, 0].mean()
    np.testing.assert_allclose(validation_ce(model, data, split.valid, batch_size=4, max_examples=10), first_ten,
                               rtol=1e-5)


def test_prefix_survival_diagnosis_with_the_oracle():
    data, histories = _oracle_setup()
    oracle = RepeatLastItemOracle(data.vocab.vocab_size, data.num_levels)
    index, _ = build_eval_index(data.sid_codes, data.vocab)
    hit = SplitArrays(histories=histories, targets=histories[:, -1].copy(),
                      user_rows=np.zeros(len(histories), np.int32))
    metrics = evaluate_split(oracle, index, data, hit, num_beams=2, ks=(1,), diagnose_prefix_survival=True).metrics
    assert [metrics[f"prefix_in_beam@{t}"] for t in (1, 2, 3)] == [1.0, 1.0, 1.0]


def test_prefix_survival_is_monotone_and_matches_first_level_by_hand():
    data = make_synthetic_dataset(num_items=80, num_users=40, num_levels=3, codebook_size=6, seed=4)
    split = leave_one_out_split(data.sequences, max_history=5)
    index, _ = build_eval_index(data.sid_codes, data.vocab)
    model = build_model(ModelConfig.tiny(data.vocab.vocab_size, data.num_levels), rngs=nnx.Rngs(3))
    num_beams = 3
    result = evaluate_split(model, index, data, split.test, num_beams=num_beams, batch_size=16, ks=(1, 3),
                            diagnose_prefix_survival=True)
    metrics, prefix_ranks = result.metrics, result.prefix_ranks
    survival = [metrics[f"prefix_in_beam@{t}"] for t in (1, 2, 3)]
    assert survival[0] >= survival[1] >= survival[2] == metrics["recall@3"]
    # Per-example prefix ranks: row t-1 reproduces prefix_in_beam@t, the last row is the final rank.
    assert prefix_ranks.shape == (3, len(split.test.targets))
    assert [np.mean(prefix_ranks[t] > 0) for t in range(3)] == survival
    np.testing.assert_array_equal(prefix_ranks[-1], result.ranks)
    assert ((prefix_ranks >= 0) & (prefix_ranks <= num_beams)).all()

    # Level 1 by hand: the target's first code is among the top-3 valid first codes.
    item_tokens = data.vocab.codes_to_tokens(data.sid_codes)
    tokens, mask = history_tokens(np.asarray(split.test.histories), item_tokens)
    shared = model.encode(jnp.asarray(tokens), jnp.asarray(mask))
    logits, _ = model.decode_step(shared, model.init_beam_cache(shared, 1),
                                  jnp.full((len(tokens), 1), BOS_ID, jnp.int32), 0)
    offset, width = data.vocab.level_offsets[0], data.vocab.codebook_sizes[0]
    first_logits = np.array(logits[:, 0, offset:offset + width])
    valid_first = np.zeros(width, bool)
    valid_first[np.unique(data.sid_codes[:, 0])] = True
    first_logits[:, ~valid_first] = -np.inf
    top = np.argsort(-first_logits, axis=1, kind="stable")[:, :num_beams]
    target_first = data.sid_codes[np.asarray(split.test.targets), 0]
    assert survival[0] == pytest.approx(np.mean([t in row for t, row in zip(target_first, top)]))
    assert 0 < survival[0] < 1  # a real test: neither everything nor nothing survives
