"""research/compare_runs.py: per-user metrics by hand, the paired bootstrap
finds a real difference and not a fake one, and the CLI on rank files."""

import itertools
import math

import numpy as np
import pytest
from research_scripts import load_script

compare_runs = load_script("compare_runs")


def test_per_user_metric_by_hand():
    ranks = np.array([0, 1, 3, 10, 11, 20])
    np.testing.assert_array_equal(compare_runs.per_user_metric(ranks, "recall@10"), [0, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(compare_runs.per_user_metric(ranks, "ndcg@10"),
                               [0, 1.0, 1 / np.log2(4), 1 / np.log2(11), 0, 0])
    with pytest.raises(ValueError, match="recall@k"):
        compare_runs.per_user_metric(ranks, "mrr")


def test_bootstrap_detects_a_real_gain_and_not_a_null_one():
    rng = np.random.default_rng(0)
    a = (rng.random(5000) < 0.10).astype(float)
    better = np.maximum(a, (rng.random(5000) < 0.03))  # B hits everything A hits, plus ~3% more users
    result = compare_runs.paired_bootstrap(a, better, num_resamples=2000, seed=1)
    assert result["low"] > 0 and result["p_b_not_better"] == 0.0
    assert result["diff"] == pytest.approx(better.mean() - a.mean())
    same = compare_runs.paired_bootstrap(a, rng.permutation(a), num_resamples=2000, seed=1)
    assert same["low"] < 0 < same["high"]


def test_cli_on_rank_files(tmp_path, capsys):
    rng = np.random.default_rng(3)
    paths = {}
    for name in ("a1", "a2", "b1"):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], rng.integers(0, 21, size=300).astype(np.int32))
    assert compare_runs.main(["--a", str(paths["a1"]), str(paths["a2"]), "--b", str(paths["b1"]),
                              "--resamples", "500"]) == 0
    out = capsys.readouterr().out
    assert "A: 2 run(s), B: 1 run(s), 300 users" in out and "| ndcg@20 |" in out
    np.save(tmp_path / "short.npy", np.zeros(10, np.int32))
    assert compare_runs.main(["--a", str(paths["a1"]), "--b", str(tmp_path / "short.npy")]) == 2
    assert "users" in capsys.readouterr().err


def _runs(rates, num_users, rng):
    """``float[runs, users]`` recall of runs whose hit rate is ``rates[r]``, users independent."""
    return (rng.random((len(rates), num_users)) < np.asarray(rates)[:, None]).astype(float)


def test_user_bootstrap_is_overconfident_under_seed_variance_and_runs_users_is_not():
    # Both groups' run hit rates come from the same wide spread (0.04..0.22, i.e. seed variance),
    # B's five happen to sit 0.02 higher: a seed artefact, not a method gain.
    rng = np.random.default_rng(0)
    a = _runs([0.04, 0.08, 0.12, 0.16, 0.20], 5000, rng)
    b = _runs([0.06, 0.10, 0.14, 0.18, 0.22], 5000, rng)
    users = compare_runs.paired_bootstrap(a, b, num_resamples=2000, seed=1, resample="users")
    both = compare_runs.paired_bootstrap(a, b, num_resamples=2000, seed=1, resample="runs+users")
    assert users["resample"] == "users" and both["resample"] == "runs+users"
    assert users["diff"] == both["diff"] == pytest.approx(b.mean() - a.mean())
    assert users["low"] > 0 and users["p_b_not_better"] < 0.001  # "significant" from users alone
    assert both["low"] < 0 < both["high"] and 0.1 < both["p_b_not_better"] < 0.5
    assert both["high"] - both["low"] > 5 * (users["high"] - users["low"])
    # auto picks runs+users here (same user draws, same run draws: identical result)
    auto = compare_runs.paired_bootstrap(a, b, num_resamples=2000, seed=1, resample="auto")
    assert auto == both
    # several metrics share one draw: each result equals its own call with the same seed
    many = compare_runs.paired_bootstrap_many([(a, b), (a / 2, b / 2)], num_resamples=2000, seed=1, resample="auto")
    assert many[0] == pytest.approx(both)
    assert (many[1]["low"], many[1]["high"]) == pytest.approx((both["low"] / 2, both["high"] / 2))


