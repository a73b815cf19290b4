"""Content digests: equal content gives equal digests, any changed byte, dtype or shape a different one."""

import numpy as np

from genrec.array_digest import array_digest, tree_digest, tree_digests


def test_digest_depends_on_every_byte_dtype_and_shape():
    rng = np.random.default_rng(0)
    array = rng.normal(size=(4, 5)).astype(np.float32)
    base = array_digest(array)
    assert array_digest(array.copy()) == base
    flipped = array.copy()
    flipped.reshape(-1).view(np.uint8)[rng.integers(flipped.nbytes)] ^= 1 << int(rng.integers(8))
    assert array_digest(flipped) != base
    assert array_digest(array.reshape(5, 4)) != base
    assert array_digest(array.view(np.int32)) != base
    assert array_digest(np.asfortranarray(array)) == base  # content, not memory layout


def test_tree_digest_keyed_by_path_not_insertion_order():
    a, b = np.arange(3, dtype=np.int32), np.ones((2, 2), np.float32)
    assert tree_digest({"a": a, "b": {"c": b}}) == tree_digest({"b": {"c": b}, "a": a})
    assert tree_digest({"a": a, "b": {"c": b}}) != tree_digest({"a": b, "b": {"c": a}})
    assert set(tree_digests({"a": a, "b": {"c": b}})) == {"a", "b/c"}
