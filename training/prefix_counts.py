"""Host-side catalogue statistics the pairwise APAO loss needs: how many
distinct SID prefixes of each length the catalogue holds.

Where it sits: catalogue SIDs -> **prefix counts** -> train step (as the
``num_distinct_prefixes`` input of :func:`training.objective.training_objective`).
Plain NumPy, run once per catalogue, outside jit.
"""

from __future__ import annotations

import numpy as np


def count_distinct_prefixes(sid_codes: np.ndarray) -> np.ndarray:
    """Number of distinct length-``t`` prefixes in a catalogue, ``t = 1..T``.

    Sorts the rows lexicographically; a new length-``t`` prefix starts at every
    row whose first ``t`` codes differ from the previous row's.

    Args:
      sid_codes: int ``[N, T]``, one row per item (codes or token ids).

    Returns:
      int64 ``[T]``; entry ``t-1`` counts distinct length-``t`` prefixes (the
      last entry is the number of distinct SIDs).
    """
    sid_codes = np.asarray(sid_codes)
    if sid_codes.ndim != 2:
        raise ValueError(f"count_distinct_prefixes expects sid_codes [N, T], got shape {sid_codes.shape}")
    num_items, sid_length = sid_codes.shape
    if num_items == 0:
        return np.zeros(sid_length, np.int64)
    order = np.lexsort(sid_codes.T[::-1])  # primary key: column 0
    sorted_codes = sid_codes[order]
    changed = sorted_codes[1:] != sorted_codes[:-1]  # [N-1, T]
    prefix_changed = np.logical_or.accumulate(changed, axis=1)
    return 1 + prefix_changed.sum(axis=0).astype(np.int64)
