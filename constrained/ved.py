"""Value-guided efficient decoding (VED): the RL stage's rollout search, static shapes, batched.

Data flow: model + value head -> **VED rollouts** -> rewards -> RL losses
(docs/rl.md, "Rollouts"; the method and our decision 3: shared/vstar-method.md).
VED grows a prefix tree per request inside a fixed budget of forward tokens
and returns ``G`` complete SIDs. Every node is a real trie prefix (children
come from the index's CSR rows), so every rollout is a catalogue item.

**Budget** (docs/rl.md, "Budget"), counted as the constrained beam search
counts it: a node whose prefix is shorter than ``L`` is evaluated by
``node_fn`` and costs one forward token (the root included); a complete SID
costs none, since it is read off its evaluated depth-``L - 1`` parent's
logits, as the beam search chooses its last level. So a width-``w`` beam
search and VED's width-``w`` initial beam both cost ``1 + (L - 1) * w``.

The batched variant (decision 3), per request:

* **Node table.** A node holds its prefix codes, depth, trie state, parent,
  value ``V``, the entropy ``H`` of the policy over its valid children,
  priority ``G = V + lam * H``, visit count ``N`` (the size of its subtree:
  each new node adds one to itself and to every ancestor) and which of its
  children are already in the tree. A leaf (depth ``L``) is not evaluated: it
  carries its parent's ``V`` and ``H = 0``. The table is sized for every node
  the run can add (:func:`tree_size`).
* **Initialisation.** The root, then a constrained beam search of width
  ``init_beam_width`` down to the leaves under the same restricted policy
  (``normalization="trie"``), each kept beam a node, so the tree holds
  complete SIDs from the start. ``init_beam_width=0`` starts from the root alone.
* **Iteration** (``num_iterations`` of them, fixed): among the nodes that
  exist, are not complete, have a not-yet-expanded valid child and pass the
  depth-mean gate ``G(s) >= mean G of the existing nodes at depth(s)``, take
  the ``k`` best: first, while budget is left, the nodes whose child costs a
  token (depth < ``L - 1``), then depth ``L - 1`` nodes, whose child is a free
  leaf, each group by ``U = G + beta * sqrt(ln(N_root + 1) / (N + 1))``. (The
  iteration count is sized to spend the budget, so a free pick never takes a
  slot an evaluation could use.) Give each one child drawn from the policy
  renormalised over its unexpanded valid children; evaluate the new non-leaf
  nodes in one ``node_fn`` call; back up the visit counts. A non-leaf node
  past the budget is not added.
* **Output.** ``G`` complete SIDs among (a) the tree's leaves, the search's own
  choices, and (b) the not-yet-added valid children of its evaluated
  depth-``L - 1`` nodes, free to read off; (a) before (b), each ranked by the
  value of the parent it was read off, siblings by the policy's probability
  (:func:`best_leaves` says why). Every slot is valid whenever the evaluated
  depth-``L - 1`` nodes have ``G`` children in all.

Where this differs from the paper's one-node-at-a-time search: selection is a
top-k over every eligible node rather than a descent from the root by U; the
gate masks the top-k rather than vetoing the chosen node afterwards (vetoing
would leave the same rejected nodes on top of U every iteration, which then
stalls); a node's V and H are its own prefix's (the paper's code gives a child
its parent's), but a leaf's are its parent's (leaves cost no forward pass);
N(s) counts the whole subtree from the start (the paper's code leaves the
initial tree's inner nodes at 1); leaves cost no token, so evaluations take
the selection slots before free leaves do, and slots left empty by the
search's leaves are filled from (b). All children come from the CSR rows, at the width of the
widest row of any level (the dense tables would save nothing here: a node
reads one row). Compute: each step evaluates its full static width
(``init_beam_width`` prefixes per initial level above the leaves, ``k`` per
iteration) whether or not every slot adds an evaluated node; the budget
counts evaluated nodes, the paper's measure (Eq. 10).

Randomness: one uniform number per (iteration, request, slot) draws the child
by inverse CDF, so a plain NumPy implementation replays a run node for node
(tests/test_ved.py); :func:`ved_uniforms` draws them from a key.

The model contract::

    logits, values = node_fn(prefix_codes, prefix_len)
      prefix_codes: int32[B, M, L], codes of each prefix, -1 past its length
      prefix_len:   int32[B, M], 0 (the root) .. L - 1
      logits:       float[B, M, vocab], predict the code at level prefix_len
      values:       float[B, M], V(prefix)

Slots that evaluate no node are sent as the root prefix (length 0) and
ignored. A genrec model provides it: ``genrec.models.make_node_fn(model,
value_head, shared, token_offsets)``, the history encoded once outside.

**Cached evaluation** (``cached=True``): a decoder computes a node's logits
from its own input position only, if it keeps the keys/values its ancestors
computed, as the beam search keeps its beams'. The node function then takes
and returns them::

    logits, values, own_kv = node_fn(prefix_codes, prefix_len, ancestor_kv)
      ancestor_kv: pytree, leaves [B, M, L, ...]: entry j < prefix_len holds the
                   own_kv its depth-j ancestor returned (later entries: anything);
                   None at the root's call (every node a root)
      own_kv:      pytree, leaves [B, M, ...]: this node's, for its children

and the tree keeps every evaluated node's ``own_kv`` (``VEDTree.node_kv``, a
row per evaluated node, ``VEDTree.kv_path`` the rows of each node's chain), so
each evaluation costs one decoder position instead of ``L + 1`` (docs/rl.md,
"Budget"); the search is the same, its results equal to float rounding.
Leaves are never evaluated and hold none. Memory: ``B x budget`` rows of
``layers x 2 x heads x head_dim`` values; 294 MiB at B = 512, budget 49 with
the T5 preset ``t5_small_rec`` (4 decoder layers, 6 x 64 heads, float32).
``genrec.models.make_cached_node_fn`` provides it
(``SIDRecommender.decode_node``); the RL step uses it.

The policy of a node is the softmax of ``logits`` at its valid children's
model tokens (``code + token_offsets[level]``) renormalised over them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from constrained.beam_search import _candidate_log_probs, _top_k_padded
from constrained.index import DeviceIndex

NodeFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# (prefix_codes, prefix_len, ancestor_kv) -> (logits, values, own_kv): module docstring, "Cached evaluation".
CachedNodeFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, jax.Array, Any]]

# The depth-mean gate compares G with a float32 mean; this relative slack keeps
# a node whose G equals the mean (every node of a depth alike) from failing on
# rounding of the sum.
GATE_TOLERANCE = 1e-5


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VEDTree:
    """The node table of every request (``N`` slots, :func:`tree_size`; ``W`` = widest trie row).

    Slots ``num_nodes[b] ..`` are empty: depth -1, parent -1, codes -1.

    num_nodes: int32[B], nodes in the tree, leaves included
    tokens_used: int32[B], evaluated nodes (depth < L) = forward tokens spent
    codes: int32[B, N, L], prefix codes, -1 past the depth
    depth: int32[B, N], prefix length (0 = root, L = complete SID)
    trie_state: int32[B, N], trie state of the prefix; at depth L the sorted item row
    parent: int32[B, N], slot of the parent (-1 for the root)
    values: float32[B, N], V(prefix); a leaf's is its parent's (leaves are not evaluated)
    entropy: float32[B, N], entropy of the policy over the valid children (0 at depth L)
    priority: float32[B, N], G = V + lam * H
    visits: int32[B, N], N(s): nodes in the subtree of s, s included
    child_log_probs: float32[B, N, W], the policy over the node's CSR row, -inf past it
    expanded: bool[B, N, W], which children of the CSR row are in the tree
    token_log_probs: float32[B, N, L], log pi(code_l | s_l) along the path, 0 past the depth
    kv_path: int32[B, N, L] or None (uncached): entry j < depth is the node_kv row of the
      node's depth-j ancestor, entry depth its own (evaluated nodes); 0 elsewhere
    node_kv: pytree with leaves [B, R, ...] or None (uncached): row r holds the own_kv of the
      r-th evaluated node (the root first), R = min(budget, N) rows
    """

    num_nodes: jax.Array
    tokens_used: jax.Array
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
    kv_path: jax.Array | None = None
    node_kv: Any = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VEDOutput:
    """``G`` complete SIDs per request: the search's leaves first, then free children (:func:`best_leaves`).

    item_ids: int[B, G] (-1 where invalid)
    sid_codes: int32[B, G, L] (-1 where invalid)
    values: float32[B, G], V of the depth-(L - 1) node each SID was read off (-inf where invalid)
    valid: bool[B, G], False when the evaluated depth-(L - 1) nodes have fewer than G children in all
    tokens_used: int32[B], forward tokens spent (= evaluated nodes, <= budget)
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
    (Eq. 10; docs/rl.md, "Budget"): the root, then ``B`` prefixes of each length ``1 .. L - 1``; the last
    level is read off those logits. Every rollout arm gets this budget by default, and VED's width-``B``
    initial beam costs the same."""
    return 1 + (num_levels - 1) * beam_width


def tree_size(num_levels: int, budget: int, init_beam_width: int, num_iterations: int, nodes_per_iteration: int) -> int:
    """Node-table slots that hold every node a run can add: at most ``budget`` evaluated nodes
    and ``init_beam_width + num_iterations * nodes_per_iteration`` leaves."""
    added = num_iterations * nodes_per_iteration
    evaluated = min(budget, beam_search_budget(num_levels, init_beam_width) + added)
    return evaluated + init_beam_width + added


def ved_uniforms(key: jax.Array, *, num_iterations: int, num_requests: int, nodes_per_iteration: int) -> jax.Array:
    """The random numbers of one VED run: float32[num_iterations, B, k] in [0, 1)."""
    return jax.random.uniform(key, (num_iterations, num_requests, nodes_per_iteration), jnp.float32)


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


def _child_transition(index: DeviceIndex, parent_state: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Code and trie state (at depth L the sorted item row) of child ``positions`` of each parent's CSR row."""
    transition = jnp.take(index.csr_indptr, jnp.maximum(parent_state, 0)) + positions
    transition = jnp.clip(transition, 0, index.csr_codes.shape[0] - 1)
    return jnp.take(index.csr_codes, transition), jnp.take(index.csr_next, transition)


