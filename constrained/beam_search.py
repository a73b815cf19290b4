"""Constrained beam search over the flattened trie, jit-compiled end to end.

Data flow: checkpoint -> index -> **decode** -> serve. One call decodes a
batch of requests: the model's history encoding (``shared``) is computed once
per request and read by every beam; the per-beam cache is reordered by parent
beam after each level; each level costs a log-softmax, one gather of the
valid children's log-probs (CSR row or dense table) and two small top-k's.
No host round trip inside the loop, and the per-step cost does not depend on
the catalogue size.

The model contract (both genrec models implement it; benchmarks use a
random-logit stand-in)::

    logits, beam_cache = step_fn(shared, beam_cache, last_tokens, step)
      shared:      pytree, leaves [batch, ...] — never reordered
      beam_cache:  pytree, leaves [batch, num_beams, ...] — reordered by parent
      last_tokens: int32[batch, num_beams], ``start_token`` at step 0, else the
                   model token chosen at level ``step - 1``
      step:        Python int, the level being predicted (static)
      logits:      float[batch, num_beams, vocab]

Scores are sequence log-probabilities under the model: the sum over levels of
``log_softmax(logits)`` over the *whole* model vocabulary, read at
``token_offsets[level] + code`` (``normalization="vocab"``, the default). With
``normalization="trie"`` each level's softmax runs over the valid children of
the beam's prefix in the index only: the distribution a model trained with a
masked softmax (MSL, ``training.losses``) was fitted to. Such a model never
gets a gradient on invalid tokens, so their logits are arbitrary and the
full-vocabulary normaliser would mix that arbitrary mass into the comparison
of different prefixes. Per-request filters do not change the normaliser (they
remove items, not probability mass).

Behaviour at the edges (tested):
  * Fewer valid completions than beams (small catalogue, or a filter that
    leaves few items): the extra slots have ``valid=False``, ``item_ids=-1``,
    ``scores=-inf`` and SID codes -1.
  * NaN logits: a NaN log-prob counts as impossible (-inf), so a beam whose
    whole row is NaN is dropped rather than returned with a NaN score.
  * Ties: candidates of equal score are ordered by parent beam, then by code
    (``lax.top_k`` keeps the lower index first).
  * Per-request filters: ``allow_mask[b, i]`` (input item row ``i``),
    ``allow_rows[b, :]`` (a short list of the only input rows allowed) and/or
    ``exclude_rows[b, :]`` (a short list of input rows, e.g. seen items)
    remove items from request ``b`` (given together, an item must pass all of
    them: they are merged into one filter first); prefixes whose items are all
    removed are pruned before they take a beam, so a filtered search returns
    exactly what an unfiltered search over the allowed sub-catalogue would.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
from jax import lax

from constrained.index import DeviceIndex, csr_children
from constrained.item_lists import count_listed, drop_listed, sorted_list, target_row_range

PyTree = Any
StepFn = Callable[[PyTree, PyTree, jax.Array, int], tuple[jax.Array, PyTree]]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BeamSearchOutput:
    """Result of a decode, best beam first.

    item_ids: int[batch, beams] (-1 where invalid)
    sid_codes: int32[batch, beams, levels] (-1 where invalid)
    scores: float32[batch, beams], sum of log-probs (-inf where invalid)
    valid: bool[batch, beams]
    """

    item_ids: jax.Array
    sid_codes: jax.Array
    scores: jax.Array
    valid: jax.Array


def alive_state_table(index: DeviceIndex, allow_mask: jax.Array) -> jax.Array:
    """Which trie states keep at least one allowed item, per request.

    Args:
      index: the device index.
      allow_mask: bool[batch, num_items], indexed by *input* item row.

    Returns:
      bool[batch, num_states]; computed once per decode (O(batch * (items +
      states))), then read with one gather per candidate and level.
    """
    allow_sorted = jnp.take(allow_mask, index.sorted_input_rows, axis=1)
    counts = jnp.cumsum(allow_sorted.astype(jnp.int32), axis=1)
    counts = jnp.pad(counts, ((0, 0), (1, 0)))
    return (
        jnp.take(counts, index.state_row_hi, axis=1)
        - jnp.take(counts, index.state_row_lo, axis=1)
    ) > 0


def _make_target_filter(index, allow_mask, exclude_rows, allow_rows=None):
    """keep(targets, leaf) -> bool[batch, ...]: does a candidate transition
    lead to at least one item the request may receive?

    ``targets``: int[batch, ...], trie states, or sorted item rows when
    ``leaf``. Every filter costs O(1) or O(log list width) per candidate per
    step (a table read; binary searches in the request's sorted list,
    :mod:`constrained.item_lists`), independent of N.
    """
    if allow_mask is None and exclude_rows is None and allow_rows is None:
        return None
    # Two filters on one request become one before any test: a prefix must hold an item that every
    # filter permits, not an item per filter (a prefix whose allowed items are all excluded while its
    # other items are not allowed would pass both tests and take a beam that leads nowhere).
    if allow_mask is not None and (allow_rows is not None or exclude_rows is not None):
        allow_mask = _fold_into_mask(allow_mask.astype(bool), allow_rows, exclude_rows)
        allow_rows = exclude_rows = None
    if allow_mask is not None:
        allow_sorted = jnp.take(allow_mask.astype(bool), index.sorted_input_rows, axis=1)
        alive = alive_state_table(index, allow_mask)
    if exclude_rows is not None:
        excluded = sorted_list(index, exclude_rows)
    if allow_rows is not None:
        listed = sorted_list(index, allow_rows)
        unconstrained = ~jnp.any(allow_rows >= 0, axis=1, keepdims=True)  # [B, 1]: an empty allow list
        if exclude_rows is not None:
            # The exclusion test stays for requests without an allow list (for the others it is implied);
            # an allow list emptied by its exclusions allows nothing (``unconstrained`` was read before).
            listed = drop_listed(listed, excluded, index.meta.num_items)

    def keep(targets, leaf):
        batch = targets.shape[0]
        flat = jnp.maximum(targets.reshape(batch, -1), 0)
        ok = jnp.ones(flat.shape, bool)
        if allow_mask is not None:
            ok &= jnp.take_along_axis(allow_sorted if leaf else alive, flat, axis=1)
        if exclude_rows is not None or allow_rows is not None:
            lo, hi = target_row_range(index, flat, leaf)
        if exclude_rows is not None:
            ok &= count_listed(excluded, lo, hi) < hi - lo
        if allow_rows is not None:
            ok &= unconstrained | (count_listed(listed, lo, hi) > 0)
        return ok.reshape(targets.shape)

    return keep


def _fold_into_mask(allow_mask: jax.Array, allow_rows: jax.Array | None, exclude_rows: jax.Array | None) -> jax.Array:
    """``allow_mask: bool[B, N]`` narrowed to the rows of ``allow_rows`` (a request that lists none is
    not narrowed) and without the rows of ``exclude_rows`` (both ``int[B, *]``, -1 padding)."""
    batch, num_items = allow_mask.shape
    requests = jnp.arange(batch)[:, None]
    if allow_rows is not None:
        listed = jnp.zeros_like(allow_mask).at[requests, jnp.where(allow_rows >= 0, allow_rows, num_items)].set(
            True, mode="drop")
        allow_mask &= listed | ~jnp.any(allow_rows >= 0, axis=1, keepdims=True)
    if exclude_rows is not None:
        allow_mask = allow_mask.at[requests, jnp.where(exclude_rows >= 0, exclude_rows, num_items)].set(
            False, mode="drop")
    return allow_mask


def _nan_to_neg_inf(logp: jax.Array) -> jax.Array:
    return jnp.where(jnp.isnan(logp), -jnp.inf, logp)


Normalization = Literal["vocab", "trie"]


def check_normalization(normalization: str) -> None:
    """Raises ValueError unless ``normalization`` is ``"vocab"`` or ``"trie"``."""
    if normalization not in ("vocab", "trie"):
        raise ValueError(f"normalization={normalization!r}; expected 'vocab' or 'trie'")


def _normalized_log_probs(
    logits: jax.Array, picked: jax.Array, valid: jax.Array | None, normalization: str
) -> jax.Array:
    """Log-probs of the candidate logits ``picked: float32[..., width]`` read from ``logits: float32[..., vocab]``.

    ``normalization="vocab"`` normalises over the whole vocabulary row,
    ``"trie"`` over the candidates where ``valid: bool[..., width]``
    (broadcast) is True. NaN anywhere in the normalising set makes the row -inf.
    """
    if normalization == "vocab":
        log_norm = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    else:
        log_norm = _masked_logsumexp(picked, valid)
    return _nan_to_neg_inf(picked - log_norm)


def _slice_log_probs(
    logits: jax.Array, offset: int, width: int, valid: jax.Array | None, normalization: str
) -> jax.Array:
    """Log-probs of the codes ``offset..offset+width`` of ``logits: float[..., vocab]`` (a dense level)."""
    logits = logits.astype(jnp.float32)
    picked = lax.dynamic_slice_in_dim(logits, offset, width, axis=-1)
    return _normalized_log_probs(logits, picked, valid, normalization)


def _candidate_log_probs(
    logits: jax.Array, token_ids: jax.Array, valid: jax.Array, normalization: str
) -> jax.Array:
    """Log-probs of ``token_ids: int[batch, beams, width]`` (a CSR level) from
    ``logits: float[batch, beams, vocab]``, without writing the full log-prob
    array: one reduction plus one gather."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, token_ids, axis=-1)
    return _normalized_log_probs(logits, picked, valid, normalization)


