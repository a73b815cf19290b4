"""genrec build-index --disambiguate: one leaf per item, every item under its own SID (the dataset's
SID plus the disambiguation level disambiguate_sids() appends), token offsets of the vocabulary that
level extends; and no level claimed when none was appended."""

import json

import numpy as np
from logging_state import restore_logging  # noqa: F401 (autouse: every test keeps the logging state)

from constrained.index import TrieIndex, build_index, disambiguate_sids
from genrec.synthetic import make_synthetic_dataset, write_sid_dataset
from genrec.vocab import SIDVocabulary
from serving.cli import main

# Items b, c and d share one SID, e and f another; a is alone.
SIDS = {"a": [0, 1, 0], "b": [1, 0, 2], "c": [1, 0, 2], "d": [1, 0, 2], "e": [0, 0, 1], "f": [0, 0, 1]}



def _leaves(index: TrieIndex) -> dict[int, tuple[int, ...]]:
    """Item id -> full code path of each leaf, walking the CSR transitions from the root."""
    frontier, leaves = [(0, ())], {}
    for level in range(index.num_levels):
        next_frontier = []
        for state, path in frontier:
            for j in range(index.csr_indptr[state], index.csr_indptr[state + 1]):
                step = (*path, int(index.csr_codes[j]))
                if level == index.num_levels - 1:
                    item = int(index.sorted_item_ids[index.csr_next[j]])
                    assert item not in leaves
                    leaves[item] = step
                else:
                    next_frontier.append((int(index.csr_next[j]), step))
        frontier = next_frontier
    return leaves


def test_disambiguate_gives_every_item_its_own_sid(tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    letters = "abc"
    (data_dir / "toy.index.rq-kmeans.json").write_text(json.dumps(
        {item: [f"<{letters[level]}_{code}>" for level, code in enumerate(sid)] for item, sid in SIDS.items()}))
    out = tmp_path / "index.npz"
    assert main(["build-index", "--data", str(data_dir), "--out", str(out), "--disambiguate"]) == 0, \
        capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "2 SIDs shared by 5 items -> 6 leaves" in printed and "a disambiguation level was appended" in printed

    index = TrieIndex.load(out)
    codes = np.array(list(SIDS.values()))
    assert index.num_items == len(SIDS) and index.num_levels == 4
    leaves = _leaves(index)
    assert sorted(leaves) == list(range(len(SIDS)))  # every item row is a leaf
    assert len(set(leaves.values())) == len(SIDS)  # under a SID of its own
    for row, path in leaves.items():
        assert path[:3] == tuple(codes[row])  # which starts with the item's SID
    # The model's view: the vocabulary of the disambiguated SIDs (the appended level's tokens follow the others').
    vocab = SIDVocabulary((2, 2, 3, 3))
    assert index.token_offsets == tuple(int(o) for o in vocab.level_offsets)
    expected = build_index(disambiguate_sids(codes), np.arange(len(SIDS)), codebook_sizes=vocab.codebook_sizes,
                           token_offsets=vocab.level_offsets)
    for name, array in expected._arrays().items():
        np.testing.assert_array_equal(getattr(index, name), array, err_msg=name)


def test_disambiguate_without_shared_sids_appends_nothing_and_says_so(tmp_path, capsys):
    data = make_synthetic_dataset(num_items=60, num_users=10, codebook_size=8)
    write_sid_dataset(data, tmp_path / "data", "toy")
    out = tmp_path / "index.npz"
    assert main(["build-index", "--data", str(tmp_path / "data"), "--out", str(out), "--disambiguate"]) == 0
    printed = capsys.readouterr().out
    assert "0 SIDs shared" in printed and "appended" not in printed
    assert "no SID is shared" in printed
    index = TrieIndex.load(out)
    assert index.num_items == 60 and index.num_levels == 3 and index.num_appended_levels == 0
    assert sorted(_leaves(index)) == list(range(60))