def _evaluate(index: DeviceIndex, node_fn: NodeFn | CachedNodeFn, codes, depth, trie_state, lam: float,
              cached: bool = False, ancestor_kv: Any = None):
    """One batched ``node_fn`` call on prefixes ``codes: int32[B, M, L]`` of length ``depth`` (< L).

    Returns values, entropy, priority (float32[B, M]), the policy's
    log-probs over each node's CSR row (float32[B, M, W], -inf past it) and,
    when ``cached``, the nodes' own K/V (module docstring; else None).
    """
    meta = index.meta
    num_levels = meta.num_levels
    if cached:
        logits, values, own_kv = node_fn(codes, depth, ancestor_kv)
    else:
        (logits, values), own_kv = node_fn(codes, depth), None
    values = values.astype(jnp.float32)
    child_codes, child_valid = _children(index, trie_state, depth < num_levels)
    offsets = jnp.asarray(meta.token_offsets, jnp.int32)[jnp.clip(depth, 0, num_levels - 1)]
    log_probs = _candidate_log_probs(logits, child_codes + offsets[..., None], child_valid, "trie")
    log_probs = jnp.where(child_valid, log_probs, -jnp.inf)
    probs = jnp.exp(log_probs)
    entropy = -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)
    return values, entropy, values + lam * entropy, log_probs, own_kv


