from pathlib import Path

import numpy as np
import pytest

from genrec.datasets import load_sid_dataset
from genrec.split import leave_one_out_split

TINY_DIR = Path(__file__).parent / "data" / "tiny"


def test_tiny_split_matches_hand_written_arrays():
    # tests/data/tiny item rows per kept user: u1 [0 1 2 3 4 5], u2 [2 3 0], u4 [5 4 3 2 1].
    split = leave_one_out_split(load_sid_dataset(TINY_DIR).sequences, max_history=3)
    np.testing.assert_array_equal(
        split.train.histories,
        [[-1, -1, 0],   # u1: target 1
         [-1, 0, 1],    # u1: target 2
         [0, 1, 2],     # u1: target 3
         [-1, -1, 5],   # u4: target 4 (u2 has n=3, so no training example)
         [-1, 5, 4]],   # u4: target 3
    )
    np.testing.assert_array_equal(split.train.targets, [1, 2, 3, 4, 3])
    np.testing.assert_array_equal(split.train.user_rows, [0, 0, 0, 2, 2])

    np.testing.assert_array_equal(split.valid.histories, [[1, 2, 3], [-1, -1, 2], [5, 4, 3]])
    np.testing.assert_array_equal(split.valid.targets, [4, 3, 2])
    np.testing.assert_array_equal(split.test.histories, [[2, 3, 4], [-1, 2, 3], [4, 3, 2]])
    np.testing.assert_array_equal(split.test.targets, [5, 0, 1])
    np.testing.assert_array_equal(split.test.user_rows, [0, 1, 2])
    for part in (split.train, split.valid, split.test):
        assert part.histories.dtype == np.int32 and part.targets.dtype == np.int32


def _reference_split(sequences, max_history):
    """Direct transcription of the convention, one example at a time."""
    out = {"train": [], "valid": [], "test": []}

    def example(seq, i):
        history = list(seq[:i])[-max_history:]
        return [-1] * (max_history - len(history)) + history, seq[i]

    for seq in sequences:
        n = len(seq)
        out["train"] += [example(seq, i) for i in range(1, n - 2)]
        out["valid"].append(example(seq, n - 2))
        out["test"].append(example(seq, n - 1))
    return out


@pytest.mark.parametrize("max_history", [1, 4, 20])
def test_split_matches_reference_on_random_sequences(max_history):
    rng = np.random.default_rng(max_history)
    sequences = [rng.integers(0, 50, size=rng.integers(3, 30)) for _ in range(60)]
    split = leave_one_out_split(sequences, max_history=max_history)
    reference = _reference_split([s.tolist() for s in sequences], max_history)
    for name in ("train", "valid", "test"):
        part = getattr(split, name)
        histories, targets = zip(*reference[name])
        np.testing.assert_array_equal(part.histories, np.array(histories).reshape(-1, max_history))
        np.testing.assert_array_equal(part.targets, targets)
    assert split.train.num_examples == sum(len(s) - 3 for s in sequences)


def test_split_rejects_short_sequences():
    with pytest.raises(ValueError, match="user row 1, length 2"):
        leave_one_out_split([np.arange(5), np.arange(2)])
    with pytest.raises(ValueError, match="max_history"):
        leave_one_out_split([np.arange(5)], max_history=0)


def test_subset_examples_spread_and_first():
    from genrec.split import SplitArrays, subset_examples

    n = 11
    arrays = SplitArrays(histories=np.arange(n * 2, dtype=np.int32).reshape(n, 2),
                         targets=np.arange(100, 100 + n, dtype=np.int32),
                         user_rows=np.arange(n, dtype=np.int32))
    spread = subset_examples(arrays, 5, "spread")
    # Evenly spaced over all users, first and last included: rows 0, 2.5->2, 5, 7.5->8, 10.
    np.testing.assert_array_equal(spread.user_rows, [0, 2, 5, 8, 10])
    np.testing.assert_array_equal(spread.targets, arrays.targets[[0, 2, 5, 8, 10]])
    np.testing.assert_array_equal(spread.histories, arrays.histories[[0, 2, 5, 8, 10]])
    first = subset_examples(arrays, 4, "first")
    np.testing.assert_array_equal(first.user_rows, [0, 1, 2, 3])
    # Every size keeps distinct rows in order, so no user counts twice.
    for size in range(1, n + 1):
        rows = subset_examples(arrays, size).user_rows
        assert len(rows) == size and np.all(np.diff(rows) > 0)
    assert subset_examples(arrays, None) is arrays and subset_examples(arrays, n + 5, "first") is arrays
    with pytest.raises(ValueError, match="must be >= 1"):
        subset_examples(arrays, 0)
    with pytest.raises(ValueError, match="subset rule 'random'"):
        subset_examples(arrays, 3, "random")