def _masked_logsumexp(values: jax.Array, valid: jax.Array) -> jax.Array:
    """logsumexp over the last axis of ``values`` where ``valid``; keeps the axis.

    A row with no valid entry gets +inf, so every log-prob of it is -inf.
    """
    masked = jnp.where(valid, values, -jnp.inf)
    out = jax.nn.logsumexp(masked, axis=-1, keepdims=True)
    return jnp.where(jnp.any(valid, axis=-1, keepdims=True), out, jnp.inf)


def _top_k_padded(values: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """lax.top_k over the last axis that also accepts k > width (pads -inf)."""
    width = values.shape[-1]
    if k > width:
        pad = [(0, 0)] * (values.ndim - 1) + [(0, k - width)]
        values = jnp.pad(values, pad, constant_values=-jnp.inf)
    return lax.top_k(values, k)


def _gather_beams(tree: PyTree, parents: jax.Array) -> PyTree:
    """Reorders every leaf [batch, beams, ...] by parents: int[batch, beams]."""

    def gather(leaf):
        idx = parents.reshape(parents.shape + (1,) * (leaf.ndim - 2))
        return jnp.take_along_axis(leaf, idx, axis=1)

    return jax.tree_util.tree_map(gather, tree)


# Selection strategy (timings: docs/benchmarks.md, "Constrained decoding"):
# with few beam rows in flight a per-beam top-k then a small global one is
# fastest; with many rows, ranking chunk maxima first (_chunked_top_k) wins,
# since lax.top_k over thousands of wide rows is sort-bound on GPU.
PER_BEAM_MAX_ROWS = 512
CHUNKED_SELECT_MIN_WIDTH = 4096
SELECT_CHUNK = 128


def _chunked_top_k(values: jax.Array, k: int, chunk: int) -> tuple[jax.Array, jax.Array]:
    """Exact top-k over the last axis of values: float[rows, width].

    The k largest entries lie in at most k chunks, and every such chunk's
    maximum is among the k largest chunk maxima; so rank chunks by their
    maximum, keep the best k (in ascending chunk order, which keeps
    lax.top_k's lower-index-first tie rule), and take the top-k of those
    k * chunk entries. Cost: one fused max-reduction over the row plus two
    narrow top-k's, instead of a top-k over the full width.
    """
    rows, width = values.shape
    num_chunks = -(-width // chunk)
    if num_chunks * chunk != width:
        values = jnp.pad(values, ((0, 0), (0, num_chunks * chunk - width)), constant_values=-jnp.inf)
    chunks = values.reshape(rows, num_chunks, chunk)
    kept = min(k, num_chunks)
    _, best_chunks = lax.top_k(jnp.max(chunks, axis=-1), kept)
    best_chunks = jnp.sort(best_chunks, axis=-1)
    picked = jnp.take_along_axis(chunks, best_chunks[..., None], axis=1).reshape(rows, kept * chunk)
    top_values, pos = _top_k_padded(picked, k)
    pos = jnp.minimum(pos, kept * chunk - 1)
    flat = jnp.take_along_axis(best_chunks, pos // chunk, axis=1) * chunk + pos % chunk
    return top_values, flat


def _select(
    cand_scores: jax.Array, num_beams: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Top ``num_beams`` of cand_scores: float[batch, beams, width].

    Returns scores [batch, num_beams], parent beam and position within the
    parent's candidates, both int32[batch, num_beams]. Ties go to the lower
    (beam, position).
    """
    batch, beams, width = cand_scores.shape
    if width > num_beams and batch * beams <= PER_BEAM_MAX_ROWS:
        # A beam contributes at most num_beams survivors: exact.
        beam_scores, beam_pos = lax.top_k(cand_scores, num_beams)
        top_scores, flat = _top_k_padded(beam_scores.reshape(batch, beams * num_beams), num_beams)
        flat = jnp.minimum(flat, beams * num_beams - 1)
        pos = jnp.take_along_axis(beam_pos.reshape(batch, -1), flat, axis=1)
        return top_scores, (flat // num_beams).astype(jnp.int32), pos.astype(jnp.int32)
    flat_scores = cand_scores.reshape(batch, beams * width)
    if beams * width >= CHUNKED_SELECT_MIN_WIDTH and beams * width > num_beams * SELECT_CHUNK:
        top_scores, flat = _chunked_top_k(flat_scores, num_beams, SELECT_CHUNK)
    else:
        top_scores, flat = _top_k_padded(flat_scores, num_beams)
    flat = jnp.minimum(flat, beams * width - 1)
    return top_scores, (flat // width).astype(jnp.int32), (flat % width).astype(jnp.int32)


def constrained_beam_search(
    index: DeviceIndex,
    step_fn: StepFn,
    shared: PyTree,
    beam_cache: PyTree,
    *,
    num_beams: int,
    start_token: int,
    allow_mask: jax.Array | None = None,
    exclude_rows: jax.Array | None = None,
    normalization: Normalization = "vocab",
    allow_rows: jax.Array | None = None,
) -> BeamSearchOutput:
    """Beam search that only emits SIDs of the index (traceable; the jitted
    entry point for genrec models is ``constrained.decode.decode_batch``).

    Args:
      index: trie on the device (:meth:`TrieIndex.to_device`).
      step_fn: the model step (module docstring).
      shared: per-request encoding, leaves [batch, ...].
      beam_cache: per-beam cache, leaves [batch, num_beams, ...].
      num_beams: beams per request (may exceed the number of valid items).
      start_token: token fed at step 0 (the model's BOS).
      allow_mask: optional bool[batch, num_items] over input item rows
        (dense filter: set-up cost O(batch * (items + states)) per call).
      exclude_rows: optional int[batch, num_excluded] input item rows the
        request must not receive, -1 padding, repeats allowed (sparse filter,
        e.g. already-seen items: set-up cost O(batch * num_excluded)).
      allow_rows: optional int[batch, num_allowed] input item rows, the only
        items the request may receive; -1 padding, repeats allowed; a request
        with no listed row (all -1) is not constrained by it (sparse filter,
        :mod:`constrained.item_lists`: set-up cost O(batch * num_allowed)).
        Filters given together must all permit an item: the lists are folded
        into ``allow_mask``, or the exclusions removed from ``allow_rows``
        (an allow list left empty by them allows nothing).
      normalization: ``"vocab"`` (softmax over the whole vocabulary) or
        ``"trie"`` (over the valid children of each prefix); module docstring.

    Returns:
      BeamSearchOutput, beams sorted by score, best first.
    """
    check_normalization(normalization)
    meta = index.meta
    num_levels = meta.num_levels
    leaves = jax.tree_util.tree_leaves(beam_cache)
    if leaves:
        batch = leaves[0].shape[0]
    elif allow_mask is not None:
        batch = allow_mask.shape[0]
    elif exclude_rows is not None:
        batch = exclude_rows.shape[0]
    elif allow_rows is not None:
        batch = allow_rows.shape[0]
    else:
        batch = jax.tree_util.tree_leaves(shared)[0].shape[0]
    if allow_mask is not None and allow_mask.shape != (batch, meta.num_items):
        raise ValueError(
            f"allow_mask has shape {allow_mask.shape}, expected {(batch, meta.num_items)} "
            "(one row per request, one column per catalogue item)."
        )
    if exclude_rows is not None and (exclude_rows.ndim != 2 or exclude_rows.shape[0] != batch):
        raise ValueError(
            f"exclude_rows has shape {exclude_rows.shape}, expected ({batch}, num_excluded)."
        )
    if allow_rows is not None and (allow_rows.ndim != 2 or allow_rows.shape[0] != batch):
        raise ValueError(f"allow_rows has shape {allow_rows.shape}, expected ({batch}, num_allowed).")
    keep = _make_target_filter(index, allow_mask, exclude_rows, allow_rows)

    # Level 0: every beam holds the empty prefix; read beam 0 only.
    last_tokens = jnp.full((batch, num_beams), start_token, dtype=jnp.int32)
    logits, beam_cache = step_fn(shared, beam_cache, last_tokens, 0)
    k0 = meta.codebook_sizes[0]
    root_valid = index.root_next >= 0  # [K0]
    logp0 = _slice_log_probs(logits[:, 0, :], meta.token_offsets[0], k0, root_valid, normalization)
    root_ok = jnp.broadcast_to(root_valid, (batch, k0))
    if keep is not None:
        root_ok = root_ok & keep(jnp.broadcast_to(index.root_next, (batch, k0)), num_levels == 1)
    scores, codes = _top_k_padded(jnp.where(root_ok, logp0, -jnp.inf), num_beams)
    codes = jnp.minimum(codes, k0 - 1).astype(jnp.int32)
    states = jnp.take(index.root_next, codes)  # [B, M]
    # Beam 0's cache is every beam's cache at level 0: no reorder needed.
    code_buffer = codes[..., None]  # [B, M, levels so far]

    for level in range(1, num_levels):
        last_tokens = code_buffer[..., -1] + meta.token_offsets[level - 1]
        logits, beam_cache = step_fn(shared, beam_cache, last_tokens, level)
        if level == 1 and meta.dense_depth == 2:
            # Dense level: every code is a candidate; read the logits as a
            # slice and look the next state up only for the chosen beams.
            level0 = code_buffer[..., 0]
            k1 = meta.codebook_sizes[1]
            cand_ok = jnp.take(index.dense2_valid, level0, axis=0)  # [B, M, K1]
            cand_logp = _slice_log_probs(logits, meta.token_offsets[1], k1, cand_ok, normalization)
            if keep is not None:
                cand_ok &= keep(jnp.take(index.dense2_next, level0, axis=0), num_levels == 2)
            cand_scores = scores[..., None] + jnp.where(cand_ok, cand_logp, -jnp.inf)
            scores, parent, new_codes = _select(cand_scores, num_beams)
            parent_level0 = jnp.take_along_axis(level0, parent, axis=1)
            states = index.dense2_next[parent_level0, new_codes]
        else:
            cand_codes, cand_next, cand_ok = csr_children(index, level, jnp.maximum(states, 0))
            cand_logp = _candidate_log_probs(logits, cand_codes + meta.token_offsets[level], cand_ok, normalization)
            if keep is not None:
                cand_ok &= keep(cand_next, level == num_levels - 1)
            cand_scores = scores[..., None] + jnp.where(cand_ok, cand_logp, -jnp.inf)
            scores, parent, pos = _select(cand_scores, num_beams)
            chosen = parent * cand_codes.shape[-1] + pos  # index into [beams * width]
            new_codes = jnp.take_along_axis(cand_codes.reshape(batch, -1), chosen, axis=1)
            states = jnp.take_along_axis(cand_next.reshape(batch, -1), chosen, axis=1)
        code_buffer = jnp.concatenate(
            [jnp.take_along_axis(code_buffer, parent[..., None], axis=1), new_codes[..., None]],
            axis=-1,
        )
        if level + 1 < num_levels:
            beam_cache = _gather_beams(beam_cache, parent)

    valid = scores > -jnp.inf
    rows = jnp.clip(states, 0, meta.num_items - 1)
    item_ids = jnp.where(valid, jnp.take(index.sorted_item_ids, rows), -1)
    code_buffer = jnp.where(valid[..., None], code_buffer, -1)
    return BeamSearchOutput(
        item_ids=item_ids,
        sid_codes=code_buffer,
        scores=jnp.where(valid, scores, -jnp.inf),
        valid=valid,
    )


def unconstrained_beam_search(
    step_fn: StepFn,
    shared: PyTree,
    beam_cache: PyTree,
    *,
    num_beams: int,
    start_token: int,
    num_levels: int,
    codebook_sizes: tuple[int, ...],
    token_offsets: tuple[int, ...],
) -> tuple[jax.Array, jax.Array]:
    """Plain beam search over every code of each level (no trie).

    The baseline of the benchmark and the diagnosis of how often a model's
    free beam leaves the catalogue. Same model contract and selection rule as
    :func:`constrained_beam_search`.

    Returns:
      codes int32[batch, beams, levels] and scores float32[batch, beams].
    """
    batch = jax.tree_util.tree_leaves(beam_cache)[0].shape[0]
    last_tokens = jnp.full((batch, num_beams), start_token, dtype=jnp.int32)
    scores = jnp.zeros((batch, num_beams), jnp.float32)
    code_buffer = jnp.zeros((batch, num_beams, 0), jnp.int32)
    for level in range(num_levels):
        if level > 0:
            last_tokens = code_buffer[..., -1] + token_offsets[level - 1]
        logits, beam_cache = step_fn(shared, beam_cache, last_tokens, level)
        width = codebook_sizes[level]
        if level == 0:
            logits = logits[:, :1]  # all beams hold the empty prefix
        cand_logp = _slice_log_probs(logits, token_offsets[level], width, None, "vocab")
        cand_scores = scores[:, : cand_logp.shape[1], None] + cand_logp
        scores, parent, new_codes = _select(cand_scores, num_beams)
        code_buffer = jnp.concatenate(
            [jnp.take_along_axis(code_buffer, parent[..., None], axis=1), new_codes[..., None]],
            axis=-1,
        )
        if 0 < level < num_levels - 1:
            beam_cache = _gather_beams(beam_cache, parent)
    return code_buffer, scores

