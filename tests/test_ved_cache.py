"""VED's KV cache over its tree (constrained/ved.py, "Cached evaluation"): the cached node
evaluation (``make_cached_node_fn`` over ``decode_node``) returns the uncached node_fn's
logits and values on random trees, both architectures, with garbage in the ignored cache
slots; and ``value_guided_decode`` grows the same tree and returns the same rollouts with
the cache as without it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from catalogues import random_catalogue
from flax import nnx

from constrained.index import build_index
from constrained.ved import beam_search_budget, best_leaves, value_guided_tree
from genrec.models import PAD_ID, ModelConfig, ValueHead, build_model, make_cached_node_fn, make_node_fn

ARCHS = ["encoder_decoder", "decoder_only"]
NUM_LEVELS, CODES = 3, 8
OFFSETS = tuple(2 + CODES * level for level in range(NUM_LEVELS))
VOCAB_SIZE = 2 + NUM_LEVELS * CODES
BATCH, HIST_LEN = 2, 12
ATOL = 1e-5


def _setup(arch):
    """(model, value head, shared) of a tiny model; the head's output scaled up so values differ by node."""
    model = build_model(ModelConfig.tiny(VOCAB_SIZE, NUM_LEVELS, arch=arch), rngs=nnx.Rngs(0))
    head = ValueHead(model.config, rngs=nnx.Rngs(1))
    head.output_layer.kernel[...] = head.output_layer.kernel[...] * 100.0
    rng = np.random.default_rng(0)
    tokens = np.full((BATCH, HIST_LEN), PAD_ID, np.int32)
    mask = np.zeros((BATCH, HIST_LEN), bool)
    for row, length in enumerate((9, 5)):  # left-padded, different lengths (RoPE positions differ)
        tokens[row, -length:] = rng.integers(2, VOCAB_SIZE, size=length)
        mask[row, -length:] = True
    return model, head, jnp.asarray(tokens), jnp.asarray(mask)


@nnx.jit
def _uncached(model, head, history_tokens, history_mask, prefix_codes, prefix_len):
    shared = model.encode(history_tokens, history_mask)
    return make_node_fn(model, head, shared, OFFSETS)(prefix_codes, prefix_len)


@nnx.jit
def _cached(model, head, history_tokens, history_mask, prefix_codes, prefix_len, ancestor_kv):
    shared = model.encode(history_tokens, history_mask)
    return make_cached_node_fn(model, head, shared, OFFSETS)(prefix_codes, prefix_len, ancestor_kv)


def _random_tree(rng, chunks):
    """Per request: a root, then ``chunks`` groups of nodes, each node a child of a node of an
    earlier group at depth < L - 1 (so one group mixes depths). Returns codes int32[B, N, L]
    (-1 past the depth), depth int32[B, N], parent int32[B, N]."""
    num_nodes = 1 + sum(chunks)
    codes = np.full((BATCH, num_nodes, NUM_LEVELS), -1, np.int32)
    depth = np.zeros((BATCH, num_nodes), np.int32)
    parent = np.full((BATCH, num_nodes), -1, np.int32)
    for b in range(BATCH):
        start = 1
        for size in chunks:
            candidates = np.flatnonzero(depth[b, :start] < NUM_LEVELS - 1)
            for node in range(start, start + size):
                up = rng.choice(candidates)
                parent[b, node], depth[b, node] = up, depth[b, up] + 1
                codes[b, node] = codes[b, up]
                codes[b, node, depth[b, up]] = rng.integers(CODES)
            start += size
    return codes, depth, parent


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_node_fn_equals_uncached_on_random_trees(arch):
    """Groups evaluated in order, each node over its ancestors' stored own K/V (slots past its
    depth filled with other nodes' K/V: ignored): the uncached node_fn's logits and values."""
    model, head, history_tokens, history_mask = _setup(arch)
    rng = np.random.default_rng(1)
    chunks = (4, 5, 5)
    codes, depth, parent = _random_tree(rng, chunks)
    expected_logits, expected_values = _uncached(model, head, history_tokens, history_mask, jnp.asarray(codes),
                                                 jnp.asarray(depth))
    assert len(np.unique(np.round(np.asarray(expected_values), 4))) > 10  # values differ by node

    root_logits, root_values, table = _cached(model, head, history_tokens, history_mask, jnp.asarray(codes[:, :1]),
                                              jnp.asarray(depth[:, :1]), None)
    logits, values = [root_logits], [root_values]
    rows = np.arange(BATCH)[:, None, None]
    start = 1
    for size in chunks:
        nodes = np.arange(start, start + size)
        # path[b, n, j]: the node whose own K/V is slot j; past the depth, any earlier node.
        path = rng.integers(0, start, size=(BATCH, size, NUM_LEVELS))
        for b in range(BATCH):
            for i, node in enumerate(nodes):
                up = parent[b, node]
                while up >= 0:
                    path[b, i, depth[b, up]] = up
                    up = parent[b, up]
        ancestor_kv = jax.tree.map(lambda leaf: leaf[rows, path], table)  # [B, size, L, heads, head_dim]
        chunk_logits, chunk_values, own = _cached(model, head, history_tokens, history_mask,
                                                  jnp.asarray(codes[:, nodes]), jnp.asarray(depth[:, nodes]),
                                                  ancestor_kv)
        logits.append(chunk_logits)
        values.append(chunk_values)
        table = jax.tree.map(lambda old, new: jnp.concatenate([old, new], axis=1), table, own)
        start += size
    np.testing.assert_allclose(jnp.concatenate(values, axis=1), expected_values, atol=ATOL, rtol=0)
    np.testing.assert_allclose(jnp.concatenate(logits, axis=1), expected_logits, atol=ATOL, rtol=0)