def _grow(tree: VEDTree, index: DeviceIndex, node_fn: NodeFn | CachedNodeFn, parents, positions, add, lam: float,
          budget: int, evaluate: bool = True):
    """Adds child ``positions[b, j]`` (of the CSR row) of node ``parents[b, j]`` where ``add``.

    New nodes take the next free slots in ``j`` order; a non-leaf one past the
    budget is dropped. Evaluates the new non-leaf nodes in one ``node_fn`` call
    (none when ``evaluate`` is False: every new node is then a leaf), on their
    ancestors' cached K/V when the tree holds them (``tree.kv_path`` set), and
    backs up the visit counts. Returns the tree and the slot of each new node
    (int32[B, M], ``N`` where none was added).
    """
    batch, table_size, num_levels = tree.codes.shape
    rows = jnp.arange(batch)[:, None]
    add = add & (parents >= 0)
    parents_safe = jnp.maximum(parents, 0)
    parent_depth = tree.depth[rows, parents_safe]
    leaf = parent_depth + 1 == num_levels
    # Leaves are free; the evaluated nodes are charged in slot order until the budget is spent.
    charged = tree.tokens_used[:, None] + jnp.cumsum(add & ~leaf, axis=1, dtype=jnp.int32)
    add = add & (leaf | (charged <= budget))
    slots = tree.num_nodes[:, None] + jnp.cumsum(add, axis=1, dtype=jnp.int32) - 1
    add = add & (slots < table_size)  # never binds: tree_size holds every node a run can add
    slots = jnp.where(add, slots, table_size)  # out of range: scatters drop it
    evaluated = add & ~leaf

    code, state = _child_transition(index, tree.trie_state[rows, parents_safe], positions)
    step_log_prob = tree.child_log_probs[rows, parents_safe, positions]
    at_level = jnp.arange(num_levels) == parent_depth[..., None]  # [B, M, L]
    codes = jnp.where(at_level, code[..., None], tree.codes[rows, parents_safe])
    token_log_probs = jnp.where(at_level, step_log_prob[..., None], tree.token_log_probs[rows, parents_safe])
    codes = jnp.where(add[..., None], codes, -1)
    depth = jnp.where(add, parent_depth + 1, 0)
    state = jnp.where(add, state, 0)
    # A leaf takes its parent's value and no children; only the other new nodes
    # are evaluated (slots that evaluate nothing are sent as the root prefix).
    parent_values = tree.values[rows, parents_safe]
    width = tree.child_log_probs.shape[-1]
    values, entropy, priority = parent_values, jnp.zeros_like(parent_values), parent_values
    child_log_probs = jnp.full(parents.shape + (width,), -jnp.inf, jnp.float32)
    cached = tree.kv_path is not None
    node_kv = tree.node_kv
    if cached:
        # The rows of the parent's chain, then the new node's own row (evaluation order) at its input position.
        parent_path = tree.kv_path[rows, parents_safe]  # [B, M, L]
        kv_rows = jax.tree.leaves(tree.node_kv)[0].shape[1]
        # Rows in evaluation order, counted over the nodes actually evaluated (out of range for leaves: dropped).
        own_row = jnp.where(evaluated, tree.tokens_used[:, None] + jnp.cumsum(evaluated, axis=1, dtype=jnp.int32) - 1,
                            kv_rows)
        kv_path = jnp.where(jnp.arange(num_levels) == depth[..., None], own_row[..., None], parent_path)
    if evaluate:
        ancestor_kv = None
        if cached:
            ancestor_kv = jax.tree.map(lambda table: table[rows[..., None], parent_path], tree.node_kv)
        *evaluation, own_kv = _evaluate(index, node_fn, jnp.where(evaluated[..., None], codes, -1),
                                        jnp.where(evaluated, depth, 0), jnp.where(evaluated, state, 0), lam,
                                        cached, ancestor_kv)
        values, entropy, priority, child_log_probs = (
            jnp.where(leaf.reshape(leaf.shape + (1,) * (new.ndim - 2)), old, new)
            for old, new in zip((values, entropy, priority, child_log_probs), evaluation)
        )
        if cached:
            node_kv = jax.tree.map(lambda table, own: table.at[rows, own_row].set(own.astype(table.dtype), mode="drop"),
                                   tree.node_kv, own_kv)

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
        tokens_used=tree.tokens_used + jnp.sum(evaluated, axis=1, dtype=jnp.int32),
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
        kv_path=put(tree.kv_path, kv_path) if cached else None,
        node_kv=node_kv,
    )
    return tree, slots


