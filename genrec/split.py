"""Leave-one-out split of user sequences into (history, next item) examples.

Where it sits: ``InteractionData.sequences`` -> :func:`leave_one_out_split` ->
:class:`SplitArrays` per split -> ``genrec.batching.BatchIterator``.

Convention, for a user's chronological item rows ``s`` of length ``n >= 3``:

* test:       target ``s[n-1]``, history ``s[:n-1]``
* validation: target ``s[n-2]``, history ``s[:n-2]``
* train:      targets ``s[i]`` for ``i = 1 .. n-3``, history ``s[:i]``
              (every prefix of ``s[:n-2]`` that has at least one history item)

so a user with ``n`` interactions gives ``n-3`` training examples, one validation
and one test example; no training target is ever a validation or test target of
the same user. Histories keep the most recent ``max_history`` items and are
stored **left-padded with -1**: row ``[-1, -1, 7, 3]`` means the user saw item 7
and then item 3 (the most recent item is always last).

Examples are ordered user by user (in ``sequences`` order), then chronologically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrec.console import UserError
from genrec.datasets import INTER_SUFFIX

HISTORY_PAD = -1
DEFAULT_MAX_HISTORY = 20


@dataclass(frozen=True, eq=False)
class SplitArrays:
    """Examples of one split.

    Attributes:
      histories: ``int32[num_examples, max_history]`` item rows, left-padded
        with ``HISTORY_PAD`` (-1), most recent item last.
      targets: ``int32[num_examples]`` item row to predict.
      user_rows: ``int32[num_examples]`` index of the example's user in the
        sequences the split was built from.
    """

    histories: np.ndarray
    targets: np.ndarray
    user_rows: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.targets.shape[0])

    @property
    def max_history(self) -> int:
        return int(self.histories.shape[1])


@dataclass(frozen=True, eq=False)
class LeaveOneOutSplit:
    """Train / validation / test examples (convention in the module docstring)."""

    train: SplitArrays
    valid: SplitArrays
    test: SplitArrays


def _gather_examples(
    flat_items: np.ndarray,
    user_starts: np.ndarray,
    example_users: np.ndarray,
    target_positions: np.ndarray,
    max_history: int,
) -> SplitArrays:
    """Builds examples whose target is ``flat_items[target_positions]``.

    Args:
      flat_items: ``int32[total]``, all sequences concatenated.
      user_starts: ``int64[num_users]``, where each user's sequence starts in ``flat_items``.
      example_users: ``int[num_examples]``, the user of each example.
      target_positions: ``int[num_examples]``, flat position of each target; the
        history is the user's items in ``[start, target_position)``.
    """
    # History slot j of an example holds flat position target - max_history + j;
    # slots before the user's first item are padding.
    positions = target_positions[:, None] - max_history + np.arange(max_history)
    in_history = positions >= user_starts[example_users][:, None]
    histories = np.where(in_history, flat_items[np.maximum(positions, 0)], HISTORY_PAD)
    return SplitArrays(
        histories=histories.astype(np.int32),
        targets=flat_items[target_positions].astype(np.int32),
        user_rows=example_users.astype(np.int32),
    )


def leave_one_out_split(
    sequences: Sequence[np.ndarray], max_history: int = DEFAULT_MAX_HISTORY
) -> LeaveOneOutSplit:
    """Splits user sequences by leave-one-out (convention in the module docstring).

    Args:
      sequences: per-user ``int[seq_len]`` item rows, chronological, each of
        length at least 3 (``load_sid_dataset`` already drops shorter users).
      max_history: number of most recent history items kept per example.

    Raises:
      ValueError: a sequence is shorter than 3 or holds negative item rows.
    """
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    if len(sequences) == 0:
        raise ValueError("leave_one_out_split needs at least one user sequence")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    short = np.flatnonzero(lengths < 3)
    if short.size:
        raise ValueError(
            f"{short.size} user sequences are shorter than 3 (first: user row {short[0]}, "
            f"length {lengths[short[0]]}); leave-one-out needs history, validation and test items"
        )
    flat_items = np.concatenate([np.asarray(s) for s in sequences]).astype(np.int32)
    if flat_items.min() < 0:
        raise ValueError("sequences must hold item rows >= 0")
    user_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    users = np.arange(len(sequences))

    # Train: user u contributes targets at offsets 1 .. n_u - 3.
    train_counts = lengths - 3
    train_users = np.repeat(users, train_counts)
    first_example_of_user = np.cumsum(train_counts) - train_counts
    offset_in_user = np.arange(train_counts.sum()) - np.repeat(first_example_of_user, train_counts) + 1
    train_positions = user_starts[train_users] + offset_in_user

    return LeaveOneOutSplit(
        train=_gather_examples(flat_items, user_starts, train_users, train_positions, max_history),
        valid=_gather_examples(flat_items, user_starts, users, user_starts + lengths - 2, max_history),
        test=_gather_examples(flat_items, user_starts, users, user_starts + lengths - 1, max_history),
    )


def check_training_examples(split: LeaveOneOutSplit, data_dir: str | Path | None, name: str) -> None:
    """Raises a one-line UserError where ``split`` has no training example: every user has exactly 3
    interactions (the split refuses fewer), all of them history, validation and test target. The message
    names the dataset's interaction file (``data_dir/NAME.inter.json``; the synthetic dataset without
    ``data_dir``), why, and the fix; training would otherwise fail making its first batch of none."""
    if split.train.num_examples:
        return
    source = Path(data_dir) / f"{name}{INTER_SUFFIX}" if data_dir is not None else "the synthetic dataset"
    raise UserError(f"{source}: no training examples: each of its {split.valid.num_examples} users has 3 "
                    "interactions, which leave-one-out takes as history, validation target and test target: a user "
                    "gives training examples from a 4th interaction on; give users of 4 or more interactions "
                    "(genrec convert --k-core 4 keeps only those)")


SUBSET_RULES = ("spread", "first")


def subset_examples(arrays: SplitArrays, max_examples: int | None, rule: str = "spread") -> SplitArrays:
    """At most ``max_examples`` examples of ``arrays``, in their order.

    Args:
      arrays: one split's examples.
      max_examples: how many to keep; None (or at least ``arrays.num_examples``)
        keeps all.
      rule: ``"spread"`` keeps evenly spaced examples over the whole split
        (the first and the last included); ``"first"`` keeps the leading ones.
        Examples follow the users' order in the dataset file, which need not
        be random, so a leading slice can be a biased sample (docs/results.md,
        "Beauty's first 5,000 validation users are not a sample of the rest").

    Raises:
      ValueError: ``max_examples < 1`` or an unknown ``rule``.
    """
    if rule not in SUBSET_RULES:
        raise ValueError(f"subset rule {rule!r}: expected one of {SUBSET_RULES}")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples={max_examples} must be >= 1 (or None for all)")
    total = arrays.num_examples
    if max_examples is None or max_examples >= total:
        return arrays
    if rule == "first":
        rows = np.arange(max_examples)
    else:
        # Distinct because the spacing (total - 1) / (max_examples - 1) is > 1.
        rows = np.round(np.linspace(0, total - 1, max_examples)).astype(np.int64)
    return SplitArrays(histories=arrays.histories[rows], targets=arrays.targets[rows],
                       user_rows=arrays.user_rows[rows])
