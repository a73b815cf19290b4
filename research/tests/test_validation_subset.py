"""research/validation_subset.py: the data profile of the validation examples,
the random-slice test of the first slice's gap, and the CLI on a tiny dataset
whose first users differ from the rest (rank files plain or gzip-compressed)."""

import gzip
import json

import numpy as np
import pytest
from research_scripts import load_script

validation_subset = load_script("validation_subset")


def test_data_profile_follows_the_leave_one_out_split():
    # Training targets are s[1..n-3] (genrec/split.py): item 1 twice, item 2 once.
    sequences = [np.array(s) for s in ([0, 1, 2, 3, 1], [2, 1, 0, 3], [3, 2, 0])]
    sid_codes = np.array([[0, 0], [1, 0], [1, 1], [0, 1]])  # first codes: items 0, 3 -> 0; items 1, 2 -> 1
    profile = validation_subset.data_profile(sequences, 2, sid_codes)
    np.testing.assert_array_equal(profile["items_before"], [3, 2, 1])
    np.testing.assert_array_equal(profile["history_kept"], [2, 2, 1])
    # Validation targets (second-to-last items): 3, 0, 2; last history items: 2, 1, 3.
    np.testing.assert_array_equal(profile["target_popularity"], [0, 0, 1])
    np.testing.assert_array_equal(profile["same_first_code"], [0, 0, 0])
    sid_codes[3, 0] = 1  # now item 3 shares item 2's first code: users 0 (3 after 2) and 2 (2 after 3)
    np.testing.assert_array_equal(validation_subset.data_profile(sequences, 2, sid_codes)["same_first_code"], [1, 0, 1])


def test_by_length_rows_compares_equal_history_lengths():
    items_before = np.array([1, 2, 4, 1, 5, 30, 7])
    values = np.array([0.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.0])
    # First slice = first 3 users: lengths 1, 2 (bucket 1-3) and 4 (4-5); the rest: 1, 5, 30, 7.
    assert validation_subset.by_length_rows(items_before, values, 3) == [
        ("1-3", 2, 1, 0.5, 1.0), ("4-5", 1, 1, 0.5, 1.0)]  # 6-8 and 21+ only in the rest: left out


def brute_force_p(values, first, draws, seed):
    """Two-sided share of random slices (same draws as the script) at least as far from the rest."""
    rng = np.random.default_rng(seed)
    everyone = np.arange(values.shape[0])
    observed = abs(values[:first].mean() - values[first:].mean())
    extreme = 0
    for _ in range(draws):
        pick = rng.choice(values.shape[0], first, replace=False)
        extreme += abs(values[pick].mean() - values[np.setdiff1d(everyone, pick)].mean()) >= observed - 1e-12
    return (1 + extreme) / (1 + draws)


def test_slice_gap_test_against_a_brute_force_count():
    rng = np.random.default_rng(3)
    for shift, expect_smallest in ((3.0, True), (0.0, False)):
        values = rng.normal(size=40)
        values[:10] += shift
        gap, p = validation_subset.slice_gap_test(values, 10, draws=500, seed=1)
        assert gap == pytest.approx(values[:10].mean() - values[10:].mean())
        assert p == pytest.approx(brute_force_p(values, 10, 500, 1))
        assert (p == pytest.approx(1 / 501)) == expect_smallest  # a first slice far above the rest: none as far
    with pytest.raises(ValueError, match="strictly between"):
        validation_subset.slice_gap_test(values, 40, draws=10, seed=0)


def write_dataset(folder, sequences):
    data_dir = folder / "toy"
    data_dir.mkdir()
    items = sorted({i for seq in sequences for i in seq})
    codes = {f"i{i}": [f"<a_{i // 4}>", f"<b_{i % 4}>"] for i in items}
    (data_dir / "toy.index.rq-kmeans.json").write_text(json.dumps(codes))
    (data_dir / "toy.inter.json").write_text(json.dumps(
        {f"u{u}": [f"i{i}" for i in seq] for u, seq in enumerate(sequences)}))
    return data_dir


def test_cli_reports_a_first_slice_unlike_the_rest(tmp_path, capsys):
    rng = np.random.default_rng(0)
    # 10 long sequences first, then 30 short ones, as in Beauty's user order.
    sequences = [rng.integers(0, 8, size=12).tolist() for _ in range(10)]
    sequences += [rng.integers(0, 8, size=3).tolist() for _ in range(30)]
    data_dir = write_dataset(tmp_path, sequences)
    # Two runs that miss every target of the first 10 users and hit the others at rank 1.
    ranks = np.r_[np.zeros(10), np.ones(30)].astype(np.int32)
    for run in range(2):
        np.save(tmp_path / f"r_s{run}.valid_ranks.npy", ranks)

    args = ["--data", str(data_dir), "--first", "10", "--draws", "200", "--metrics", "recall@10"]
    assert validation_subset.main([*args, "--ranks", str(tmp_path / "r_s*.valid_ranks.npy")]) == 0
    out = capsys.readouterr().out
    assert "first 10 of 40 validation examples vs the other 30" in out
    assert "| items_before | 10.00 | 1.00 | 3.25 | +9.00 | 0.005 |" in out
    assert "| recall@10 (mean of 2 runs) | 0.0000 | 1.0000 | 0.7500 | -1.0000 | 0.005 |" in out
    assert "runs: r_s0, r_s1" in out
    # No history length occurs on both sides here, so the equal-length table is empty.
    assert out.rstrip().endswith(
        "| items before the target | users (first / rest) | first slice | rest |\n|---|---|---|---|")
    # One run stored gzip-compressed, as collect_results.py stores it: the same report.
    plain = tmp_path / "r_s1.valid_ranks.npy"
    (tmp_path / "r_s1.valid_ranks.npy.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    assert validation_subset.main([*args, "--ranks", str(tmp_path / "r_s*.valid_ranks.npy*")]) == 0
    assert capsys.readouterr().out == out

    assert validation_subset.main([*args, "--ranks", str(tmp_path / "absent.npy")]) == 2
    assert "no such rank file" in capsys.readouterr().err
    np.save(tmp_path / "short.valid_ranks.npy", ranks[:20])
    assert validation_subset.main([*args, "--ranks", str(tmp_path / "short.valid_ranks.npy")]) == 2
    assert "cover 20 users" in capsys.readouterr().err
    assert validation_subset.main(["--data", str(data_dir), "--first", "40"]) == 2
    assert "strictly between 0 and the 40" in capsys.readouterr().err
