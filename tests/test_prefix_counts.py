"""training.prefix_counts: distinct catalogue prefixes against Python sets."""

import numpy as np

from training.prefix_counts import count_distinct_prefixes


def test_count_distinct_prefixes_matches_sets():
    codes = np.random.default_rng(18).integers(0, 4, (500, 4))
    want = [len({tuple(row[:t]) for row in codes}) for t in range(1, 5)]
    got = count_distinct_prefixes(codes)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(count_distinct_prefixes(np.zeros((0, 3), int)), [0, 0, 0])
    np.testing.assert_array_equal(count_distinct_prefixes(np.array([[1, 2], [1, 2]])), [1, 1])
