"""VED (constrained/ved.py): node-for-node equality with a plain NumPy replay of
the same batched algorithm, every rollout a catalogue item, the budget never
exceeded, every slot filled when the tree reaches G items, the initial beam
equal to the constrained beam search (and, alone at width G, the beam search's
SIDs and cost), a perfect value function finding the target, and the genrec
model's node_fn replayed node for node."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from catalogues import random_catalogue

from constrained.beam_search import constrained_beam_search
from constrained.index import build_index
from constrained.reference import build_dict_trie
from constrained.ved import (
    GATE_TOLERANCE,
    beam_search_budget,
    best_leaves,
    default_init_beam_width,
    value_guided_decode,
    value_guided_tree,
)

HASH_MOD = 2039


class PrefixHashModel:
    """Logits and values are table look-ups keyed by (request, prefix length, hash of the prefix)."""

    def __init__(self, rng, batch, num_levels, vocab, token_offsets, scale=2.0):
        self.logit_table = (scale * rng.standard_normal((batch, num_levels + 1, HASH_MOD, vocab))).astype(np.float32)
        self.value_table = rng.standard_normal((batch, num_levels + 1, HASH_MOD)).astype(np.float32)
        self.token_offsets = tuple(token_offsets)

    def prefix_hash(self, prefix):
        h = 0
        for level, code in enumerate(prefix):
            h = (h * 31 + code + self.token_offsets[level] + 1) % HASH_MOD
        return h

    def logits(self, request, prefix):
        return self.logit_table[request, len(prefix), self.prefix_hash(prefix)]

    def value(self, request, prefix):
        return self.value_table[request, len(prefix), self.prefix_hash(prefix)]

    def tables(self):
        return jnp.asarray(self.logit_table), jnp.asarray(self.value_table)


def hash_node_fn(tables, token_offsets):
    """The JAX node_fn of :class:`PrefixHashModel` over traced tables."""
    logit_table, value_table = tables

    def node_fn(prefix_codes, prefix_len):
        batch, _, num_levels = prefix_codes.shape
        h = jnp.zeros(prefix_len.shape, jnp.int32)
        for level in range(num_levels):
            step = (h * 31 + prefix_codes[..., level] + token_offsets[level] + 1) % HASH_MOD
            h = jnp.where(level < prefix_len, step, h)
        rows = jnp.arange(batch)[:, None]
        return logit_table[rows, prefix_len, h], value_table[rows, prefix_len, h]

    return node_fn


@functools.lru_cache(maxsize=None)
def _compiled_ved(node_fn_factory, token_offsets, num_outputs, budget, init_beam_width):
    @jax.jit
    def run(device_index, tables, uniforms, lam, beta):
        node_fn = node_fn_factory(tables, token_offsets)
        tree = value_guided_tree(device_index, node_fn, uniforms, budget=budget, init_beam_width=init_beam_width,
                                 lam=lam, beta=beta)
        return tree, best_leaves(device_index, tree, num_outputs)

    return run


def run_ved(index, tables, uniforms, token_offsets, *, num_outputs, budget, init_beam_width, lam, beta,
            node_fn_factory=hash_node_fn):
    """The jitted tree and its best leaves; one compile per static setting and shape
    (tables, uniforms, lam and beta enter as arguments)."""
    run = _compiled_ved(node_fn_factory, tuple(token_offsets), num_outputs, budget, init_beam_width)
    tree, out = run(index.to_device(), tables, jnp.asarray(uniforms), jnp.float32(lam), jnp.float32(beta))
    return jax.tree_util.tree_map(np.asarray, tree), jax.tree_util.tree_map(np.asarray, out)


# ----------------------------------------------------------------- the oracle


def reference_ved(trie, logits_fn, value_fn, uniforms, *, num_levels, token_offsets, budget, init_beam_width,
                  lam, beta, num_outputs, row_width):
    """One request's VED in plain Python: a list of node dicts, grown exactly as
    constrained/ved.py describes (initial beam, then per iteration: depth-mean
    gate, the k best of the snapshot by (charged first, U, slot), inverse-CDF
    child draws, adds in slot order, a non-leaf one only within the budget;
    leaves are free and unevaluated), then the output ranking.

    uniforms: float[num_iterations, k]. Returns (nodes, output rows); an output
    row is a dict with prefix, value, token_logp and tree_leaf.
    """
    nodes = []
    tokens = [0]

    def add(parent, position):
        leaf = parent is not None and nodes[parent]["depth"] == num_levels - 1
        if not leaf and tokens[0] >= budget:
            return None
        if parent is None:
            prefix, subtrie, token_logp = (), trie, [0.0] * num_levels
        else:
            up = nodes[parent]
            code = up["child_codes"][position]
            prefix, subtrie = up["prefix"] + (code,), up["subtrie"][code]
            token_logp = list(up["token_logp"])
            token_logp[up["depth"]] = up["child_logp"][position]
            up["expanded"].add(position)
        depth = len(prefix)
        if leaf:  # read off the parent's logits: no evaluation, the parent's value
            child_codes, logp, entropy, value = [], [], 0.0, nodes[parent]["value"]
        else:
            tokens[0] += 1
            child_codes = sorted(subtrie)
            logits = np.asarray(logits_fn(prefix), np.float64)
            picked = np.array([logits[c + token_offsets[depth]] for c in child_codes])
            shifted = picked - picked.max()
            logp = shifted - np.log(np.exp(shifted).sum())
            logp = np.where(np.isnan(logp), -np.inf, logp)
            probs = np.exp(logp)
            entropy = -float(np.sum(np.where(probs > 0, probs * logp, 0.0)))
            value = float(value_fn(prefix))
        nodes.append(dict(prefix=prefix, subtrie=subtrie, depth=depth, parent=parent, value=value,
                          entropy=entropy, priority=value + lam * entropy, visits=1, child_codes=child_codes,
                          child_logp=list(logp), expanded=set(), token_logp=token_logp))
        ancestor = parent
        while ancestor is not None:
            nodes[ancestor]["visits"] += 1
            ancestor = nodes[ancestor]["parent"]
        return len(nodes) - 1

    add(None, None)
    if init_beam_width:
        beam = [(0.0, 0)]
        for _ in range(num_levels):
            candidates = []
            for slot, (score, node) in enumerate(beam):
                for position, lp in enumerate(nodes[node]["child_logp"]):
                    if lp > -np.inf:
                        candidates.append((score + lp, slot * row_width + position, node, position))
            candidates.sort(key=lambda c: (-c[0], c[1]))
            beam = []
            for score, _, node, position in candidates[:init_beam_width]:
                new = add(node, position)
                if new is not None:
                    beam.append((score, new))

    for step_uniforms in uniforms:
        means = {}
        for depth in range(num_levels):
            gs = [n["priority"] for n in nodes if n["depth"] == depth and np.isfinite(n["priority"])]
            means[depth] = sum(gs) / len(gs) if gs else 0.0
        root_visits = nodes[0]["visits"]
        scored = []
        for i, n in enumerate(nodes):
            open_children = [p for p, lp in enumerate(n["child_logp"]) if lp > -np.inf and p not in n["expanded"]]
            if n["depth"] >= num_levels or not open_children or not np.isfinite(n["priority"]):
                continue
            mean = means[n["depth"]]
            if n["priority"] < mean - GATE_TOLERANCE * max(1.0, abs(mean)):
                continue
            free = n["depth"] == num_levels - 1
            if not free and tokens[0] >= budget:
                continue
            u = n["priority"] + beta * np.sqrt(np.log(root_visits + 1) / (n["visits"] + 1))
            scored.append((free, -u, i, open_children))
        scored.sort(key=lambda s: s[:3])
        picks = []
        for (_, _, i, open_children), u in zip(scored, step_uniforms):
            logp = np.array([nodes[i]["child_logp"][p] for p in open_children])
            cdf = np.cumsum(np.exp(logp - logp.max()))
            position = min(int(np.sum(cdf <= u * cdf[-1])), len(open_children) - 1)
            picks.append((i, open_children[position]))
        for i, position in picks:
            add(i, position)

    # Output: the tree's leaves, then the free children of depth L - 1 nodes; each by
    # (value of the depth L - 1 node read off, log-prob of the last code, slot[, position]).
    candidates = []
    for i, n in enumerate(nodes):
        if n["depth"] == num_levels:
            candidates.append(((0, -n["value"], -n["token_logp"][-1], i, 0), n["prefix"], n["token_logp"], True))
        elif n["depth"] == num_levels - 1:
            for position, lp in enumerate(n["child_logp"]):
                if lp > -np.inf and position not in n["expanded"]:
                    token_logp = n["token_logp"][:-1] + [lp]
                    candidates.append(((1, -n["value"], -lp, i, position), n["prefix"] + (n["child_codes"][position],),
                                       token_logp, False))
    candidates.sort(key=lambda c: c[0])
    best = [dict(prefix=prefix, value=-key[1], token_logp=token_logp, tree_leaf=tree_leaf)
            for key, prefix, token_logp, tree_leaf in candidates[:num_outputs]]
    return nodes, best


def assert_tree_matches(tree, out, b, nodes, best, item_of_codes):
    n = len(nodes)
    num_levels = tree.codes.shape[-1]
    evaluated = sum(node["depth"] < num_levels for node in nodes)
    assert tree.num_nodes[b] == n and tree.tokens_used[b] == evaluated == out.tokens_used[b]
    assert np.all(tree.depth[b, n:] == -1)
    for i, node in enumerate(nodes):
        depth = node["depth"]
        assert tuple(tree.codes[b, i, :depth]) == node["prefix"], i
        assert np.all(tree.codes[b, i, depth:] == -1)
        assert tree.depth[b, i] == depth
        assert tree.parent[b, i] == (-1 if node["parent"] is None else node["parent"])
        assert tree.visits[b, i] == node["visits"]
        assert set(np.flatnonzero(tree.expanded[b, i])) == node["expanded"]
        assert tree.values[b, i] == np.float32(node["value"])
        np.testing.assert_allclose(tree.entropy[b, i], node["entropy"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(tree.priority[b, i], node["priority"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(tree.token_log_probs[b, i], node["token_logp"], rtol=1e-5, atol=1e-5)
        width = len(node["child_logp"])
        np.testing.assert_allclose(tree.child_log_probs[b, i, :width], node["child_logp"], rtol=1e-5, atol=1e-5)
        assert np.all(tree.child_log_probs[b, i, width:] == -np.inf)
    assert out.valid[b].sum() == len(best) and np.all(out.valid[b, : len(best)])
    for j, row in enumerate(best):
        assert tuple(out.sid_codes[b, j]) == row["prefix"]
        assert out.item_ids[b, j] == item_of_codes[row["prefix"]]
        assert out.values[b, j] == np.float32(row["value"])
        np.testing.assert_allclose(out.token_log_probs[b, j], row["token_logp"], rtol=1e-5, atol=1e-5)
    assert np.all(out.sid_codes[b, len(best):] == -1) and np.all(out.item_ids[b, len(best):] == -1)


def make_catalogue(seed, sizes, num_items, dense_depth, offsets):
    rng = np.random.default_rng(seed)
    codes = random_catalogue(rng, num_items, sizes)
    item_ids = rng.permutation(10 * len(codes))[: len(codes)]
    token_offsets = offsets or (0,) * len(sizes)
    index = build_index(codes, item_ids, dense_depth=dense_depth, token_offsets=token_offsets)
    vocab = max(o + k for o, k in zip(token_offsets, sizes))
    item_of_codes = {tuple(c): int(i) for c, i in zip(codes.tolist(), item_ids)}
    return rng, codes, item_ids, index, token_offsets, vocab, item_of_codes


def reachable_items(tree, b):
    """Complete SIDs under the evaluated depth-(L - 1) nodes of request b (valid children, in the tree or not)."""
    num_levels = tree.codes.shape[-1]
    last = np.flatnonzero(tree.depth[b, : tree.num_nodes[b]] == num_levels - 1)
    return int(np.sum(np.isfinite(tree.child_log_probs[b, last])))


def assert_valid_rollouts(tree, out, budget, num_outputs, item_of_codes):
    """Every valid output is a distinct catalogue item with its own codes; the
    tree's leaves come first, each group by non-increasing value; invalid slots
    are marked; tokens_used <= budget counts the evaluated nodes; N(s) is the
    size of the subtree of s; every slot is filled when the evaluated
    depth-(L - 1) nodes hold that many items."""
    num_levels = tree.codes.shape[-1]
    assert np.all(out.tokens_used <= budget) and np.all(out.tokens_used >= 1)
    np.testing.assert_array_equal(out.tokens_used, tree.tokens_used)
    for b in range(out.valid.shape[0]):
        valid = out.valid[b]
        returned = out.item_ids[b][valid]
        assert len(set(returned.tolist())) == len(returned)
        for j in np.flatnonzero(valid):
            assert item_of_codes[tuple(out.sid_codes[b, j])] == out.item_ids[b, j]
        assert np.all(out.sid_codes[b][~valid] == -1) and np.all(out.item_ids[b][~valid] == -1)
        n = tree.num_nodes[b]
        assert tree.tokens_used[b] == np.sum(tree.depth[b, :n] < num_levels)
        assert valid.sum() == min(num_outputs, reachable_items(tree, b))
        assert np.all(valid[: valid.sum()])
        leaves = {tuple(c) for c in tree.codes[b, :n][tree.depth[b, :n] == num_levels]}
        in_tree = np.array([tuple(c) in leaves for c in out.sid_codes[b][valid]], bool)
        assert np.all(np.diff(in_tree.astype(int)) <= 0)  # the tree's leaves first
        values = out.values[b][valid]
        assert np.all(np.diff(values[in_tree]) <= 0) and np.all(np.diff(values[~in_tree]) <= 0)
        subtree = np.ones(n, np.int64)
        for i in range(n - 1, 0, -1):  # children come after their parent
            assert 0 <= tree.parent[b, i] < i
            subtree[tree.parent[b, i]] += subtree[i]
        np.testing.assert_array_equal(tree.visits[b, :n], subtree)


# ------------------------------------------------------------------- tests


# Dense levels 0-1, then CSR; value_guided_decode's defaults for G = 6: budget = one width-6 beam
# search, initial beam G // 4 = 1; ceil((13 - 3) / 3) = 4 iterations spend the rest, one more for free leaves.
DENSE_CASE = ((6, 5, 4), 80, 2, None, dict(budget=13, init_beam_width=1, num_outputs=6, k=3, iters=5))


@pytest.mark.parametrize(
    "sizes,num_items,dense_depth,offsets,settings",
    [
        DENSE_CASE,
        # CSR from level 1, shifted token blocks, root-only start, more iterations than the budget needs
        ((7, 4, 6), 90, 1, (2, 9, 13), dict(budget=30, init_beam_width=0, num_outputs=8, k=2, iters=25)),
    ],
)
def test_matches_numpy_reference_node_for_node(sizes, num_items, dense_depth, offsets, settings):
    """Same node table (codes, parents, visits, expanded children, V, H, G) and
    same outputs as the NumPy replay, for several seeds, lam and beta (one compile)."""
    rng, codes, item_ids, index, token_offsets, vocab, item_of_codes = make_catalogue(
        len(sizes) + num_items, sizes, num_items, dense_depth, offsets)
    settings = dict(settings)
    k, iters = settings.pop("k"), settings.pop("iters")
    batch = 3
    model = PrefixHashModel(rng, batch, len(sizes), vocab, token_offsets)
    trie = build_dict_trie(codes, item_ids)
    row_width = max(index.max_branch)
    for lam, beta in [(0.1, 1.0), (0.5, 0.3), (0.0, 0.0), (2.0, 3.0)]:
        uniforms = rng.random((iters, batch, k)).astype(np.float32)
        tree, out = run_ved(index, model.tables(), uniforms, token_offsets, lam=lam, beta=beta, **settings)
        for b in range(batch):
            nodes, best = reference_ved(
                trie, functools.partial(model.logits, b), functools.partial(model.value, b), uniforms[:, b],
                num_levels=len(sizes), token_offsets=token_offsets, row_width=row_width, lam=lam, beta=beta,
                **settings)
            assert_tree_matches(tree, out, b, nodes, best, item_of_codes)
        assert_valid_rollouts(tree, out, settings["budget"], settings["num_outputs"], item_of_codes)
        # The search does spend tokens beyond its initial beam (the trees are not trivial).
        assert np.all(out.tokens_used > beam_search_budget(len(sizes), settings["init_beam_width"]))


def test_default_budget_fills_the_slots_with_catalogue_items():
    """VED at the defaults of value_guided_decode (DENSE_CASE: budget 1 + (L - 1) * G,
    initial beam G // 4, iterations enough to spend the rest) over random tables,
    lam, beta and random numbers (the node-for-node test's compile): valid
    outputs are distinct catalogue items with their own codes, tokens_used <=
    budget, and every slot is filled whenever the evaluated depth-(L - 1) nodes
    hold G items (assert_valid_rollouts). That is not always so at this budget
    (a search that spends tokens on shallow nodes reaches fewer depth-(L - 1)
    nodes than a width-G beam), but nearly: at least 90% of the slots here
    (about a third when every leaf cost a token)."""
    sizes, num_items, dense_depth, offsets, settings = DENSE_CASE
    rng, codes, item_ids, index, token_offsets, vocab, item_of_codes = make_catalogue(
        len(sizes) + num_items, sizes, num_items, dense_depth, offsets)
    settings = dict(settings)
    k, iters = settings.pop("k"), settings.pop("iters")
    num_levels, num_outputs, batch = len(sizes), settings["num_outputs"], 3
    assert settings["budget"] == beam_search_budget(num_levels, num_outputs)
    assert settings["init_beam_width"] == default_init_beam_width(num_levels, num_outputs, settings["budget"])
    assert iters >= -(-(settings["budget"] - beam_search_budget(num_levels, settings["init_beam_width"])) // k)
    filled = []
    for _ in range(8):
        model = PrefixHashModel(rng, batch, num_levels, vocab, token_offsets, scale=rng.uniform(0.5, 4.0))
        uniforms = rng.random((iters, batch, k)).astype(np.float32)
        tree, out = run_ved(index, model.tables(), uniforms, token_offsets, lam=rng.uniform(0, 1),
                            beta=rng.uniform(0, 2), **settings)
        assert_valid_rollouts(tree, out, settings["budget"], num_outputs, item_of_codes)
        filled.append(out.valid.mean())
    assert np.mean(filled) >= 0.9, filled


def test_a_budget_above_the_tries_prefixes_is_never_spent():
    """VED evaluates each trie prefix shorter than L at most once, so it never spends more tokens than there are
    (training.rl.trie_prefixes, the largest rl.budget genrec rl accepts), whatever the budget and iterations
    allow: here 40 tokens more than the trie's prefixes, and iterations for all of them."""
    from training.rl import trie_prefixes

    sizes, num_items, batch, k = (4, 5, 3), 15, 3, 4
    rng, codes, item_ids, index, token_offsets, vocab, item_of_codes = make_catalogue(7, sizes, num_items, 1, None)
    prefixes = trie_prefixes(codes)
    assert prefixes < 1 + 4 + 20  # not every prefix of the code space: the catalogue's
    budget = prefixes + 40
    for _ in range(3):
        model = PrefixHashModel(rng, batch, len(sizes), vocab, token_offsets, scale=rng.uniform(0.5, 4.0))
        uniforms = rng.random((budget, batch, k)).astype(np.float32)
        tree, out = run_ved(index, model.tables(), uniforms, token_offsets, num_outputs=4, budget=budget,
                            init_beam_width=1, lam=rng.uniform(0, 2), beta=rng.uniform(1, 3))
        assert_valid_rollouts(tree, out, budget, 4, item_of_codes)
        assert np.all(out.tokens_used <= prefixes), (out.tokens_used, prefixes)


def hash_beam_search(index, model, width, batch):
    """The constrained beam search (normalization="trie") over :class:`PrefixHashModel`'s logits."""

    def step_fn(shared, beam_cache, last_tokens, step):
        h = beam_cache
        if step > 0:
            h = (h * 31 + last_tokens + 1) % HASH_MOD
        return shared[jnp.arange(h.shape[0])[:, None], step, h], h

    beams = jax.jit(functools.partial(constrained_beam_search, step_fn=step_fn, num_beams=width, start_token=1,
                                      normalization="trie"))(
        index.to_device(), shared=jnp.asarray(model.logit_table), beam_cache=jnp.zeros((batch, width), jnp.int32))
    return jax.tree_util.tree_map(np.asarray, beams)


def test_width_g_initial_beam_alone_is_the_beam_search():
    """Initial beam width G and no iteration: the tree's nodes are the constrained
    beam search's beams (normalization="trie"), level by level; VED spends
    exactly a width-G beam search's tokens, 1 + (L - 1) * G, and returns its G
    SIDs (free children never displace the tree's leaves), each with the beam's
    score as the sum of its log-probs."""
    sizes, num_items, dense_depth, offsets, settings = DENSE_CASE
    rng, codes, item_ids, index, token_offsets, vocab, item_of_codes = make_catalogue(
        len(sizes) + num_items, sizes, num_items, dense_depth, offsets)
    num_levels, width, batch = len(sizes), settings["num_outputs"], 3
    budget = beam_search_budget(num_levels, width)
    model = PrefixHashModel(rng, batch, num_levels, vocab, token_offsets)
    beams = hash_beam_search(index, model, width, batch)
    assert np.all(beams.valid)
    uniforms = np.zeros((0, batch, 1), np.float32)
    tree, out = run_ved(index, model.tables(), uniforms, token_offsets, lam=0.1, beta=1.0, num_outputs=width,
                        budget=budget, init_beam_width=width)
    np.testing.assert_array_equal(out.tokens_used, budget)
    assert np.all(out.valid)
    for b in range(batch):
        assert tree.num_nodes[b] == 1 + num_levels * width
        layout = np.repeat(np.arange(num_levels + 1), [1] + [width] * num_levels)
        assert np.all(tree.depth[b, : tree.num_nodes[b]] == layout)
        leaf_items = [item_of_codes[tuple(c)] for c in tree.codes[b][tree.depth[b] == num_levels]]
        assert sorted(leaf_items) == sorted(beams.item_ids[b].tolist()) == sorted(out.item_ids[b].tolist())
        beam_score = dict(zip(beams.item_ids[b].tolist(), beams.scores[b].tolist()))
        np.testing.assert_allclose(out.token_log_probs[b].sum(-1), [beam_score[i] for i in out.item_ids[b]],
                                   rtol=1e-5)
    assert_valid_rollouts(tree, out, budget, width, item_of_codes)


def reward_node_fn(tables, token_offsets):
    """V(prefix) = 1 when the prefix leads to the request's target, else 0; logits from the hash model."""
    logit_table, _, targets = tables
    hash_fn = hash_node_fn((logit_table, jnp.zeros(logit_table.shape[:3], jnp.float32)), token_offsets)

    def node_fn(prefix_codes, prefix_len):
        logits, _ = hash_fn(prefix_codes, prefix_len)
        level = jnp.arange(prefix_codes.shape[-1])
        match = (prefix_codes == targets[:, None, :]) | (level >= prefix_len[..., None])
        return logits, jnp.all(match, axis=-1).astype(jnp.float32)

    return node_fn


def test_true_value_finds_the_target():
    """lam=0, beta=0 and V = the true reward, one node per iteration: the gate and
    U = G keep every expansion on the target's path (the root first, then
    deeper), so a budget of the root, the initial beam and every evaluated child
    along the path finds the target's parent, whose free children the remaining
    iterations add; the target comes out among them, ahead of every leaf off
    another parent (value 1 = the value of the parent a leaf is read off)."""
    rng, codes, item_ids, index, token_offsets, vocab, item_of_codes = make_catalogue(9, (5, 4, 4), 60, 2, None)
    batch, num_outputs = 4, 4  # num_outputs = the widest last level: every child of the target's parent fits
    model = PrefixHashModel(rng, batch, 3, vocab, token_offsets)
    targets = codes[rng.choice(len(codes), batch, replace=False)]
    trie = build_dict_trie(codes, item_ids)
    budget = 1 + 2 + max(len(trie) + len(trie[t[0]]) for t in targets)
    iterations = budget + max(len(trie[t[0]][t[1]]) for t in targets)
    tables = model.tables() + (jnp.asarray(targets),)
    uniforms = rng.random((iterations, batch, 1)).astype(np.float32)
    tree, out = run_ved(index, tables, uniforms, token_offsets, node_fn_factory=reward_node_fn,
                        num_outputs=num_outputs, budget=budget, init_beam_width=1, lam=0.0, beta=0.0)
    for b in range(batch):
        target = item_of_codes[tuple(targets[b])]
        assert target in out.item_ids[b].tolist()
        on_path = out.values[b] == 1.0
        assert on_path[0] and np.all(on_path[: out.item_ids[b].tolist().index(target) + 1])
        assert np.all(out.sid_codes[b][on_path][:, :2] == targets[b][:2])
    assert_valid_rollouts(tree, out, budget, num_outputs, item_of_codes)
    # The initial beam (root, slots 1-3) missed some target: the search did the finding.
    assert np.all(tree.depth[:, 3] == 3)
    assert any(tuple(tree.codes[b, 3]) != tuple(targets[b]) for b in range(batch))


def test_argument_errors():
    _, _, _, index, _, _, _ = make_catalogue(1, (3, 3, 3), 10, 2, None)
    uniforms = jnp.zeros((2, 2, 2))
    with pytest.raises(ValueError, match="init_beam_width"):
        value_guided_decode(index.to_device(), None, uniforms, num_outputs=4, budget=6, init_beam_width=3)
    with pytest.raises(ValueError, match="uniforms"):
        value_guided_decode(index.to_device(), None, jnp.zeros((2, 2)), num_outputs=4, budget=9, init_beam_width=1)
    with pytest.raises(ValueError, match="num_outputs"):
        value_guided_decode(index.to_device(), None, uniforms, num_outputs=0)
