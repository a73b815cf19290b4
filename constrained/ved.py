"""Value-guided efficient decoding (VED): the RL stage's rollout search, static shapes, batched.

Data flow: model + value head -> **VED rollouts** -> rewards -> RL losses
(docs/rl.md, "Rollouts"; the method and our decision 3: shared/vstar-method.md).
VED grows a prefix tree per request inside a fixed budget of forward tokens
and returns the best complete SIDs by value. Every node is a real trie prefix
(children come from the index's CSR rows), so every rollout is a catalogue item.

The batched variant (decision 3), per request:

* **Node table.** ``budget`` slots (one forward token per node, the root
  included, so the table can never outgrow the budget). A node holds its
  prefix codes, depth, trie state, parent, value ``V``, the entropy ``H`` of
  the policy over its valid children, priority ``G = V + lam * H``, visit count
  ``N`` (the size of its subtree: each new node adds one to itself and to
  every ancestor) and which of its children are already in the tree.
* **Initialisation.** The root, then a constrained beam search of width
  ``init_beam_width`` down to the leaves under the same restricted policy
  (``normalization="trie"``), each kept beam a node: ``1 + L * init_beam_width``
  tokens at most, so the tree holds complete SIDs from the start.
  ``init_beam_width=0`` starts from the root alone.
* **Iteration** (``num_iterations`` of them, fixed): among the nodes that
  exist, are not complete, have a not-yet-expanded valid child and pass the
  depth-mean gate ``G(s) >= mean G of the existing nodes at depth(s)``, take
  the ``k`` best by ``U = G + beta * sqrt(ln(N_root + 1) / (N + 1))`` (masked
  top-k); give each one child drawn from the policy renormalised over its
  unexpanded valid children; evaluate the new nodes in one ``node_fn`` call;
  back up the visit counts. A node that would exceed the budget is not added.
* **Output.** The ``num_outputs`` complete leaves of highest value.

Where this differs from the paper's one-node-at-a-time search: selection is a
top-k over every eligible node rather than a descent from the root by U; the
gate masks the top-k rather than vetoing the chosen node afterwards (vetoing
would leave the same rejected nodes on top of U every iteration, which then
stalls); a node's V and H are its own prefix's (the paper's code gives a child
its parent's); N(s) counts the whole subtree from the start (the paper's code
leaves the initial tree's inner nodes at 1). All children come from the CSR
rows, at the width of the widest row of any level (the dense tables would save
nothing here: a node reads one row). Compute: each step evaluates its full
static width (``init_beam_width`` prefixes per initial level, ``k`` per
iteration) whether or not every slot adds a node; the budget counts added
nodes, the paper's measure (Eq. 10).

Randomness: one uniform number per (iteration, request, slot) draws the child
by inverse CDF, so a plain NumPy implementation replays a run node for node
(tests/test_ved.py); :func:`ved_uniforms` draws them from a key.

The model contract::

    logits, values = node_fn(prefix_codes, prefix_len)
      prefix_codes: int32[B, M, L], codes of each prefix, -1 past its length
      prefix_len:   int32[B, M], 0 (the root) .. L (a complete SID)
      logits:       float[B, M, vocab], predict the code at level prefix_len
                    (ignored at prefix_len = L)
      values:       float[B, M], V(prefix)

Slots that add no node are sent as the root prefix (length 0) and ignored.
A genrec model provides it from ``decode_hidden`` and a ``ValueHead``, the
history encoded once outside (:func:`prefix_input_tokens`, :func:`at_prefix_end`)::

    def node_fn(prefix_codes, prefix_len):
        tokens = prefix_input_tokens(prefix_codes, token_offsets, BOS_ID)  # [B, M, L + 1]
        logits, hidden = model.decode_hidden(shared, tokens)
        return at_prefix_end(logits, prefix_len), value_head(at_prefix_end(hidden, prefix_len))

The policy of a node is the softmax of ``logits`` at its valid children's
model tokens (``code + token_offsets[level]``) renormalised over them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from constrained.beam_search import _candidate_log_probs, _top_k_padded
from constrained.index import DeviceIndex

NodeFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

# The depth-mean gate compares G with a float32 mean; this relative slack keeps
# a node whose G equals the mean (every node of a depth alike) from failing on
# rounding of the sum.
GATE_TOLERANCE = 1e-5


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VEDTree:
    """The node table of every request (``N = budget`` slots, ``W`` = widest trie row).

    Slots ``num_nodes[b] ..`` are empty: depth -1, parent -1, codes -1.

    num_nodes: int32[B], nodes in the tree = forward tokens spent
    codes: int32[B, N, L], prefix codes, -1 past the depth
    depth: int32[B, N], prefix length (0 = root, L = complete SID)
    trie_state: int32[B, N], trie state of the prefix; at depth L the sorted item row
    parent: int32[B, N], slot of the parent (-1 for the root)
    values: float32[B, N], V(prefix)
    entropy: float32[B, N], entropy of the policy over the valid children (0 at depth L)
    priority: float32[B, N], G = V + lam * H
    visits: int32[B, N], N(s): nodes in the subtree of s, s included
    child_log_probs: float32[B, N, W], the policy over the node's CSR row, -inf past it
    expanded: bool[B, N, W], which children of the CSR row are in the tree
    token_log_probs: float32[B, N, L], log pi(code_l | s_l) along the path, 0 past the depth
    """

    num_nodes: jax.Array
    codes: jax.Array
    depth: jax.Array
    trie_state: jax.Array
    parent: jax.Array
    values: jax.Array
    entropy: jax.Array
    priority: jax.Array
    visits: jax.Array
    child_log_probs: jax.Array
    expanded: jax.Array
    token_log_probs: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VEDOutput:
    """The best complete leaves of each request's tree, highest value first.

    item_ids: int[B, G] (-1 where invalid)
    sid_codes: int32[B, G, L] (-1 where invalid)
    values: float32[B, G], V of the leaf (-inf where invalid)
    valid: bool[B, G], False when the tree holds fewer than G complete SIDs
    tokens_used: int32[B], forward tokens spent (= nodes in the tree, <= budget)
    token_log_probs: float32[B, G, L], log pi(code_l | s_l) of each code under the
      restricted policy at search time (0 where invalid)
    """

    item_ids: jax.Array
    sid_codes: jax.Array
    values: jax.Array
    valid: jax.Array
    tokens_used: jax.Array
    token_log_probs: jax.Array


def beam_search_budget(num_levels: int, beam_width: int) -> int:
    """Forward tokens of one width-``beam_width`` KV-cached beam search, ``1 + (L - 1) * B``
    (Eq. 10; docs/rl.md, "Budget"): every rollout arm gets this budget by default."""
    return 1 + (num_levels - 1) * beam_width


def ved_uniforms(key: jax.Array, *, num_iterations: int, num_requests: int, nodes_per_iteration: int) -> jax.Array:
    """The random numbers of one VED run: float32[num_iterations, B, k] in [0, 1)."""
    return jax.random.uniform(key, (num_iterations, num_requests, nodes_per_iteration), jnp.float32)


def prefix_input_tokens(prefix_codes: jax.Array, token_offsets, start_token: int) -> jax.Array:
    """Decoder inputs of prefixes, ``int32[..., L + 1]`` = ``[start, y_1, .., y_L]`` (glue for ``node_fn``).

    ``y_l = code + token_offsets[l]``; the -1 padding past a prefix becomes
    ``start_token`` (any valid id: a causal decoder's position ``p`` never
    reads later positions). Position ``prefix_len`` then reads the prefix
    (:func:`at_prefix_end`), as ``decode_hidden`` defines (docs/rl.md).
    """
    offsets = jnp.asarray(token_offsets, jnp.int32)
    tokens = jnp.where(prefix_codes >= 0, prefix_codes + offsets, start_token)
    start = jnp.full(prefix_codes.shape[:-1] + (1,), start_token, jnp.int32)
    return jnp.concatenate([start, tokens.astype(jnp.int32)], axis=-1)


def at_prefix_end(per_position: jax.Array, prefix_len: jax.Array) -> jax.Array:
    """``per_position[b, n, prefix_len[b, n], ...]``: the logits or state that reads each prefix.

    per_position: [B, N, P, ...]; prefix_len: int32[B, N] in ``0 .. P - 1``.
    """
    index = prefix_len.reshape(prefix_len.shape + (1,) * (per_position.ndim - 2))
    return jnp.take_along_axis(per_position, index, axis=2)[:, :, 0]


def _row_width(index: DeviceIndex) -> int:
    return max(index.meta.max_branch)


def _children(index: DeviceIndex, states: jax.Array, has_children: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The CSR row of each state at the static width ``W`` of the widest row (any level).

    Returns codes (int32[..., W]) and valid (bool[..., W]); rows of
    ``has_children=False`` (complete SIDs, empty slots) are all invalid.
    """
    width = _row_width(index)
    states = jnp.where(has_children, states, 0)
    starts = jnp.take(index.csr_indptr, states)
    ends = jnp.take(index.csr_indptr, states + 1)
    positions = starts[..., None] + jnp.arange(width, dtype=starts.dtype)
    valid = (positions < ends[..., None]) & has_children[..., None]
    positions = jnp.minimum(positions, index.csr_codes.shape[0] - 1)
    return jnp.take(index.csr_codes, positions), valid


