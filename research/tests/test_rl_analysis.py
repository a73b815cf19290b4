"""research/rl_comparison/analyze_ab.py and analyze_grid.py: the pre-registered tests against
references written out by hand (every split enumerated, every sign pattern of a small sample)."""

import itertools
import sys

import numpy as np
import pytest
from research_scripts import REPO

sys.path.insert(0, str(REPO / "research" / "rl_comparison"))
from benchmark_scripts import load_script  # noqa: E402

analyze_grid = load_script("analyze_grid", REPO / "research" / "rl_comparison")
analyze_ab = load_script("analyze_ab", REPO / "research" / "rl_comparison")


def test_exact_permutation_p_of_fully_separated_arms_is_one_split_in_70():
    p, splits = analyze_ab.exact_permutation_p([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8])
    assert splits == 70 and p == pytest.approx(1 / 70)
    p, _ = analyze_ab.exact_permutation_p([0.5, 0.6, 0.7, 0.8], [0.1, 0.2, 0.3, 0.4])
    assert p == 1.0  # B worse: every split is at least as extreme
    assert analyze_ab.exact_permutation_p([0.3] * 4, [0.3] * 4)[0] == 1.0


def test_exact_permutation_p_equals_a_count_over_relabellings():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.normal(size=4).tolist(), (rng.normal(size=4) + 0.5).tolist()
        pooled = a + b
        observed = np.mean(b) - np.mean(a)
        count = 0
        for labels in itertools.product([0, 1], repeat=8):
            if sum(labels) != 4:
                continue
            new_b = [x for x, label in zip(pooled, labels) if label]
            new_a = [x for x, label in zip(pooled, labels) if not label]
            count += np.mean(new_b) - np.mean(new_a) >= observed - 1e-12
        assert analyze_ab.exact_permutation_p(a, b)[0] == pytest.approx(count / 70)


def test_sign_flip_p_approaches_the_exact_tail_of_a_small_sample():
    diff = np.array([0.0, 1.0, 1.0, -1.0, 1.0, 0.0, 1.0, -1.0, 1.0, 1.0])
    nonzero = diff[diff != 0]
    exact = np.mean([np.dot(signs, np.abs(nonzero)) >= nonzero.sum()
                     for signs in itertools.product([-1, 1], repeat=nonzero.size)])
    p = analyze_grid.sign_flip_p(diff, 40_000, np.random.default_rng(1))
    assert p == pytest.approx(exact, abs=0.01)
    assert analyze_grid.sign_flip_p(np.zeros(10), 1000, np.random.default_rng(1)) == 1.0


def test_two_sided_sign_flip_p_approaches_the_exact_two_tails():
    diff = np.array([0.0, 1.0, -1.0, 1.0, 1.0, 0.0, 1.0, -1.0, 1.0, 1.0, 0.5])
    nonzero = diff[diff != 0]
    observed = abs(nonzero.sum())
    exact = np.mean([abs(np.dot(signs, np.abs(nonzero))) >= observed - 1e-12
                     for signs in itertools.product([-1, 1], repeat=nonzero.size)])
    for sign in (1, -1):  # the same p whichever way the difference points
        p = analyze_grid.sign_flip_p(sign * diff, 40_000, np.random.default_rng(2), two_sided=True)
        assert p == pytest.approx(exact, abs=0.01)
    assert exact > analyze_grid.sign_flip_p(diff, 40_000, np.random.default_rng(2))  # two tails hold more
