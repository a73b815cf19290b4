"""Trie index: structure equals a dict trie, duplicates, save/load."""

import numpy as np
import pytest
from catalogues import random_catalogue

from constrained.index import (
    DuplicateSIDError,
    IndexFileError,
    TrieIndex,
    build_index,
    disambiguate_sids,
    find_duplicate_groups,
)
from constrained.reference import build_dict_trie


def walk(index: TrieIndex, codes):
    """Follows one SID through the flattened arrays; returns the item id or None."""
    state = None
    for level, code in enumerate(codes):
        if level == 0:
            target = index.root_next[code] if code < len(index.root_next) else -1
        elif level == 1 and index.dense_depth == 2:
            target = index.dense2_next[codes[0], code] if code < index.dense2_next.shape[1] else -1
        else:
            lo, hi = index.csr_indptr[state], index.csr_indptr[state + 1]
            hits = np.flatnonzero(index.csr_codes[lo:hi] == code)
            target = index.csr_next[lo + hits[0]] if len(hits) else -1
        if target < 0:
            return None
        state = target
    return int(index.sorted_item_ids[state])


@pytest.mark.parametrize("sizes,dense_depth",
                         [((5, 7, 3), 2), ((5, 7, 3), 1), ((4, 4), 2), ((6,), 1), ((3, 5, 4, 6), None)])
def test_every_item_reachable_and_nothing_else(sizes, dense_depth):
    rng = np.random.default_rng(0)
    codes = random_catalogue(rng, 60, sizes)
    item_ids = rng.permutation(1000)[: len(codes)]
    index = build_index(codes, item_ids, dense_depth=dense_depth)
    trie = build_dict_trie(codes, item_ids)
    for row, sid in enumerate(codes):
        assert walk(index, sid) == item_ids[row]
    # Random SIDs are found exactly when the dict trie holds them.
    for _ in range(300):
        sid = [int(rng.integers(0, k)) for k in sizes]
        node = trie
        for c in sid:
            node = node.get(c) if isinstance(node, dict) else None
            if node is None:
                break
        assert walk(index, sid) == node


def test_structure_counts_match_dict_trie():
    rng = np.random.default_rng(1)
    sizes = (4, 5, 6, 3)
    codes = random_catalogue(rng, 200, sizes)
    index = build_index(codes, dense_depth=1)
    # Number of distinct prefixes of each length = states of that level.
    for length in range(1, len(sizes)):
        distinct = len({tuple(r) for r in codes[:, :length].tolist()})
        assert index.level_state_start[length + 1] - index.level_state_start[length] == distinct
    # Max branching per level from a direct count.
    for level in range(len(sizes)):
        children = {}
        for r in codes.tolist():
            children.setdefault(tuple(r[:level]), set()).add(r[level])
        assert index.max_branch[level] == max(len(c) for c in children.values())
    # Row ranges cover exactly the items under each state.
    for state in range(1, index.num_states):
        rows = index.sorted_codes[index.state_row_lo[state] : index.state_row_hi[state]]
        length = int(np.searchsorted(index.level_state_start, state, side="right") - 1)
        assert len({tuple(r) for r in rows[:, :length].tolist()}) == 1


def test_duplicates_error_and_disambiguation():
    codes = np.array([[1, 2], [0, 1], [1, 2], [3, 0], [1, 2], [0, 1]])
    groups = find_duplicate_groups(codes)
    assert [g.tolist() for g in groups] == [[1, 5], [0, 2, 4]]
    with pytest.raises(DuplicateSIDError, match="2 semantic IDs are shared"):
        build_index(codes, item_ids=np.arange(10, 16))
    index = build_index(codes, item_ids=np.arange(10, 16), on_duplicate="disambiguate")
    assert index.num_levels == 3 and index.num_appended_levels == 1
    expected = disambiguate_sids(codes)
    assert expected[:, 2].tolist() == [0, 0, 1, 0, 2, 1]
    for row in range(6):
        assert walk(index, expected[row]) == 10 + row


def test_bad_input_errors():
    with pytest.raises(ValueError, match="non-empty"):
        build_index(np.zeros((0, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="negative"):
        build_index(np.array([[0, -1]]))
    with pytest.raises(ValueError, match="codebook size"):
        build_index(np.array([[0, 5]]), codebook_sizes=(2, 4))
    with pytest.raises(ValueError, match="item_ids"):
        build_index(np.array([[0, 1]]), item_ids=[1, 2])


def test_save_load_round_trip_and_corruption(tmp_path):
    rng = np.random.default_rng(2)
    codes = random_catalogue(rng, 100, (8, 8, 8))
    index = build_index(codes, rng.permutation(100), token_offsets=(2, 10, 18))
    path = tmp_path / "index.npz"
    index.save(path)
    loaded = TrieIndex.load(path)
    assert loaded.codebook_sizes == index.codebook_sizes
    assert loaded.token_offsets == (2, 10, 18) and loaded.max_branch == index.max_branch
    for name, arr in index._arrays().items():
        np.testing.assert_array_equal(getattr(loaded, name), arr)
    # Flip bytes in the middle of the file: checksum or zip layer must object.
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(IndexFileError):
        TrieIndex.load(bad)
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(path.read_bytes()[:500])
    with pytest.raises(IndexFileError):
        TrieIndex.load(truncated)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(IndexFileError, match="not a genrec"):
        TrieIndex.load(other)


def test_memory_report_sums():
    index = build_index(random_catalogue(np.random.default_rng(3), 50, (6, 6, 6)))
    report = index.memory_report()
    assert report["total"] == sum(v for k, v in report.items() if k != "total") > 0
