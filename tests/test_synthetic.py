import time

import numpy as np
import pytest
from logging_state import kept_logging

from genrec.datasets import find_duplicate_sids, load_sid_dataset
from genrec.split import leave_one_out_split
from genrec.synthetic import main, make_synthetic_dataset, write_sid_dataset


def _same(a, b):
    return (
        np.array_equal(a.sid_codes, b.sid_codes)
        and len(a.sequences) == len(b.sequences)
        and all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    )


def test_deterministic_by_seed_and_fast():
    start = time.perf_counter()
    data = make_synthetic_dataset(seed=3)
    assert time.perf_counter() - start < 1.0
    assert _same(data, make_synthetic_dataset(seed=3))
    assert not _same(data, make_synthetic_dataset(seed=4))


def test_structure_unique_sids_and_lengths():
    data = make_synthetic_dataset(num_items=300, num_users=400, num_levels=3, codebook_size=8,
                                  num_clusters=6, min_length=5, max_length=12)
    assert find_duplicate_sids(data.sid_codes) == []
    assert data.vocab.codebook_sizes == (8, 8, 8)
    assert set(np.unique(data.sid_codes[:, 0])) == set(range(6))
    cluster_sizes = np.bincount(data.sid_codes[:, 0])
    assert cluster_sizes.max() - cluster_sizes.min() <= 1
    lengths = np.array([len(s) for s in data.sequences])
    assert lengths.min() >= 5 and lengths.max() <= 12
    assert all(s.min() >= 0 and s.max() < 300 for s in data.sequences)
    # Items are used with Zipf-skewed popularity: the top 10% of items take far
    # more than 10% of interactions.
    counts = np.sort(np.bincount(np.concatenate(data.sequences), minlength=300))[::-1]
    assert counts[:30].sum() > 0.2 * counts.sum()


def test_too_many_items_for_codebook_is_an_error():
    with pytest.raises(ValueError, match="unique SIDs"):
        make_synthetic_dataset(num_items=300, num_levels=2, codebook_size=16)


def test_markov_next_cluster_beats_popularity():
    """The data is learnable: last cluster predicts the next one far better than popularity."""
    data = make_synthetic_dataset(seed=0)
    split = leave_one_out_split(data.sequences)
    cluster_of_item = data.sid_codes[:, 0]
    num_clusters = data.vocab.codebook_sizes[0]

    def last_cluster(histories):
        return cluster_of_item[histories[:, -1]]  # most recent item is last, never padding

    transitions = np.zeros((num_clusters, num_clusters))
    np.add.at(transitions, (last_cluster(split.train.histories), cluster_of_item[split.train.targets]), 1)
    test_clusters = cluster_of_item[split.test.targets]
    markov_accuracy = np.mean(transitions.argmax(1)[last_cluster(split.test.histories)] == test_clusters)
    popular_cluster = np.bincount(cluster_of_item[split.train.targets], minlength=num_clusters).argmax()
    popularity_accuracy = np.mean(test_clusters == popular_cluster)
    assert markov_accuracy > 2 * popularity_accuracy
    assert markov_accuracy - popularity_accuracy > 0.2

    # Item level: top 10 by P(cluster | last cluster) * P(item | cluster), both
    # counted on the training split, vs the global top 10.
    transition_probs = transitions / transitions.sum(1, keepdims=True)
    item_counts = np.bincount(split.train.targets, minlength=data.num_items).astype(float)
    cluster_counts = np.bincount(cluster_of_item, weights=item_counts, minlength=num_clusters)
    item_given_cluster = item_counts / cluster_counts[cluster_of_item]
    scores = transition_probs[last_cluster(split.test.histories)][:, cluster_of_item] * item_given_cluster
    markov_top = np.argsort(-scores, axis=1)[:, :10]
    markov_hit = np.mean((markov_top == split.test.targets[:, None]).any(1))
    popularity_hit = np.mean(np.isin(split.test.targets, np.argsort(-item_counts)[:10]))
    assert markov_hit > 1.5 * popularity_hit


def test_write_and_load_round_trip(tmp_path):
    data = make_synthetic_dataset(num_items=300, num_users=50, num_levels=3, codebook_size=8, seed=1)
    write_sid_dataset(data, tmp_path, "synth")
    loaded = load_sid_dataset(tmp_path, "synth")
    assert _same(data, loaded)
    assert loaded.vocab == data.vocab
    np.testing.assert_array_equal(loaded.item_ids, data.item_ids)


def test_cli_writes_loadable_dataset(tmp_path, capsys):
    with kept_logging():
        assert main(["--out", str(tmp_path), "--name", "s", "--num-items", "100", "--num-users", "20",
                     "--codebook-size", "8"]) == 0
    assert "wrote 20 users" in capsys.readouterr().out
    loaded = load_sid_dataset(tmp_path)
    assert _same(loaded, make_synthetic_dataset(num_items=100, num_users=20, codebook_size=8))


def test_fewer_items_than_clusters_is_a_clear_error():
    with pytest.raises(ValueError, match="num_items=5 is fewer than the 16 clusters"):
        make_synthetic_dataset(num_items=5, codebook_size=16)
