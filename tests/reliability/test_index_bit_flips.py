"""Fault suite: a single flipped bit anywhere in a saved index file either loads
an identical index or raises IndexFileError with one line naming the file
(docs/reliability.md). The zip directory's fields used to escape as other
exceptions: NotImplementedError (a flipped version or compression method),
RuntimeError (a flipped encryption flag), KeyError (a flipped member name).

Flipped here: every bit of the first zip directory entry (its version, flags,
compression method, ...; each entry has the same fields), of the names of the
members that load() looks up by name, and of the end record, and a seeded sample
of the other bits. (Every bit of this 4,986-byte file, 39,888 flips, takes two
minutes: 31,762 refused, 8,126 identical, none other.)"""

import numpy as np
import pytest

from constrained.index import IndexFileError, TrieIndex, build_index

_CENTRAL_ENTRY = b"PK\x01\x02"  # a zip central-directory entry: 46 fixed bytes, then the member's name
_END_RECORD = b"PK\x05\x06"
_LOOKED_UP = (b"__magic__.npy", b"__version__.npy", b"__meta__.npy", b"__checksum__.npy")
_SAMPLED_BITS = 400


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny index (5 items, 2 levels of 4 codes) and its file's bytes."""
    codes = np.array([[0, 1], [1, 0], [1, 3], [2, 2], [3, 0]])
    index = build_index(codes, np.arange(len(codes)))
    path = tmp_path_factory.mktemp("index") / "index.npz"
    index.save(path)
    return index, path.read_bytes()


def _bits_to_flip(raw: bytes) -> list[int]:
    """The bits the module docstring lists, in order: directory entries, end record, the sample."""
    chosen: set[int] = set()
    first = start = raw.find(_CENTRAL_ENTRY)
    while start != -1:
        name_length = int.from_bytes(raw[start + 28:start + 30], "little")
        if start == first:
            chosen.update(range(start * 8, (start + 46) * 8))
        if raw[start + 46:start + 46 + name_length] in _LOOKED_UP:
            chosen.update(range((start + 46) * 8, (start + 46 + name_length) * 8))
        start = raw.find(_CENTRAL_ENTRY, start + 1)
    end = raw.rfind(_END_RECORD)
    chosen.update(range(end * 8, len(raw) * 8))
    others = np.setdiff1d(np.arange(len(raw) * 8), sorted(chosen))
    sampled = np.random.default_rng(0).choice(others, size=_SAMPLED_BITS, replace=False)
    return sorted(chosen) + sorted(sampled.tolist())


def _same_index(a: TrieIndex, b: TrieIndex) -> bool:
    arrays_a, arrays_b = a._arrays(), b._arrays()
    return a._meta() == b._meta() and arrays_a.keys() == arrays_b.keys() and all(
        arrays_a[name].dtype == arrays_b[name].dtype and np.array_equal(arrays_a[name], arrays_b[name])
        for name in arrays_a)


def test_every_flipped_bit_loads_the_same_index_or_is_one_index_file_error(saved, tmp_path):
    index, raw = saved
    bits = _bits_to_flip(raw)
    assert len(bits) == (46 + 13 + 15 + 12 + 16 + 22) * 8 + _SAMPLED_BITS  # the entries and end record were found
    path = tmp_path / "flipped.npz"
    outcomes = {"identical": 0, "refused": 0}
    for bit in bits:
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(flipped)
        try:
            loaded = TrieIndex.load(path)
        except IndexFileError as error:
            message = str(error)
            assert message.startswith(str(path)) and "\n" not in message, (bit, message)
            outcomes["refused"] += 1
        else:
            assert _same_index(loaded, index), f"bit {bit}: a different index loaded"
            outcomes["identical"] += 1
    assert outcomes["refused"] > len(bits) // 2 and outcomes["identical"] > 0, outcomes