def _evaluate(index: DeviceIndex, node_fn: NodeFn, codes, depth, trie_state, lam: float):
    """One batched ``node_fn`` call on prefixes ``codes: int32[B, M, L]`` of length ``depth``.

    Returns values, entropy, priority (float32[B, M]) and the policy's
    log-probs over each node's CSR row (float32[B, M, W], -inf past it).
    """
    meta = index.meta
    num_levels = meta.num_levels
    logits, values = node_fn(codes, depth)
    values = values.astype(jnp.float32)
    child_codes, child_valid = _children(index, trie_state, depth < num_levels)
    offsets = jnp.asarray(meta.token_offsets, jnp.int32)[jnp.clip(depth, 0, num_levels - 1)]
    log_probs = _candidate_log_probs(logits, child_codes + offsets[..., None], child_valid, "trie")
    log_probs = jnp.where(child_valid, log_probs, -jnp.inf)
    probs = jnp.exp(log_probs)
    entropy = -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)
    return values, entropy, values + lam * entropy, log_probs


def _grow(tree: VEDTree, index: DeviceIndex, node_fn: NodeFn, parents, positions, add, lam: float):
    """Adds child ``positions[b, j]`` (of the CSR row) of node ``parents[b, j]`` where ``add``.

    New nodes take the next free slots in ``j`` order; one past the table is
    dropped (the budget). Evaluates all new nodes in one ``node_fn`` call and
    backs up the visit counts. Returns the tree and the slot of each new node
    (int32[B, M], ``N`` where none was added).
    """
    batch, table_size, num_levels = tree.codes.shape
    rows = jnp.arange(batch)[:, None]
    add = add & (parents >= 0)
    slots = tree.num_nodes[:, None] + jnp.cumsum(add, axis=1, dtype=jnp.int32) - 1
    add = add & (slots < table_size)
    slots = jnp.where(add, slots, table_size)  # out of range: scatters drop it

    parents_safe = jnp.maximum(parents, 0)
    parent_depth = tree.depth[rows, parents_safe]
    # The parent's CSR row starts at csr_indptr[state]; an added child is a valid entry of it.
    transition = jnp.take(index.csr_indptr, jnp.maximum(tree.trie_state[rows, parents_safe], 0)) + positions
    transition = jnp.clip(transition, 0, index.csr_codes.shape[0] - 1)
    code = jnp.take(index.csr_codes, transition)
    state = jnp.take(index.csr_next, transition)
    step_log_prob = tree.child_log_probs[rows, parents_safe, positions]
    at_level = jnp.arange(num_levels) == parent_depth[..., None]  # [B, M, L]
    codes = jnp.where(at_level, code[..., None], tree.codes[rows, parents_safe])
    token_log_probs = jnp.where(at_level, step_log_prob[..., None], tree.token_log_probs[rows, parents_safe])
    # Slots that add nothing are evaluated as the root prefix and ignored.
    codes = jnp.where(add[..., None], codes, -1)
    depth = jnp.where(add, parent_depth + 1, 0)
    state = jnp.where(add, state, 0)
    values, entropy, priority, child_log_probs = _evaluate(index, node_fn, codes, depth, state, lam)

    def put(table, new):
        return table.at[rows, slots].set(new, mode="drop")

    visits = put(tree.visits, jnp.ones_like(slots))
    ancestors = jnp.where(add, parents, -1)
    for _ in range(num_levels):  # a new node has at most L ancestors
        visits = visits.at[rows, jnp.where(ancestors >= 0, ancestors, table_size)].add(1, mode="drop")
        ancestors = jnp.where(ancestors >= 0, tree.parent[rows, jnp.maximum(ancestors, 0)], -1)
    expanded = tree.expanded.at[rows, jnp.where(add, parents_safe, table_size), positions].set(True, mode="drop")
    tree = VEDTree(
        num_nodes=tree.num_nodes + jnp.sum(add, axis=1, dtype=jnp.int32),
        codes=put(tree.codes, codes),
        depth=put(tree.depth, depth),
        trie_state=put(tree.trie_state, state),
        parent=put(tree.parent, parents),
        values=put(tree.values, values),
        entropy=put(tree.entropy, entropy),
        priority=put(tree.priority, priority),
        visits=visits,
        child_log_probs=put(tree.child_log_probs, child_log_probs),
        expanded=expanded,
        token_log_probs=put(tree.token_log_probs, token_log_probs),
    )
    return tree, slots


