"""benchmarks/compare_runs.py: per-user metrics by hand, the paired bootstrap
finds a real difference and not a fake one, and the CLI on rank files."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_runs.py"
_spec = importlib.util.spec_from_file_location("compare_runs", _PATH)
compare_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_runs)


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
