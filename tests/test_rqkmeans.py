import json

import numpy as np
import pytest
from logging_state import kept_logging

from genrec.datasets import find_duplicate_sids, load_sid_dataset
from genrec.rqkmeans import (
    RQKMeansConfig,
    append_disambiguation_level,
    balanced_assignment,
    build_semantic_ids,
    collision_report,
    main,
    squared_distances,
)
from genrec.vocab import SIDVocabulary


def _blobs(rng, num_blobs=8, per_blob=100, dim=16, spread=20.0):
    centers = rng.normal(size=(num_blobs, dim)) * spread
    labels = np.repeat(np.arange(num_blobs), per_blob)
    return centers[labels] + rng.normal(size=(len(labels), dim)), labels


def test_level_zero_recovers_separated_blobs():
    embeddings, labels = _blobs(np.random.default_rng(0))
    codes, report = build_semantic_ids(embeddings, RQKMeansConfig(num_levels=2, codebook_size=8))
    contingency = np.zeros((8, 8), dtype=int)
    np.add.at(contingency, (labels, codes[:, 0]), 1)
    # Each blob maps to a single code, and different blobs to different codes.
    assert ((contingency > 0).sum(axis=1) == 1).all()
    assert sorted(contingency.argmax(axis=1)) == list(range(8))
    assert report.codes_used_per_level[0] == 8
    # Residual levels keep reducing the reconstruction error.
    assert report.residual_mse_per_level[1] < report.residual_mse_per_level[0]
    # Disambiguation makes every SID unique; the report describes the collisions before it.
    assert codes.shape == (800, 3) and find_duplicate_sids(codes) == []
    assert report.disambiguation_size == report.collisions.max_group_size == codes[:, 2].max() + 1
    again, _ = build_semantic_ids(embeddings, RQKMeansConfig(num_levels=2, codebook_size=8))
    np.testing.assert_array_equal(codes, again)


def test_collision_report_and_disambiguation_on_hand_made_codes():
    codes = np.array([[0, 1], [0, 1], [1, 0], [0, 1], [2, 2], [2, 2]])
    report = collision_report(codes)
    assert report.num_items == 6
    assert report.num_unique_sids == 3
    assert report.num_colliding_items == 5
    assert report.collision_rate == pytest.approx(5 / 6)
    assert report.max_group_size == 3
    np.testing.assert_array_equal(append_disambiguation_level(codes)[:, 2], [0, 1, 0, 2, 0, 1])
    unique = collision_report(np.array([[0, 1], [1, 0]]))
    assert (unique.num_colliding_items, unique.collision_rate, unique.max_group_size) == (0, 0.0, 1)


def test_squared_distances_match_brute_force():
    rng = np.random.default_rng(1)
    points, centroids = rng.normal(size=(30, 5)), rng.normal(size=(7, 5))
    expected = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(squared_distances(points, centroids), expected, rtol=1e-10, atol=1e-10)


def _log_domain_sinkhorn_prices(costs, temperature, num_iters):
    """Reference: textbook log-domain Sinkhorn with uniform marginals."""
    num_points, num_codes = costs.shape
    epsilon = temperature * costs.mean()
    g = np.zeros(num_codes)
    for _ in range(num_iters):
        f = epsilon * (-np.log(num_points) - np.log(np.exp((g[None, :] - costs) / epsilon).sum(1)))
        g = epsilon * (-np.log(num_codes) - np.log(np.exp((f[:, None] - costs) / epsilon).sum(0)))
    return g


def test_balanced_assignment_matches_log_domain_reference():
    rng = np.random.default_rng(2)
    costs = rng.random((200, 6)) + np.linspace(0, 1, 6)[None, :]
    assignment, prices = balanced_assignment(costs, num_iters=300, temperature=0.1)
    reference = _log_domain_sinkhorn_prices(costs, 0.1, 300)
    # Prices are defined up to a constant.
    np.testing.assert_allclose(prices - prices.max(), reference - reference.max(), atol=1e-4)
    np.testing.assert_array_equal(assignment, np.argmin(costs - reference[None, :], axis=1))
    # Code 5 is the most expensive for everyone, yet receives about N/K points.
    assert np.bincount(assignment, minlength=6).min() >= 0.7 * 200 / 6
    assert np.bincount(np.argmin(costs, axis=1), minlength=6)[5] < 10


def test_balanced_option_evens_out_code_usage():
    rng = np.random.default_rng(3)
    # A dense blob of 1800 points beside a sparse one of 200.
    embeddings = np.concatenate([rng.normal(size=(1800, 8)), rng.normal(size=(200, 8)) * 3 + 10])
    plain_codes, plain = build_semantic_ids(embeddings, RQKMeansConfig(num_levels=1, codebook_size=8))
    balanced_codes, balanced = build_semantic_ids(
        embeddings, RQKMeansConfig(num_levels=1, codebook_size=8, balanced=True))
    assert plain.largest_code_share_per_level[0] > 1.4 / 8
    assert balanced.largest_code_share_per_level[0] < 1.2 / 8
    assert np.bincount(balanced_codes[:, 0]).min() >= 0.75 * 2000 / 8


def test_fewer_items_than_codes():
    embeddings = np.random.default_rng(4).normal(size=(5, 3))
    codes, report = build_semantic_ids(embeddings, RQKMeansConfig(num_levels=2, codebook_size=8))
    assert len(np.unique(codes[:, 0])) == 5 and report.collisions.num_colliding_items == 0
    with pytest.raises(ValueError, match="row 1"):
        build_semantic_ids(np.array([[0.0, 1.0], [np.nan, 0.0]]), RQKMeansConfig(num_levels=1, codebook_size=2))


def test_cli_writes_standard_index(tmp_path, capsys):
    embeddings, _ = _blobs(np.random.default_rng(5), num_blobs=4, per_blob=20)
    item_ids = [f"item{i}" for i in range(len(embeddings))]
    np.save(tmp_path / "emb.npy", embeddings)
    (tmp_path / "ids.json").write_text(json.dumps(item_ids))
    out = tmp_path / "data" / "toy.index.rq-kmeans.json"
    with kept_logging():
        assert main(["--embeddings", str(tmp_path / "emb.npy"), "--item-ids", str(tmp_path / "ids.json"),
                     "--levels", "2", "--codes", "4", "--out", str(out), "--report", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    assert "collision_rate" in printed and str(out) in printed
    report = json.loads((tmp_path / "r.json").read_text())

    index = json.loads(out.read_text())
    assert list(index) == item_ids
    assert all(len(tokens) == 3 and tokens[0].startswith("<a_") for tokens in index.values())
    vocab = SIDVocabulary.load(tmp_path / "data" / "toy.vocab.json")
    assert vocab.codebook_sizes == (4, 4, report["disambiguation_size"])
    # Loadable as a dataset once interactions are added.
    (tmp_path / "data" / "toy.inter.json").write_text(json.dumps({"u": item_ids[:5]}))
    data = load_sid_dataset(tmp_path / "data")
    assert data.vocab == vocab and find_duplicate_sids(data.sid_codes) == []

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "--embeddings" in capsys.readouterr().out