def _initial_tree(index: DeviceIndex, node_fn: NodeFn | CachedNodeFn, batch: int, table_size: int, budget: int,
                  init_beam_width: int, lam: float, cached: bool):
    """The root, then a width-``init_beam_width`` beam search under the restricted policy, every beam a node."""
    num_levels = index.meta.num_levels
    width = _row_width(index)
    root_codes = jnp.full((batch, 1, num_levels), -1, jnp.int32)
    root_depth = jnp.zeros((batch, 1), jnp.int32)
    values, entropy, priority, child_log_probs, root_kv = _evaluate(index, node_fn, root_codes, root_depth,
                                                                    root_depth, lam, cached)

    def table(fill, dtype, *trailing):
        return jnp.full((batch, table_size, *trailing), fill, dtype)

    kv_path = node_kv = None
    if cached:  # a row per evaluated node, the root's first
        kv_rows = min(budget, table_size)
        kv_path = table(0, jnp.int32, num_levels)
        node_kv = jax.tree.map(
            lambda own: jnp.zeros((batch, kv_rows) + own.shape[2:], own.dtype).at[:, 0].set(own[:, 0]), root_kv)

    tree = VEDTree(
        num_nodes=jnp.ones((batch,), jnp.int32),
        tokens_used=jnp.ones((batch,), jnp.int32),
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
        kv_path=kv_path,
        node_kv=node_kv,
    )
    if init_beam_width == 0:
        return tree
    # Every level has the same shapes (the root's beam padded to the width), so
    # one compiled body serves the levels above the leaves; the leaves' level
    # reads the last logits and evaluates nothing, as the beam search's last step.
    rows = jnp.arange(batch)[:, None]
    beam_nodes = jnp.zeros((batch, init_beam_width), jnp.int32)
    beam_scores = jnp.full((batch, init_beam_width), -jnp.inf, jnp.float32).at[:, 0].set(0.0)

    def level(carry, evaluate):
        tree, beam_nodes, beam_scores = carry
        cand = beam_scores[..., None] + tree.child_log_probs[rows, beam_nodes]  # [B, beams, W]
        scores, flat = _top_k_padded(cand.reshape(batch, -1), init_beam_width)
        flat = jnp.minimum(flat, init_beam_width * width - 1)
        parents = jnp.take_along_axis(beam_nodes, flat // width, axis=1)
        tree, slots = _grow(tree, index, node_fn, parents, flat % width, scores > -jnp.inf, lam, budget, evaluate)
        added = slots < table_size
        return tree, jnp.where(added, slots, 0), jnp.where(added, scores, -jnp.inf)

    carry = (tree, beam_nodes, beam_scores)
    if num_levels > 1:
        carry, _ = lax.scan(lambda carry, _: (level(carry, True), None), carry, None, length=num_levels - 1)
    tree, _, _ = level(carry, False)
    return tree


def _descending_key(values: jax.Array) -> jax.Array:
    """An ascending sort key that puts higher values first, NaN last, -0.0 equal to 0.0."""
    big = jnp.finfo(jnp.float32).max
    values = jnp.clip(jnp.nan_to_num(values.astype(jnp.float32), nan=-big), -big, big)
    return jnp.where(values == 0, 0.0, -values)


def _expand_once(tree: VEDTree, uniforms, index: DeviceIndex, node_fn: NodeFn | CachedNodeFn, lam: float, beta: float,
                 budget: int):
    """One iteration: the k best gated expandable nodes (charged ones first, then by U), one sampled child each.

    uniforms: float32[B, k], one per selection slot.
    """
    batch, table_size, num_levels = tree.codes.shape
    rows = jnp.arange(batch)[:, None]
    exists = jnp.arange(table_size) < tree.num_nodes[:, None]
    remaining = (tree.child_log_probs > -jnp.inf) & ~tree.expanded  # [B, N, W]
    scored = exists & jnp.isfinite(tree.priority)
    # Depth-mean gate (Eq. 14): the mean of G over the existing nodes of each depth (leaves have none).
    at_depth = (tree.depth[..., None] == jnp.arange(num_levels)) & scored[..., None]  # [B, N, L]
    depth_sum = jnp.sum(jnp.where(at_depth, tree.priority[..., None], 0.0), axis=1)
    depth_mean = depth_sum / jnp.maximum(jnp.sum(at_depth, axis=1), 1)  # [B, L]
    mean = jnp.take_along_axis(depth_mean, jnp.clip(tree.depth, 0, num_levels - 1), axis=1)
    gate = tree.priority >= mean - GATE_TOLERANCE * jnp.maximum(1.0, jnp.abs(mean))
    expandable = scored & (tree.depth < num_levels) & jnp.any(remaining, axis=-1) & gate
    # Selection (Eq. 13), every eligible node a candidate: the nodes whose child costs a token first
    # (while the budget lasts), then depth L - 1 nodes, whose child is a free leaf, in the slots left.
    charged = expandable & (tree.depth < num_levels - 1) & (tree.tokens_used[:, None] < budget)
    free = expandable & (tree.depth == num_levels - 1)
    root_visits = tree.visits[:, :1].astype(jnp.float32)
    explore = beta * jnp.sqrt(jnp.log(root_visits + 1.0) / (tree.visits.astype(jnp.float32) + 1.0))
    group = jnp.where(charged, 0, jnp.where(free, 1, 2))
    slot = jnp.broadcast_to(jnp.arange(table_size, dtype=jnp.int32), group.shape)
    group, _, selected = lax.sort((group, _descending_key(tree.priority + explore), slot), dimension=1, num_keys=3)
    k = uniforms.shape[1]
    if k > table_size:  # more slots than nodes
        pad = ((0, 0), (0, k - table_size))
        group, selected = jnp.pad(group, pad, constant_values=2), jnp.pad(selected, pad)
    selected, chosen = selected[:, :k], group[:, :k] < 2
    # One child per chosen node, by inverse CDF over its unexpanded valid children.
    open_children = remaining[rows, selected]  # [B, k, W]
    log_probs = jnp.where(open_children, tree.child_log_probs[rows, selected], -jnp.inf)
    weights = jnp.where(open_children, jnp.exp(log_probs - jnp.max(log_probs, axis=-1, keepdims=True)), 0.0)
    cdf = jnp.cumsum(weights, axis=-1)
    position = jnp.sum(cdf <= uniforms[..., None] * cdf[..., -1:], axis=-1, dtype=jnp.int32)
    width = open_children.shape[-1]
    last_open = width - 1 - jnp.argmax(open_children[..., ::-1], axis=-1).astype(jnp.int32)
    position = jnp.minimum(position, last_open)
    tree, _ = _grow(tree, index, node_fn, jnp.where(chosen, selected, -1), position, chosen, lam, budget)
    return tree


def value_guided_tree(
    index: DeviceIndex,
    node_fn: NodeFn | CachedNodeFn,
    uniforms: jax.Array,
    *,
    budget: int,
    init_beam_width: int,
    lam: float | jax.Array = 0.1,
    beta: float | jax.Array = 1.0,
    cached: bool = False,
) -> VEDTree:
    """Grows the VED tree of every request (module docstring); traceable.

    Args:
      index: trie on the device (:meth:`TrieIndex.to_device`).
      node_fn: evaluates prefixes (module docstring).
      uniforms: float32[num_iterations, B, k] in [0, 1) (:func:`ved_uniforms`);
        its shape fixes the iteration count, the batch and the nodes per iteration.
      budget: forward tokens per request = evaluated nodes (depth < L, root included).
      init_beam_width: width of the initial beam search (0: the root alone);
        it costs :func:`beam_search_budget` ``(L, init_beam_width)``.
      lam: entropy weight of the priority G (Eq. 11).
      beta: exploration weight of U (Eq. 13). lam and beta may be traced scalars:
        one compile then serves every setting.
      cached: ``node_fn`` is a :data:`CachedNodeFn` and the tree keeps its K/V
        (module docstring, "Cached evaluation").
    """
    num_levels = index.meta.num_levels
    if uniforms.ndim != 3:
        raise ValueError(
            f"uniforms has shape {uniforms.shape}; expected [num_iterations, num_requests, nodes_per_iteration] "
            "(constrained.ved.ved_uniforms draws it)."
        )
    if init_beam_width < 0 or beam_search_budget(num_levels, init_beam_width) > budget:
        raise ValueError(
            f"init_beam_width={init_beam_width} needs {beam_search_budget(num_levels, max(init_beam_width, 0))} "
            f"tokens (1 + (L - 1) * width, L={num_levels}) but the budget is {budget}; lower init_beam_width "
            "or raise the budget."
        )
    num_iterations, batch, nodes_per_iteration = uniforms.shape
    table_size = tree_size(num_levels, budget, init_beam_width, num_iterations, nodes_per_iteration)
    tree = _initial_tree(index, node_fn, batch, table_size, budget, init_beam_width, lam, cached)
    if num_iterations == 0 or nodes_per_iteration == 0:
        return tree

    def body(tree, step_uniforms):
        return _expand_once(tree, step_uniforms, index, node_fn, lam, beta, budget), None

    tree, _ = lax.scan(body, tree, uniforms.astype(jnp.float32))
    return tree


def best_leaves(index: DeviceIndex, tree: VEDTree, num_outputs: int) -> VEDOutput:
    """The ``num_outputs`` rollouts of each request, read off the tree without another forward pass.

    Candidates: (a) the tree's leaves, then (b) the children of its evaluated
    depth-``L - 1`` nodes not yet in it, which cost nothing (the beam search
    reads its last level the same way). Within each group they rank by the
    value ``V`` of the depth-``L - 1`` node they are read off, then by the
    policy's log-prob of the last code, then by slot. Why: a leaf has no value
    of its own (evaluating it would cost a forward token), and ``V`` of its
    parent, the expected return of the parent's children under the policy, is
    the best estimate at hand, comparable across parents of one depth; among
    siblings, which share it, the policy's probability is the model's own
    preference. (a) comes first because those are the search's choices (the
    value-guided selection picked their parents, the policy drew them); (b)
    only fills the slots they leave, so a run with no iterations and a width-G
    initial beam returns exactly the width-G beam search's SIDs.
    """
    batch, table_size, num_levels = tree.codes.shape
    width = tree.child_log_probs.shape[-1]
    rows = jnp.arange(batch)[:, None]
    exists = jnp.arange(table_size) < tree.num_nodes[:, None]
    is_leaf = exists & (tree.depth == num_levels)
    free = (exists & (tree.depth == num_levels - 1))[..., None] & (tree.child_log_probs > -jnp.inf) & ~tree.expanded
    # A node's best num_outputs free children suffice (top_k keeps the earlier position on ties).
    free_log_probs, free_positions = lax.top_k(jnp.where(free, tree.child_log_probs, -jnp.inf),
                                               min(num_outputs, width))  # [B, N, F]
    free_flat = (jnp.arange(table_size)[:, None] * width + free_positions).reshape(batch, -1)
    # One candidate list: the N nodes (order = slot), then the free children (order = N + slot * W + position);
    # group 0: a leaf, 1: a free child, 2: no candidate.
    group = jnp.concatenate([jnp.where(is_leaf, 0, 2), jnp.where(free_log_probs > -jnp.inf, 1, 2).reshape(batch, -1)],
                            axis=1)
    value_key = _descending_key(jnp.concatenate(
        [tree.values, jnp.broadcast_to(tree.values[..., None], free_log_probs.shape).reshape(batch, -1)], axis=1))
    log_prob_key = _descending_key(
        jnp.concatenate([tree.token_log_probs[..., -1], free_log_probs.reshape(batch, -1)], axis=1))
    order = jnp.concatenate([jnp.broadcast_to(jnp.arange(table_size), (batch, table_size)), table_size + free_flat],
                            axis=1).astype(jnp.int32)
    group, _, _, order = lax.sort((group, value_key, log_prob_key, order), dimension=1, num_keys=4)
    if num_outputs > group.shape[1]:
        pad = ((0, 0), (0, num_outputs - group.shape[1]))
        group, order = jnp.pad(group, pad, constant_values=2), jnp.pad(order, pad)
    group, order = group[:, :num_outputs], order[:, :num_outputs]
    valid = group < 2
    from_tree = order < table_size
    node = jnp.clip(jnp.where(from_tree, order, (order - table_size) // width), 0, table_size - 1)
    position = jnp.where(from_tree, 0, (order - table_size) % width)
    # (b): the parent's path with its child appended at level L - 1.
    code, item_row = _child_transition(index, tree.trie_state[rows, node], position)
    last = jnp.arange(num_levels) == num_levels - 1
    child_codes = jnp.where(last, code[..., None], tree.codes[rows, node])
    child_log_probs = jnp.where(last, tree.child_log_probs[rows, node, position][..., None],
                                tree.token_log_probs[rows, node])
    sid_codes = jnp.where(from_tree[..., None], tree.codes[rows, node], child_codes)
    token_log_probs = jnp.where(from_tree[..., None], tree.token_log_probs[rows, node], child_log_probs)
    item_row = jnp.clip(jnp.where(from_tree, tree.trie_state[rows, node], item_row), 0, index.meta.num_items - 1)
    return VEDOutput(
        item_ids=jnp.where(valid, jnp.take(index.sorted_item_ids, item_row), -1),
        sid_codes=jnp.where(valid[..., None], sid_codes, -1),
        values=jnp.where(valid, tree.values[rows, node], -jnp.inf),
        valid=valid,
        tokens_used=tree.tokens_used,
        token_log_probs=jnp.where(valid[..., None], token_log_probs, 0.0),
    )


def default_init_beam_width(num_levels: int, num_outputs: int, budget: int) -> int:
    """``num_outputs // 4`` (at least 1), lowered until the initial beam fits the budget
    (:func:`beam_search_budget` ``(L, width) <= budget``)."""
    width = max(1, num_outputs // 4)
    if num_levels > 1:
        width = min(width, (budget - 1) // (num_levels - 1))
    return max(0, width)


def value_guided_decode(
    index: DeviceIndex,
    node_fn: NodeFn | CachedNodeFn,
    uniforms: jax.Array,
    *,
    num_outputs: int,
    budget: int | None = None,
    init_beam_width: int | None = None,
    lam: float | jax.Array = 0.1,
    beta: float | jax.Array = 1.0,
    cached: bool = False,
) -> VEDOutput:
    """VED rollouts: ``num_outputs`` catalogue SIDs per request within ``budget`` forward tokens.

    Traceable with static shapes; jit it with ``node_fn`` and the keyword
    arguments static (one compile per shape). Algorithm, model contract and
    randomness: module docstring; budgets: docs/rl.md.

    Args:
      index: trie on the device (:meth:`TrieIndex.to_device`).
      node_fn: ``(prefix_codes int32[B, M, L], prefix_len int32[B, M]) -> (logits float[B, M, V], values float[B, M])``,
        or with ``cached`` the :data:`CachedNodeFn` form (module docstring).
      uniforms: float32[num_iterations, B, k] (:func:`ved_uniforms`): fixes the
        number of iterations, the batch and ``k``, the nodes added per iteration.
      num_outputs: G, rollouts per request.
      budget: forward tokens per request, one per evaluated node (every prefix
        shorter than L, root included; complete SIDs are free); default
        :func:`beam_search_budget` ``(L, num_outputs)``, the beam-rollout arm's cost.
      init_beam_width: width of the initial beam search, costing
        :func:`beam_search_budget` ``(L, width)``; default
        :func:`default_init_beam_width`; 0 starts from the root alone.
      lam: entropy weight in G = V + lam * H.
      beta: exploration weight in U = G + beta * sqrt(ln(N_root + 1) / (N + 1)).
      cached: ``node_fn`` takes and returns the tree's K/V (module docstring,
        "Cached evaluation"): same rollouts, one decoder position per node.

    Returns:
      VEDOutput with rollouts [B, num_outputs, ...] (:func:`best_leaves`): all
      valid whenever the evaluated depth-(L - 1) nodes have ``num_outputs`` children in all.
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
        index, node_fn, uniforms, budget=budget, init_beam_width=init_beam_width, lam=lam, beta=beta, cached=cached
    )
    return best_leaves(index, tree, num_outputs)
