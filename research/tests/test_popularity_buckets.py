"""research/popularity_buckets.py: target popularity from the leave-one-out
split, bucket edges, per-bucket metrics and permutation p-values by hand, and
the CLI on a tiny dataset (rank files plain or gzip-compressed)."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from research_scripts import load_script

popularity_buckets = load_script("popularity_buckets")

# Training targets are s[1..n-3] of each user (genrec/split.py): u0 gives items
# 1, 2; u1 gives 2, 1; u2 none; u3 gives 1. So item 1 is a training target 3
# times, item 2 twice, items 0 and 3 never. Test targets (last items): 1, 2, 3, 0.
SEQUENCES = [np.array(s) for s in ([0, 1, 2, 3, 1], [1, 2, 1, 2, 2], [0, 2, 3], [3, 1, 2, 0])]
POPULARITY = [3, 2, 0, 0]
# Two runs per group over the 4 test users (1-based rank of the target, 0 = missed).
RANKS_A = np.array([[1, 0, 0, 0], [2, 0, 0, 0]])
RANKS_B = np.array([[0, 0, 5, 1], [0, 0, 3, 0]])


def test_target_popularity_counts_training_targets():
    np.testing.assert_array_equal(popularity_buckets.target_popularity(SEQUENCES), POPULARITY)
    # Validation targets (second-to-last items): 3, 2, 2, 2.
    np.testing.assert_array_equal(popularity_buckets.target_popularity(SEQUENCES, split="valid"), [0, 2, 2, 2])
    with pytest.raises(ValueError, match="'test' or 'valid'"):
        popularity_buckets.target_popularity(SEQUENCES, split="train")


def test_bucket_masks():
    buckets = popularity_buckets.bucket_masks(np.array(POPULARITY), [50])  # median of [3, 2, 0, 0] is 1
    assert [label for label, _ in buckets] == ["0-0", "2-3", "all"]
    np.testing.assert_array_equal(buckets[0][1], [False, False, True, True])
    np.testing.assert_array_equal(buckets[1][1], [True, True, False, False])
    assert buckets[2][1].all()
    with pytest.raises(ValueError, match="increasing"):
        popularity_buckets.bucket_masks(np.array(POPULARITY), [90, 50])
    with pytest.raises(ValueError, match="no test users"):
        popularity_buckets.bucket_masks(np.array([], np.int64), [50])


def test_bucket_table_by_hand():
    rows = popularity_buckets.bucket_table(RANKS_A, RANKS_B, np.array(POPULARITY), "recall@10", [50])
    tail, head, everyone = rows
    # Tail (users 2, 3): A finds neither in both runs; B finds both, then one.
    np.testing.assert_allclose(tail["a"], [0, 0])
    np.testing.assert_allclose(tail["b"], [1.0, 0.5])
    # Only the observed split of the run labels gives B - A >= 0.75: p = 1/6.
    assert tail["p"] == pytest.approx(1 / 6) and tail["min_p"] == pytest.approx(1 / 6)
    # Head (users 0, 1): A finds user 0 in both runs, B nobody: every split is >= the observed one.
    np.testing.assert_allclose(head["a"], [0.5, 0.5])
    assert head["relative"] == pytest.approx(-1.0) and head["p"] == pytest.approx(1.0)
    # All users: A 0.25, 0.25; B 0.5, 0.25 (+50%); the 3 splits putting the 0.5 run in B tie the observed one.
    assert everyone["users"] == 4 and everyone["relative"] == pytest.approx(0.5)
    assert everyone["p"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cover"):
        popularity_buckets.bucket_table(RANKS_A[:, :3], RANKS_B[:, :3], np.array(POPULARITY), "recall@10", [50])


def write_toy_dataset(folder):
    """SEQUENCES as dataset ``toy`` (items i0..i3, rows 0..3 in index order) in ``folder/toy``."""
    data_dir = folder / "toy"
    data_dir.mkdir()
    codes = {f"i{i}": [f"<a_{i // 2}>", f"<b_{i % 2}>"] for i in range(4)}
    (data_dir / "toy.index.rq-kmeans.json").write_text(json.dumps(codes))
    (data_dir / "toy.inter.json").write_text(json.dumps(
        {f"u{u}": [f"i{i}" for i in seq.tolist()] for u, seq in enumerate(SEQUENCES)}))
    return data_dir


def test_cli_on_a_tiny_dataset(tmp_path, capsys):
    data_dir = write_toy_dataset(tmp_path)
    paths = {}
    for group, ranks in (("a", RANKS_A), ("b", RANKS_B)):
        paths[group] = []
        for run, row in enumerate(ranks):
            path = tmp_path / f"{group}_s{run}.test_ranks.npy"
            np.save(path, row.astype(np.int32))
            paths[group].append(str(path))

    assert popularity_buckets.main(["--data", str(data_dir), "--a", *paths["a"], "--b", str(tmp_path / "b_s*"),
                                    "--metrics", "recall@10", "--percentiles", "50"]) == 0
    out = capsys.readouterr().out
    assert "A: 2 run(s), B: 2 run(s), 4 test users" in out
    assert "| 0-0 | 2 | 0.0000 ± 0.0000 | 0.7500 ± 0.3536 |" in out and "| 0.167 |" in out
    assert "| all | 4 | 0.2500 ± 0.0000 | 0.3750 ± 0.1768 | +50.0% | 0.500 |" in out
    # B's runs stored gzip-compressed, as collect_results.py stores them: the same table.
    for path in map(Path, paths["b"]):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    paths["b"] = [path + ".gz" for path in paths["b"]]
    assert popularity_buckets.main(["--data", str(data_dir), "--a", *paths["a"], "--b", str(tmp_path / "b_s*"),
                                    "--metrics", "recall@10", "--percentiles", "50"]) == 0
    assert capsys.readouterr().out == out

    # Validation ranks of the first 3 users only (an evaluation with --max-examples 3):
    # valid popularity [0, 2, 2], 40th percentile 1.6 -> buckets "0-0" (user 0) and "2-2" (users 1, 2).
    for group, ranks in (("a", RANKS_A), ("b", RANKS_B)):
        for run, row in enumerate(ranks):
            np.save(tmp_path / f"{group}_s{run}.valid_ranks.npy", row[:3].astype(np.int32))
    assert popularity_buckets.main(["--data", str(data_dir), "--split", "valid", "--metrics", "recall@10",
                                    "--percentiles", "40", "--a", str(tmp_path / "a_s*.valid_ranks.npy"),
                                    "--b", str(tmp_path / "b_s*.valid_ranks.npy")]) == 0
    out = capsys.readouterr().out
    assert "3 valid users" in out
    assert "| 0-0 | 1 | 1.0000 ± 0.0000 | 0.0000 ± 0.0000 | -100.0% |" in out
    assert "| 2-2 | 2 | 0.0000 ± 0.0000 | 0.5000 ± 0.0000 |" in out  # B finds user 2 in both runs

    # On the test split a file of fewer users is an error (wrong data or split), not a subset.
    assert popularity_buckets.main(["--data", str(data_dir), "--a", str(tmp_path / "a_s*.valid_ranks.npy"),
                                    "--b", str(tmp_path / "b_s*.valid_ranks.npy")]) == 2
    assert "cover 3 / 3 users, the data's test split 4" in capsys.readouterr().err
    assert popularity_buckets.main(["--data", str(data_dir), "--metrics", ",", "--a", *paths["a"],
                                    "--b", *paths["b"]]) == 2
    assert "no metric" in capsys.readouterr().err
    assert popularity_buckets.main(["--data", str(data_dir), "--prefix-ranks", "--split", "valid",
                                    "--a", *paths["a"], "--b", *paths["b"]]) == 2
    assert "cover the test split" in capsys.readouterr().err

    assert popularity_buckets.main(["--data", str(data_dir), "--a", str(tmp_path / "absent*"),
                                    "--b", *paths["b"]]) == 2
    assert "no file matches" in capsys.readouterr().err


def test_prefix_survival_by_bucket(tmp_path, capsys):
    # int[levels=2, users=4] per run: level-1 survival A: users {0}, {0, 1}; B: {2, 3} twice.
    prefix_a = np.array([[[3, 0, 0, 0], [1, 0, 0, 0]], [[2, 5, 0, 0], [2, 0, 0, 0]]])
    prefix_b = np.array([[[0, 0, 1, 4], [0, 0, 1, 0]], [[0, 0, 2, 2], [0, 0, 0, 2]]])
    values = popularity_buckets.survival_values(prefix_a, "prefix_in_beam@1")
    np.testing.assert_array_equal(values, [[1, 0, 0, 0], [1, 1, 0, 0]])
    with pytest.raises(ValueError, match="prefix_in_beam@t, t in 1..2"):
        popularity_buckets.survival_values(prefix_a, "prefix_in_beam@3")
    tail, head, everyone = popularity_buckets.bucket_table_values(
        values, popularity_buckets.survival_values(prefix_b, "prefix_in_beam@1"), np.array(POPULARITY), [50])
    np.testing.assert_allclose(tail["b"], [1.0, 1.0])  # users 2 and 3 survive in both B runs
    np.testing.assert_allclose(head["a"], [0.5, 1.0])
    assert tail["p"] == pytest.approx(1 / 6)

    data_dir = write_toy_dataset(tmp_path)
    for group, arrays in (("a", prefix_a), ("b", prefix_b)):
        for run, array in enumerate(arrays):
            np.save(tmp_path / f"{group}_s{run}.prefix_ranks.npy", array.astype(np.int32))
    assert popularity_buckets.main(["--data", str(data_dir), "--prefix-ranks", "--percentiles", "50",
                                    "--a", str(tmp_path / "a_s*"), "--b", str(tmp_path / "b_s*")]) == 0
    out = capsys.readouterr().out
    assert "| prefix_in_beam@1 |" in out and "| prefix_in_beam@2 |" in out
    assert "| 0-0 | 2 | 0.0000 ± 0.0000 | 1.0000 ± 0.0000 |" in out
    # Plain rank files are refused in --prefix-ranks mode (and vice versa the shapes differ).
    np.save(tmp_path / "flat.npy", np.array([1, 0, 0, 0], np.int32))
    assert popularity_buckets.main(["--data", str(data_dir), "--prefix-ranks", "--a", str(tmp_path / "flat.npy"),
                                    "--b", str(tmp_path / "b_s*")]) == 2
    assert "int[levels, users]" in capsys.readouterr().err
