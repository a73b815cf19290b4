"""Valid-next-token masks equal the dict trie's children."""

import jax.numpy as jnp
import numpy as np
import pytest

from constrained.index import build_index
from constrained.masks import valid_next_token_mask
from constrained.reference import build_dict_trie


@pytest.mark.parametrize("dense_depth", [1, 2])
def test_mask_equals_dict_trie_children(dense_depth):
    rng = np.random.default_rng(0)
    sizes, offsets = (5, 6, 4), (2, 7, 13)
    vocab = 17
    codes = np.unique(np.stack([rng.integers(0, k, 90) for k in sizes], 1), axis=0).astype(np.int32)
    index = build_index(codes, token_offsets=offsets, dense_depth=dense_depth)
    trie = build_dict_trie(codes, np.arange(len(codes)))
    targets = np.concatenate([codes[rng.permutation(len(codes))[:20]], [[0, 5, 3], [4, 4, 0]]])
    mask = np.asarray(valid_next_token_mask(index.to_device(), jnp.asarray(targets, jnp.int32), vocab))
    for b, sid in enumerate(targets.tolist()):
        node = trie
        for level in range(3):
            expected = np.zeros(vocab, bool)
            if isinstance(node, dict):
                expected[[offsets[level] + c for c in node]] = True
            np.testing.assert_array_equal(mask[b, level], expected, err_msg=f"{sid} level {level}")
            node = node.get(sid[level]) if isinstance(node, dict) else None