def test_runs_users_still_detects_a_large_gain():
    rng = np.random.default_rng(2)
    rates = np.array([0.08, 0.09, 0.10, 0.11, 0.12])
    a = _runs(rates, 3000, rng)
    b = np.maximum(a, _runs(np.full(5, 0.10), 3000, rng))  # every B run hits A's users plus ~10% more
    result = compare_runs.paired_bootstrap(a, b, num_resamples=2000, seed=1, resample="runs+users")
    # worst B resample (its weakest run) still beats the best A resample (its strongest run)
    assert b.mean(axis=1).min() > a.mean(axis=1).max()
    assert result["low"] > 0 and result["p_b_not_better"] == 0.0


def test_one_run_per_group_falls_back_to_users(tmp_path, capsys):
    assert compare_runs.resolve_resample("auto", 1, 5) == "users"
    assert compare_runs.resolve_resample("auto", 2, 2) == "runs+users"
    assert compare_runs.resolve_resample("users", 5, 5) == "users"
    with pytest.raises(ValueError, match="resample"):
        compare_runs.resolve_resample("seeds", 2, 2)
    # with one run per group, resampling runs changes nothing: same user draws, same result
    rng = np.random.default_rng(4)
    a, b = _runs([0.1], 400, rng), _runs([0.15], 400, rng)
    users = compare_runs.paired_bootstrap(a, b, num_resamples=500, seed=3, resample="users")
    both = compare_runs.paired_bootstrap(a, b, num_resamples=500, seed=3, resample="runs+users")
    assert both["low"] == pytest.approx(users["low"]) and both["high"] == pytest.approx(users["high"])
    paths = []
    for name in ("a", "b"):
        paths.append(tmp_path / f"{name}.npy")
        np.save(paths[-1], rng.integers(0, 21, size=300).astype(np.int32))
    assert compare_runs.main(["--a", str(paths[0]), "--b", str(paths[1]), "--resamples", "200"]) == 0
    captured = capsys.readouterr()
    assert "resampling: users (" in captured.out and "runs+users" not in captured.out
    assert "falls back" in captured.err and "seed-to-seed variance is NOT included" in captured.err
    assert compare_runs.main(["--a", str(paths[0]), str(paths[1]), "--b", str(paths[1]), str(paths[0]),
                              "--resamples", "200"]) == 0
    captured = capsys.readouterr()
    assert "A: 2 run(s), B: 2 run(s), 300 users" in captured.out and "resampling: runs+users (" in captured.out
    assert captured.err == ""


def _users_with_means(means, num_users=20):
    """``float[runs, users]`` 0/1 rows whose means are exactly ``means`` (multiples of 1/num_users)."""
    counts = np.rint(np.asarray(means) * num_users).astype(int)
    return (np.arange(num_users)[None, :] < counts[:, None]).astype(float)


def test_permutation_test_exact_by_hand():
    # A's runs 0.10, 0.30; B's 0.20, 0.40: observed B - A = 0.30 - 0.20 = +0.10. The 6 splits
    # (B's pair -> B - A): {.1,.2} -0.20, {.1,.3} -0.10, {.1,.4} 0, {.2,.3} 0, {.2,.4} +0.10 (observed),
    # {.3,.4} +0.20, so 2 of 6 are >= +0.10.
    a, b = _users_with_means([0.10, 0.30]), _users_with_means([0.20, 0.40])
    result = compare_runs.run_permutation_test(a, b)
    assert result["diff"] == pytest.approx(0.10)
    assert result["p"] == pytest.approx(2 / 6) and result["min_p"] == pytest.approx(1 / 6)
    assert result["num_reassignments"] == result["num_splits"] == 6 and result["exact"]
    # run-level values give the same; swapping the groups gives the mirror image: 5 of 6 are >= -0.10
    assert compare_runs.run_permutation_test([0.10, 0.30], [0.20, 0.40]) == result
    assert compare_runs.run_permutation_test(b, a)["p"] == pytest.approx(5 / 6)
    # 1 vs 2: C(3, 2) = 3 splits; B = {0.2, 0.3} vs A = {0.1} is the largest of -> p = 1/3
    one = compare_runs.run_permutation_test([0.1], [0.2, 0.3])
    assert one["p"] == pytest.approx(1 / 3) and one["num_splits"] == 3
    # a tie with the observed split counts: all runs equal -> every split ties, p = 1
    assert compare_runs.run_permutation_test([0.1, 0.1], [0.1, 0.1])["p"] == pytest.approx(1.0)