@functools.partial(nnx.jit, static_argnames=("cached", "num_outputs", "budget", "init_beam_width"))
def _ved(model, head, history_tokens, history_mask, device_index, uniforms, *, cached, num_outputs, budget,
         init_beam_width):
    shared = model.encode(history_tokens, history_mask)
    make = make_cached_node_fn if cached else make_node_fn
    tree = value_guided_tree(device_index, make(model, head, shared, OFFSETS), uniforms, budget=budget,
                             init_beam_width=init_beam_width, cached=cached)
    return tree, best_leaves(device_index, tree, num_outputs)


def test_cached_ved_grows_the_same_tree_and_rollouts():
    """T5 (the Llama node evaluation is covered above; VED's side is the same for both)."""
    model, head, history_tokens, history_mask = _setup("encoder_decoder")
    rng = np.random.default_rng(2)
    catalogue = random_catalogue(rng, 120, (CODES,) * NUM_LEVELS)
    index = build_index(catalogue, np.arange(len(catalogue)), dense_depth=1, token_offsets=OFFSETS).to_device()
    settings = dict(num_outputs=6, budget=13, init_beam_width=1)
    uniforms = jax.random.uniform(jax.random.key(3), (5, BATCH, 3))
    runs = [jax.tree.map(np.asarray, _ved(model, head, history_tokens, history_mask, index, uniforms, cached=cached,
                                          **settings)) for cached in (False, True)]
    (tree, out), (cached_tree, cached_out) = runs
    assert tree.kv_path is None and cached_tree.kv_path is not None
    for name in ("num_nodes", "tokens_used", "codes", "depth", "parent", "visits", "expanded", "trie_state"):
        np.testing.assert_array_equal(getattr(cached_tree, name), getattr(tree, name), err_msg=name)
    for name in ("values", "entropy", "priority", "child_log_probs", "token_log_probs"):
        np.testing.assert_allclose(getattr(cached_tree, name), getattr(tree, name), atol=ATOL, rtol=0, err_msg=name)
    np.testing.assert_array_equal(cached_out.sid_codes, out.sid_codes)
    np.testing.assert_array_equal(cached_out.item_ids, out.item_ids)
    np.testing.assert_array_equal(cached_out.valid, out.valid)
    np.testing.assert_allclose(cached_out.token_log_probs, out.token_log_probs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(cached_out.values, out.values, atol=ATOL, rtol=0)
    # A real search: tokens spent beyond the initial beam, every slot filled.
    assert np.all(out.tokens_used > beam_search_budget(NUM_LEVELS, 1)) and np.all(out.valid)
    # Each evaluated node's path ends in its own row: rows are distinct, the root's is 0.
    for b in range(BATCH):
        n = tree.num_nodes[b]
        inner = np.flatnonzero(tree.depth[b, :n] < NUM_LEVELS)
        own_rows = cached_tree.kv_path[b, inner, tree.depth[b, inner]]
        np.testing.assert_array_equal(np.sort(own_rows), np.arange(len(inner)))