def _initial_tree(index: DeviceIndex, node_fn: NodeFn, batch: int, budget: int, init_beam_width: int, lam: float):
    """The root, then a width-``init_beam_width`` beam search under the restricted policy, every beam a node."""
    num_levels = index.meta.num_levels
    width = _row_width(index)
    root_codes = jnp.full((batch, 1, num_levels), -1, jnp.int32)
    root_depth = jnp.zeros((batch, 1), jnp.int32)
    values, entropy, priority, child_log_probs = _evaluate(index, node_fn, root_codes, root_depth, root_depth, lam)

    def table(fill, dtype, *trailing):
        return jnp.full((batch, budget, *trailing), fill, dtype)

    tree = VEDTree(
        num_nodes=jnp.ones((batch,), jnp.int32),
        codes=table(-1, jnp.int32, num_levels),
        depth=table(-1, jnp.int32).at[:, 0].set(0),
        trie_state=table(-1, jnp.int32).at[:, 0].set(0),
        parent=table(-1, jnp.int32),
        values=table(0.0, jnp.float32).at[:, 0].set(values[:, 0]),
        entropy=table(0.0, jnp.float32).at[:, 0].set(entropy[:, 0]),
        priority=table(0.0, jnp.float32).at[:, 0].set(priority[:, 0]),
        visits=table(0, jnp.int32).at[:, 0].set(1),
        child_log_probs=table(-jnp.inf, jnp.float32, width).at[:, 0].set(child_log_probs[:, 0]),
        expanded=table(False, bool, width),
        token_log_probs=table(0.0, jnp.float32, num_levels),
    )
    if init_beam_width == 0:
        return tree
    # Every level has the same shapes (the root's beam padded to the width), so
    # one compiled body serves all of them.
    rows = jnp.arange(batch)[:, None]
    beam_nodes = jnp.zeros((batch, init_beam_width), jnp.int32)
    beam_scores = jnp.full((batch, init_beam_width), -jnp.inf, jnp.float32).at[:, 0].set(0.0)

    def level(carry, _):
        tree, beam_nodes, beam_scores = carry
        cand = beam_scores[..., None] + tree.child_log_probs[rows, beam_nodes]  # [B, beams, W]
        scores, flat = _top_k_padded(cand.reshape(batch, -1), init_beam_width)
        flat = jnp.minimum(flat, init_beam_width * width - 1)
        parents = jnp.take_along_axis(beam_nodes, flat // width, axis=1)
        tree, slots = _grow(tree, index, node_fn, parents, flat % width, scores > -jnp.inf, lam)
        added = slots < budget
        return (tree, jnp.where(added, slots, 0), jnp.where(added, scores, -jnp.inf)), None

    (tree, _, _), _ = lax.scan(level, (tree, beam_nodes, beam_scores), None, length=num_levels)
    return tree


def _expand_once(tree: VEDTree, uniforms, index: DeviceIndex, node_fn: NodeFn, lam: float, beta: float):
    """One iteration: masked top-k by U among gated expandable nodes, one sampled child each.

    uniforms: float32[B, k], one per selection slot.
    """
    batch, table_size, num_levels = tree.codes.shape
    rows = jnp.arange(batch)[:, None]
    exists = jnp.arange(table_size) < tree.num_nodes[:, None]
    remaining = (tree.child_log_probs > -jnp.inf) & ~tree.expanded  # [B, N, W]
    scored = exists & jnp.isfinite(tree.priority)
    # Depth-mean gate (Eq. 14): the mean of G over the existing nodes of each depth.
    at_depth = (tree.depth[..., None] == jnp.arange(num_levels)) & scored[..., None]  # [B, N, L]
    depth_sum = jnp.sum(jnp.where(at_depth, tree.priority[..., None], 0.0), axis=1)
    depth_mean = depth_sum / jnp.maximum(jnp.sum(at_depth, axis=1), 1)  # [B, L]
    mean = jnp.take_along_axis(depth_mean, jnp.clip(tree.depth, 0, num_levels - 1), axis=1)
    gate = tree.priority >= mean - GATE_TOLERANCE * jnp.maximum(1.0, jnp.abs(mean))
    eligible = scored & (tree.depth < num_levels) & jnp.any(remaining, axis=-1) & gate
    # Selection (Eq. 13), every eligible node a candidate.
    root_visits = tree.visits[:, :1].astype(jnp.float32)
    explore = beta * jnp.sqrt(jnp.log(root_visits + 1.0) / (tree.visits.astype(jnp.float32) + 1.0))
    ucb = jnp.where(eligible, tree.priority + explore, -jnp.inf)
    top_ucb, selected = _top_k_padded(ucb, uniforms.shape[1])
    selected = jnp.minimum(selected, table_size - 1)
    chosen = top_ucb > -jnp.inf
    # One child per chosen node, by inverse CDF over its unexpanded valid children.
    open_children = remaining[rows, selected]  # [B, k, W]
    log_probs = jnp.where(open_children, tree.child_log_probs[rows, selected], -jnp.inf)
    weights = jnp.where(open_children, jnp.exp(log_probs - jnp.max(log_probs, axis=-1, keepdims=True)), 0.0)
    cdf = jnp.cumsum(weights, axis=-1)
    position = jnp.sum(cdf <= uniforms[..., None] * cdf[..., -1:], axis=-1, dtype=jnp.int32)
    width = open_children.shape[-1]
    last_open = width - 1 - jnp.argmax(open_children[..., ::-1], axis=-1).astype(jnp.int32)
    position = jnp.minimum(position, last_open)
    tree, _ = _grow(tree, index, node_fn, jnp.where(chosen, selected, -1), position, chosen, lam)
    return tree


def value_guided_tree(
    index: DeviceIndex,
    node_fn: NodeFn,
    uniforms: jax.Array,
    *,
    budget: int,
    init_beam_width: int,
    lam: float | jax.Array = 0.1,
    beta: float | jax.Array = 1.0,
) -> VEDTree:
    """Grows the VED tree of every request (module docstring); traceable.

    Args:
      index: trie on the device (:meth:`TrieIndex.to_device`).
      node_fn: evaluates prefixes (module docstring).
      uniforms: float32[num_iterations, B, k] in [0, 1) (:func:`ved_uniforms`);
        its shape fixes the iteration count, the batch and the nodes per iteration.
      budget: forward tokens per request = node table size (root included).
      init_beam_width: width of the initial beam search (0: the root alone).
      lam: entropy weight of the priority G (Eq. 11).
      beta: exploration weight of U (Eq. 13). lam and beta may be traced scalars:
        one compile then serves every setting.
    """
    num_levels = index.meta.num_levels
    if uniforms.ndim != 3:
        raise ValueError(
            f"uniforms has shape {uniforms.shape}; expected [num_iterations, num_requests, nodes_per_iteration] "
            "(constrained.ved.ved_uniforms draws it)."
        )
    if init_beam_width < 0 or 1 + num_levels * init_beam_width > budget:
        raise ValueError(
            f"init_beam_width={init_beam_width} needs up to {1 + num_levels * max(init_beam_width, 0)} tokens "
            f"(1 + L * width, L={num_levels}) but the budget is {budget}; lower init_beam_width or raise the budget."
        )
    batch = uniforms.shape[1]
    tree = _initial_tree(index, node_fn, batch, budget, init_beam_width, lam)
    if uniforms.shape[0] == 0 or uniforms.shape[2] == 0:
        return tree

    def body(tree, step_uniforms):
        return _expand_once(tree, step_uniforms, index, node_fn, lam, beta), None

    tree, _ = lax.scan(body, tree, uniforms.astype(jnp.float32))
    return tree


def best_leaves(index: DeviceIndex, tree: VEDTree, num_outputs: int) -> VEDOutput:
    """The ``num_outputs`` complete SIDs of highest value per request (ties: earlier node first)."""
    batch, table_size, num_levels = tree.codes.shape
    rows = jnp.arange(batch)[:, None]
    exists = jnp.arange(table_size) < tree.num_nodes[:, None]
    is_leaf = exists & (tree.depth == num_levels)
    # Every leaf ranks above every non-leaf, a NaN value last among leaves.
    big = jnp.finfo(jnp.float32).max
    key = jnp.where(is_leaf, jnp.clip(jnp.nan_to_num(tree.values, nan=-big), -big, big), -jnp.inf)
    top, nodes = _top_k_padded(key, num_outputs)
    nodes = jnp.minimum(nodes, table_size - 1)
    valid = top > -jnp.inf
    sorted_rows = jnp.clip(tree.trie_state[rows, nodes], 0, index.meta.num_items - 1)
    return VEDOutput(
        item_ids=jnp.where(valid, jnp.take(index.sorted_item_ids, sorted_rows), -1),
        sid_codes=jnp.where(valid[..., None], tree.codes[rows, nodes], -1),
        values=jnp.where(valid, tree.values[rows, nodes], -jnp.inf),
        valid=valid,
        tokens_used=tree.num_nodes,
        token_log_probs=jnp.where(valid[..., None], tree.token_log_probs[rows, nodes], 0.0),
    )


def default_init_beam_width(num_levels: int, num_outputs: int, budget: int) -> int:
    """``num_outputs // 4`` (at least 1), lowered until the initial beam fits the budget."""
    return max(0, min(max(1, num_outputs // 4), (budget - 1) // num_levels))


def value_guided_decode(
    index: DeviceIndex,
    node_fn: NodeFn,
    uniforms: jax.Array,
    *,
    num_outputs: int,
    budget: int | None = None,
    init_beam_width: int | None = None,
    lam: float | jax.Array = 0.1,
    beta: float | jax.Array = 1.0,
) -> VEDOutput:
    """VED rollouts: ``num_outputs`` catalogue SIDs per request within ``budget`` forward tokens.

    Traceable with static shapes; jit it with ``node_fn`` and the keyword
    arguments static (one compile per shape). Algorithm, model contract and
    randomness: module docstring; budgets: docs/rl.md.

    Args:
      index: trie on the device (:meth:`TrieIndex.to_device`).
      node_fn: ``(prefix_codes int32[B, M, L], prefix_len int32[B, M]) -> (logits float[B, M, V], values float[B, M])``.
      uniforms: float32[num_iterations, B, k] (:func:`ved_uniforms`): fixes the
        number of iterations, the batch and ``k``, the nodes added per iteration.
      num_outputs: G, rollouts per request.
      budget: forward tokens per request, each tree node (root included) one;
        default :func:`beam_search_budget` ``(L, num_outputs)``, the beam-rollout arm's cost.
      init_beam_width: width of the initial beam search; default
        :func:`default_init_beam_width`; 0 starts from the root alone.
      lam: entropy weight in G = V + lam * H.
      beta: exploration weight in U = G + beta * sqrt(ln(N_root + 1) / (N + 1)).

    Returns:
      VEDOutput with leaves [B, num_outputs, ...], highest value first.
    """
    num_levels = index.meta.num_levels
    if num_outputs < 1:
        raise ValueError(f"num_outputs={num_outputs}; expected at least 1 rollout per request.")
    if budget is None:
        budget = beam_search_budget(num_levels, num_outputs)
    if budget < 1:
        raise ValueError(f"budget={budget}; the root alone costs 1 forward token.")
    if init_beam_width is None:
        init_beam_width = default_init_beam_width(num_levels, num_outputs, budget)
    tree = value_guided_tree(
        index, node_fn, uniforms, budget=budget, init_beam_width=init_beam_width, lam=lam, beta=beta
    )
    return best_leaves(index, tree, num_outputs)