@pytest.mark.parametrize("runs_a,runs_b", [(2, 2), (3, 3), (5, 5), (2, 4)])
def test_permutation_p_is_minimal_when_every_b_run_beats_every_a_run(runs_a, runs_b):
    rng = np.random.default_rng(runs_a * 10 + runs_b)
    a = _runs(rng.uniform(0.05, 0.10, runs_a), 2000, rng)
    b = _runs(rng.uniform(0.14, 0.20, runs_b), 2000, rng)
    assert b.mean(axis=1).min() > a.mean(axis=1).max()
    result = compare_runs.run_permutation_test(a, b)
    expected = 1 / math.comb(runs_a + runs_b, runs_b)
    assert result["exact"] and result["p"] == pytest.approx(expected) and result["min_p"] == pytest.approx(expected)
    # and the reverse direction is as large as it gets
    assert compare_runs.run_permutation_test(b, a)["p"] == pytest.approx(1.0)


def test_permutation_test_is_not_fooled_by_a_seed_artefact():
    # The construction of the users-bootstrap test above: same spread of run hit rates in both groups,
    # B's five 0.02 higher. 252 splits; B - A >= observed for a large share of them.
    rng = np.random.default_rng(0)
    a = _runs([0.04, 0.08, 0.12, 0.16, 0.20], 5000, rng)
    b = _runs([0.06, 0.10, 0.14, 0.18, 0.22], 5000, rng)
    result = compare_runs.run_permutation_test(a, b)
    assert result["num_splits"] == 252 and result["diff"] > 0
    assert 0.2 < result["p"] < 0.6
    # A and B drawn from one distribution of runs (interleaved halves of 8 sorted rates): p not small
    rates = np.linspace(0.05, 0.20, 8)
    runs = _runs(rates, 3000, np.random.default_rng(5))
    same = compare_runs.run_permutation_test(runs[[0, 3, 4, 7]], runs[[1, 2, 5, 6]])
    assert same["num_splits"] == 70 and same["p"] > 0.3


def test_permutation_test_samples_when_there_are_too_many_splits():
    rng = np.random.default_rng(6)
    a, b = rng.uniform(0.0, 1.0, 8), rng.uniform(0.5, 1.5, 8)  # C(16, 8) = 12870 splits
    exact = compare_runs.run_permutation_test(a, b)
    assert exact["exact"] and exact["num_reassignments"] == 12870
    sampled = compare_runs.run_permutation_test(a, b, max_reassignments=5000, seed=1)
    assert not sampled["exact"] and sampled["num_splits"] == 12870
    assert sampled["num_reassignments"] == 5001 and sampled["min_p"] == pytest.approx(1 / 5001)
    assert sampled["p"] == pytest.approx(exact["p"], abs=0.005)  # 5000 draws: standard error ~0.001 here
    assert compare_runs.run_permutation_test(a, b, max_reassignments=5000, seed=1) == sampled
    # several metrics share the reassignments: each equals its own call
    many = compare_runs.run_permutation_test_many([(a, b), (a * 2, b * 2)], max_reassignments=5000, seed=1)
    assert many[0] == sampled and many[1]["p"] == sampled["p"]


def test_cli_prints_the_permutation_column(tmp_path, capsys):
    rng = np.random.default_rng(7)
    paths = []
    for rate_hi in (0.3, 0.35, 0.6, 0.65):  # A: two weak runs, B: two strong ones
        ranks = np.where(rng.random(400) < rate_hi, rng.integers(1, 11, size=400), 0)
        paths.append(tmp_path / f"r{len(paths)}.npy")
        np.save(paths[-1], ranks.astype(np.int32))
    args = ["--a", str(paths[0]), str(paths[1]), "--b", str(paths[2]), str(paths[3]), "--resamples", "200"]
    assert compare_runs.main(args) == 0
    out = capsys.readouterr().out
    assert "| P(B <= A) | perm. p (runs) |" in out
    assert "| 0.167 |" in out.splitlines()[3]  # recall@10: both B runs beat both A runs -> 1/6
    assert "exact, all C(4, 2) = 6 reassignments; smallest attainable p = 1/6 = 0.167" in out
    assert compare_runs.main(["--a", str(paths[0]), "--b", str(paths[2]), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "| perm. p (runs) |" in out and all(line.endswith("| n/a |") for line in out.splitlines()[3:7])
    assert "perm. p (runs): n/a" in out and "reassignments;" not in out


def _sign_flip_reference(diffs):
    """Plain loop over every sign pattern: share whose mean is >= the observed mean."""
    observed = np.mean(diffs)
    patterns = list(itertools.product([1, -1], repeat=len(diffs)))
    return sum(np.mean(np.multiply(s, diffs)) >= observed - 1e-12 for s in patterns) / len(patterns)


def test_seed_matched_test_equals_a_loop_over_sign_patterns():
    rng = np.random.default_rng(7)
    for n in (1, 3, 6, 9):
        seeds = rng.choice(50, size=n, replace=False)
        a = {int(s): float(rng.normal(0.06, 0.003)) for s in seeds}
        b = {int(s): float(rng.normal(0.061, 0.003)) for s in seeds}
        a[999] = 0.5  # a seed only A ran is ignored
        result = compare_runs.seed_matched_test(a, b)
        diffs = [b[s] - a[s] for s in sorted(b)]
        assert result["seeds"] == n and result["exact"]
        assert result["diff"] == pytest.approx(np.mean(diffs))
        assert result["mean_a"] == pytest.approx(np.mean([a[s] for s in b]))
        assert result["p"] == pytest.approx(_sign_flip_reference(diffs))
        assert result["min_p"] == pytest.approx(0.5 ** n)


def test_seed_matched_test_pairs_by_seed_not_by_position():
    # B is A plus 0.001 at every seed, with a large spread across seeds: each pair says B is better
    a = {1: 0.050, 2: 0.070, 3: 0.060, 4: 0.065, 5: 0.055}
    b = {s: v + 0.001 for s, v in a.items()}
    result = compare_runs.seed_matched_test(a, b)
    assert result["p"] == pytest.approx(1 / 32) and result["diff"] == pytest.approx(0.001)
    # the run-label permutation test, blind to the pairing, sees nothing
    assert compare_runs.run_permutation_test(list(a.values()), list(b.values()))["p"] > 0.3
    with pytest.raises(ValueError, match="no seed in common"):
        compare_runs.seed_matched_test({1: 0.1}, {2: 0.1})


def test_seed_matched_test_samples_beyond_max_flips():
    rng = np.random.default_rng(3)
    a = {s: float(rng.normal(0.06, 0.003)) for s in range(12)}
    b = {s: float(rng.normal(0.06, 0.003)) for s in range(12)}
    exact = compare_runs.seed_matched_test(a, b)
    sampled = compare_runs.seed_matched_test(a, b, max_flips=2000, seed=1)
    assert exact["exact"] and not sampled["exact"]
    assert sampled["min_p"] == pytest.approx(1 / 2001)
    assert sampled["p"] == pytest.approx(exact["p"], abs=0.04)
