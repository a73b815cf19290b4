"""Rollouts for the RL stage: constrained sampling, beam rollouts and the
per-token log-probs of the trie-restricted policy (docs/rl.md).

Data flow: checkpoint -> index -> **rollouts** -> RL loss. Every rollout is a
catalogue item: each level draws the next code among the valid trie children
of the prefix only (the same dense tables and CSR rows the beam search walks),
so no sample is ever wasted on an SID outside the catalogue.

The policy (docs/rl.md, "The policy") is the model's next-token distribution
restricted to the valid children of the prefix and renormalised over them.
Sampling draws from that distribution, optionally tempered and truncated by
top-k / top-p among the valid children; the reported ``token_log_probs`` are
always under the untempered, untruncated policy (``normalization="trie"``),
or under the full-vocabulary softmax (``"vocab"``), so the RL ratio compares
the policy itself, not the sampler's proposal.

* :func:`constrained_sample` (traceable): ``G`` independent SIDs per request.
  The history is encoded once (``shared`` is never reordered) and each sample
  owns one slot of ``beam_cache``, so unlike beam search nothing is reordered.
* :func:`beam_rollouts` (traceable): the ``G`` best SIDs of the constrained
  beam search, with their per-level log-probs (the GRPO baseline arm).
* :func:`token_log_probs_of`: teacher-forced, differentiable log-probs of
  given SIDs from ``SIDRecommender.score_candidates`` logits: the new / old /
  reference log-probs of the RL losses.
* :func:`restricted_entropy`: entropy of the policy at a prefix (VED's
  priority, Eq. 11).
* :func:`restricted_kl`: exact KL(new || ref) of two restricted policies at
  every prefix of given SIDs (the RL stage's exact KL, docs/rl.md "Losses").
* :func:`sample_batch`, :func:`beam_rollout_batch`: the jitted entries for
  genrec models (encode + rollouts in one compiled call, like
  ``constrained.decode.decode_batch``).

Per-request filters (``allow_mask`` / ``exclude_rows``, as in beam search)
remove items: the sampler then draws, level by level, among the children that
still lead to an allowed item (the policy renormalised over the allowed
sub-trie), while ``token_log_probs`` keep the unfiltered policy's normaliser
(filters remove items, not probability mass; same rule as beam search). A
request left with no allowed item, or whose logits are NaN (NaN counts as
impossible, as in beam search), gives ``valid=False`` slots.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from constrained.beam_search import (
    Normalization,
    StepFn,
    _candidate_log_probs,
    _make_target_filter,
    _slice_log_probs,
    check_normalization,
    constrained_beam_search,
)
from constrained.index import DeviceIndex, csr_children
from genrec.vocab import BOS_ID

PyTree = Any

__all__ = [
    "SampleOutput",
    "beam_rollout_batch",
    "beam_rollouts",
    "constrained_sample",
    "restricted_entropy",
    "restricted_kl",
    "sample_batch",
    "token_log_probs_of",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """``G`` rollouts per request (docs/rl.md, "Notation").

    item_ids: int[batch, G], the index's item id (-1 where invalid)
    sid_codes: int32[batch, G, levels] (-1 where invalid)
    token_log_probs: float32[batch, G, levels], log pi(code_l | prefix) under the
      temperature-1, untruncated policy (0.0 where invalid, so a masked loss
      never meets inf - inf)
    valid: bool[batch, G]
    """

    item_ids: jax.Array
    sid_codes: jax.Array
    token_log_probs: jax.Array
    valid: jax.Array


# ---------------------------------------------------------------- the trie walk


def _is_dense(index: DeviceIndex, level: int) -> bool:
    """Whether level ``level``'s children come from a dense table (codes 0..K_l-1)."""
    return level == 0 or (level == 1 and index.meta.dense_depth == 2)


def _level_children(
    index: DeviceIndex, level: int, states: jax.Array, level0_codes: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Valid children of the prefixes of length ``level``: ``(codes, valid)``, int32/bool[..., width].

    ``states: int32[...]`` are the prefixes' trie states (>= 0), ``level0_codes:
    int32[...]`` their first codes (read by the dense level-1 table). Dense
    levels list every code ``0 .. K_l - 1``; CSR levels the row, padded to
    ``max_branch[level]``.
    """
    shape = states.shape
    if level == 0:
        k0 = index.meta.codebook_sizes[0]
        return (jnp.broadcast_to(jnp.arange(k0, dtype=jnp.int32), shape + (k0,)),
                jnp.broadcast_to(index.root_next >= 0, shape + (k0,)))
    if _is_dense(index, level):
        k1 = index.meta.codebook_sizes[1]
        return (jnp.broadcast_to(jnp.arange(k1, dtype=jnp.int32), shape + (k1,)),
                jnp.take(index.dense2_valid, jnp.maximum(level0_codes, 0), axis=0))
    codes, _, valid = csr_children(index, level, jnp.maximum(states, 0))
    return codes, valid


def _child_target(
    index: DeviceIndex, level: int, states: jax.Array, level0_codes: jax.Array, codes: jax.Array
) -> jax.Array:
    """Trie target of the child ``codes`` of ``states`` (a state, or a sorted item
    row at the last level); -1 where the code is not a child or the state is -1."""
    if level == 0:
        target = jnp.take(index.root_next, jnp.clip(codes, 0, index.meta.codebook_sizes[0] - 1))
        return jnp.where(codes >= 0, target, -1)
    if _is_dense(index, level):
        k1 = index.meta.codebook_sizes[1]
        target = index.dense2_next[jnp.maximum(level0_codes, 0), jnp.clip(codes, 0, k1 - 1)]
        return jnp.where((codes >= 0) & (codes < k1) & (states >= 0), target, -1)
    child_codes, child_next, valid = csr_children(index, level, jnp.maximum(states, 0))
    hit = valid & (child_codes == codes[..., None]) & (states >= 0)[..., None]
    return jnp.where(hit.any(-1), jnp.sum(jnp.where(hit, child_next, 0), axis=-1), -1)


def _prefix_states(index: DeviceIndex, sid_codes: jax.Array) -> list[jax.Array]:
    """``states[p]``: int32[...] trie state of the prefix ``sid_codes[..., :p]``,
    for ``p = 0 .. L-1`` (-1 once the prefix leaves the trie or meets a -1 code)."""
    states = [jnp.zeros(sid_codes.shape[:-1], jnp.int32)]
    for level in range(index.meta.num_levels - 1):
        states.append(_child_target(index, level, states[-1], sid_codes[..., 0], sid_codes[..., level]))
    return states


def _level_log_probs(
    index: DeviceIndex, level: int, logits: jax.Array, codes: jax.Array, valid: jax.Array, normalization: str
) -> jax.Array:
    """Log-probs of the children ``codes`` (``_level_children``) from ``logits: float[..., vocab]``,
    NaN read as impossible (beam search's rule)."""
    if _is_dense(index, level):
        return _slice_log_probs(logits, index.meta.token_offsets[level], codes.shape[-1], valid, normalization)
    return _candidate_log_probs(logits, codes + index.meta.token_offsets[level], valid, normalization)


# ------------------------------------------------------------- sampling proposal


def _check_sampling_args(temperature, top_k, top_p) -> None:
    """Checks the knobs given as Python numbers (traced values are the caller's to check)."""
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"temperature={temperature}: must be > 0 (for the most likely SIDs use beam_rollouts).")
    if isinstance(top_k, (int, float)) and not (int(top_k) == top_k and top_k >= 1):
        raise ValueError(f"top_k={top_k!r}: must be a positive int or None.")
    if isinstance(top_p, (int, float)) and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}: must be in (0, 1] or None.")


def _proposal_scores(
    log_probs: jax.Array, allowed: jax.Array, temperature, top_k, top_p
) -> jax.Array:
    """Unnormalised log-weights of the sampler over the children: tempered, then
    top-k, then top-p, each among the allowed children (-inf = never drawn).

    ``log_probs, allowed: [..., width]``. The knobs may be traced (one compile
    serves every value; None switches a truncation off statically). Children
    tied with the k-th (or the nucleus's last) value are all kept.
    """
    scores = jnp.where(allowed, log_probs, -jnp.inf) / temperature
    if top_k is None and top_p is None:
        return scores
    ranked = -jnp.sort(-scores, axis=-1)  # descending
    width = scores.shape[-1]
    if top_k is not None:
        last = jnp.clip(jnp.asarray(top_k, jnp.int32) - 1, 0, width - 1)
        threshold = lax.dynamic_index_in_dim(ranked, last, axis=-1, keepdims=True)
        scores = jnp.where(scores >= threshold, scores, -jnp.inf)
        ranked = jnp.where(ranked >= threshold, ranked, -jnp.inf)
    if top_p is not None:
        probs = jax.nn.softmax(ranked, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # The nucleus: the fewest best children whose mass reaches top_p (never
        # empty; top_p = 1 keeps all, whatever the rounding of the sum).
        in_nucleus = ((mass_before < top_p) | (top_p >= 1)).at[..., 0].set(True)
        last = jnp.sum(in_nucleus, axis=-1, keepdims=True) - 1
        threshold = jnp.take_along_axis(ranked, last, axis=-1)
        scores = jnp.where(scores >= threshold, scores, -jnp.inf)
    return scores


# ------------------------------------------------------------------ the rollout


Chooser = Callable[[int, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _rollout(
    index: DeviceIndex,
    step_fn: StepFn,
    shared: PyTree,
    beam_cache: PyTree,
    *,
    batch: int,
    num_slots: int,
    start_token: int,
    normalization: str,
    keep,
    choose: Chooser,
) -> SampleOutput:
    """Walks the trie once per slot, one step_fn call per level, no reorder.

    ``choose(level, codes, log_probs, allowed) -> (position int32[B, G], possible bool[B, G])``
    picks one child per slot (``codes, log_probs, allowed: [B, G, width]``).
    """
    meta = index.meta
    num_levels = meta.num_levels
    states = jnp.zeros((batch, num_slots), jnp.int32)
    alive = jnp.ones((batch, num_slots), bool)
    last_tokens = jnp.full((batch, num_slots), start_token, jnp.int32)
    codes_so_far, log_probs_so_far = [], []
    for level in range(num_levels):
        logits, beam_cache = step_fn(shared, beam_cache, last_tokens, level)
        level0 = codes_so_far[0] if level else states
        if _is_dense(index, level):
            child_codes, child_valid = _level_children(index, level, states, level0)
            targets = None
        else:
            child_codes, targets, child_valid = csr_children(index, level, jnp.maximum(states, 0))
        log_probs = _level_log_probs(index, level, logits, child_codes, child_valid, normalization)
        allowed = child_valid
        if keep is not None:
            if level == 0:
                targets = jnp.broadcast_to(index.root_next, child_codes.shape)
            elif targets is None:
                targets = jnp.take(index.dense2_next, jnp.maximum(level0, 0), axis=0)
            allowed = allowed & keep(targets, level == num_levels - 1)
        position, possible = choose(level, child_codes, log_probs, allowed)
        code = jnp.take_along_axis(child_codes, position[..., None], axis=-1)[..., 0]
        log_prob = jnp.take_along_axis(log_probs, position[..., None], axis=-1)[..., 0]
        alive &= possible & (log_prob > -jnp.inf)
        if level == 0:
            states = jnp.take(index.root_next, code)
        elif targets is None:
            states = index.dense2_next[jnp.maximum(level0, 0), code]
        else:
            states = jnp.take_along_axis(targets, position[..., None], axis=-1)[..., 0]
        codes_so_far.append(code)
        log_probs_so_far.append(log_prob)
        last_tokens = code + meta.token_offsets[level]

    rows = jnp.clip(states, 0, meta.num_items - 1)
    item_ids = jnp.where(alive, jnp.take(index.sorted_item_ids, rows), -1)
    sid_codes = jnp.where(alive[..., None], jnp.stack(codes_so_far, axis=-1), -1).astype(jnp.int32)
    token_log_probs = jnp.where(alive[..., None], jnp.stack(log_probs_so_far, axis=-1), 0.0)
    return SampleOutput(item_ids=item_ids, sid_codes=sid_codes, token_log_probs=token_log_probs, valid=alive)


def _batch_size(shared: PyTree, beam_cache: PyTree) -> int:
    leaves = jax.tree_util.tree_leaves(beam_cache) or jax.tree_util.tree_leaves(shared)
    return leaves[0].shape[0]


def _check_filters(index: DeviceIndex, batch: int, allow_mask, exclude_rows) -> None:
    if allow_mask is not None and allow_mask.shape != (batch, index.meta.num_items):
        raise ValueError(
            f"allow_mask has shape {allow_mask.shape}, expected {(batch, index.meta.num_items)} "
            "(one row per request, one column per catalogue item)."
        )
    if exclude_rows is not None and (exclude_rows.ndim != 2 or exclude_rows.shape[0] != batch):
        raise ValueError(f"exclude_rows has shape {exclude_rows.shape}, expected ({batch}, num_excluded).")


def _level_widths(index: DeviceIndex) -> list[int]:
    """Static width of each level's children (dense codebook or CSR row)."""
    meta = index.meta
    return [meta.codebook_sizes[level] if _is_dense(index, level) else meta.max_branch[level]
            for level in range(meta.num_levels)]


def constrained_sample(
    index: DeviceIndex,
    step_fn: StepFn,
    shared: PyTree,
    beam_cache: PyTree,
    key: jax.Array,
    *,
    num_samples: int,
    start_token: int,
    temperature: float | jax.Array = 1.0,
    top_k: int | jax.Array | None = None,
    top_p: float | jax.Array | None = None,
    normalization: Normalization = "trie",
    allow_mask: jax.Array | None = None,
    exclude_rows: jax.Array | None = None,
) -> SampleOutput:
    """Draws ``num_samples`` catalogue SIDs per request from the trie-restricted policy (traceable).

    Each level draws the next code among the valid children of the prefix
    with probability proportional to ``pi(code | prefix) ** (1 / temperature)``,
    restricted to the ``top_k`` most likely children and then to the smallest
    set of them holding ``top_p`` of the (tempered, top-k) mass. Samples are
    independent (with replacement); one step_fn call per level on
    ``num_samples`` slots, no cache reorder, one random draw for all levels.

    Args:
      index: trie on the device (``TrieIndex.to_device``).
      step_fn: the model step (``constrained.beam_search`` module docstring).
      shared: per-request encoding, leaves [batch, ...], computed once.
      beam_cache: fresh per-slot cache, leaves [batch, num_samples, ...].
      key: PRNG key.
      num_samples: G, rollouts per request.
      start_token: token fed at step 0 (the model's BOS).
      temperature: > 0; the proposal's temperature (not the reported log-probs').
      top_k, top_p: optional truncation among the valid children (None = off).
        ``temperature``, ``top_k`` and ``top_p`` may be traced scalars.
      normalization: ``"trie"`` (the RL policy) or ``"vocab"`` (full-vocabulary
        log-softmax) for ``token_log_probs``; the samples do not depend on it.
      allow_mask, exclude_rows: optional per-request filters, as in
        ``constrained_beam_search`` (module docstring for what they change).

    Returns:
      SampleOutput with leaves [batch, num_samples, ...].
    """
    check_normalization(normalization)
    _check_sampling_args(temperature, top_k, top_p)
    batch = _batch_size(shared, beam_cache)
    _check_filters(index, batch, allow_mask, exclude_rows)
    widths = _level_widths(index)
    starts = [sum(widths[:level]) for level in range(len(widths))]
    # Gumbel-max with one draw for every level (one PRNG call keeps the program small).
    gumbel = jax.random.gumbel(key, (batch, num_samples, sum(widths)), jnp.float32)

    def choose(level, codes, log_probs, allowed):
        scores = _proposal_scores(log_probs, allowed, temperature, top_k, top_p)
        noise = gumbel[..., starts[level] : starts[level] + widths[level]]
        position = jnp.argmax(jnp.where(scores > -jnp.inf, scores + noise, -jnp.inf), axis=-1)
        return position.astype(jnp.int32), jnp.any(scores > -jnp.inf, axis=-1)

    return _rollout(
        index, step_fn, shared, beam_cache, batch=batch, num_slots=num_samples, start_token=start_token,
        normalization=normalization, keep=_make_target_filter(index, allow_mask, exclude_rows), choose=choose,
    )


def beam_rollouts(
    index: DeviceIndex,
    step_fn: StepFn,
    shared: PyTree,
    beam_cache: PyTree,
    *,
    num_rollouts: int,
    start_token: int,
    normalization: Normalization = "trie",
    allow_mask: jax.Array | None = None,
    exclude_rows: jax.Array | None = None,
) -> SampleOutput:
    """The ``num_rollouts`` best SIDs of ``constrained_beam_search`` as rollouts (traceable).

    The beam width is ``beam_cache``'s slot count (>= ``num_rollouts``); beams
    are ranked under ``normalization``. The beam search returns only whole-SID
    scores, so the per-level ``token_log_probs`` come from a replay: the chosen
    codes are fed through ``step_fn`` once more on the first ``num_rollouts``
    slots of the (fresh) ``beam_cache``: ``L`` more steps of ``num_rollouts``
    slots. Their sum equals the beam's score.

    Returns:
      SampleOutput with leaves [batch, num_rollouts, ...], best first; slots
      past the number of reachable items are invalid.
    """
    leaves = jax.tree_util.tree_leaves(beam_cache)
    num_beams = leaves[0].shape[1] if leaves else num_rollouts
    if num_beams < num_rollouts:
        raise ValueError(f"beam_cache has {num_beams} slots, fewer than num_rollouts={num_rollouts}; "
                         "pass a cache of at least num_rollouts beams.")
    fresh_cache = jax.tree_util.tree_map(lambda leaf: leaf[:, :num_rollouts], beam_cache)
    found = constrained_beam_search(
        index, step_fn, shared, beam_cache, num_beams=num_beams, start_token=start_token,
        allow_mask=allow_mask, exclude_rows=exclude_rows, normalization=normalization,
    )
    forced = found.sid_codes[:, :num_rollouts]

    def choose(level, codes, log_probs, allowed):
        hit = allowed & (codes == forced[:, :, level, None])
        return jnp.argmax(hit, axis=-1).astype(jnp.int32), jnp.any(hit, axis=-1)

    replay = _rollout(
        index, step_fn, shared, fresh_cache, batch=forced.shape[0], num_slots=num_rollouts,
        start_token=start_token, normalization=normalization,
        keep=_make_target_filter(index, allow_mask, exclude_rows), choose=choose,
    )
    return dataclasses.replace(replay, valid=replay.valid & found.valid[:, :num_rollouts])


# -------------------------------------------------------- teacher-forced scoring


def _masked_log_norm(values: jax.Array, valid: jax.Array) -> jax.Array:
    """logsumexp of ``values`` over the last axis where ``valid`` (axis kept),
    with finite gradients even for rows without a valid entry (those give +inf)."""
    any_valid = jnp.any(valid, axis=-1, keepdims=True)
    peak = lax.stop_gradient(jnp.max(jnp.where(valid, values, -jnp.inf), axis=-1, keepdims=True))
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    total = jnp.sum(jnp.exp(jnp.where(valid, values - peak, -jnp.inf)), axis=-1, keepdims=True)
    return jnp.where(any_valid, peak + jnp.log(jnp.where(any_valid, total, 1.0)), jnp.inf)


def _restricted_log_probs(
    index: DeviceIndex, level: int, logits: jax.Array, states: jax.Array, level0: jax.Array, normalization: str
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Differentiable log-probs of every child of the prefixes ``states: int32[...]``
    (-1 = off the trie) from ``logits: float[..., vocab]``.

    Returns ``(codes, log_probs, valid)``, [..., width] (``_level_children``'s
    layout); NaN logits stay NaN.
    """
    child_codes, child_valid = _level_children(index, level, states, level0)
    child_valid = child_valid & (states >= 0)[..., None]
    offset = index.meta.token_offsets[level]
    logits = logits.astype(jnp.float32)
    if _is_dense(index, level):
        picked = lax.dynamic_slice_in_dim(logits, offset, child_codes.shape[-1], axis=-1)
    else:
        picked = jnp.take_along_axis(logits, child_codes + offset, axis=-1)
    if normalization == "trie":
        log_norm = _masked_log_norm(picked, child_valid)
    else:
        log_norm = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    return child_codes, picked - log_norm, child_valid


def token_log_probs_of(
    index: DeviceIndex,
    first_logits: jax.Array,
    rest_logits: jax.Array,
    sid_codes: jax.Array,
    normalization: Normalization = "trie",
) -> jax.Array:
    """Teacher-forced log-probs of given SIDs under the restricted policy (differentiable).

    The new / old / reference log-probs of the RL losses (docs/rl.md): feed
    the rollouts' tokens to ``SIDRecommender.score_candidates`` and pass its
    outputs here.

    Args:
      index: the device index (built with the model's ``token_offsets``).
      first_logits: float[batch, vocab], the distribution of level 0.
      rest_logits: float[batch, G, levels - 1, vocab]; entry ``l - 1`` predicts level ``l``.
      sid_codes: int32[batch, G, levels], codes (not tokens); -1 marks an empty slot.
      normalization: ``"trie"`` (softmax over the prefix's valid children) or ``"vocab"``.

    Returns:
      float32[batch, G, levels]: log pi(code_l | prefix). 0.0 where the code
      is -1 (an empty slot contributes nothing); -inf for a code that is not
      a valid child of its prefix (probability 0 under the policy); NaN
      logits give NaN (a diverged model is not hidden). Gradients are finite
      wherever the logits are.
    """
    check_normalization(normalization)
    num_levels = index.meta.num_levels
    if sid_codes.shape[-1] != num_levels or rest_logits.shape[2] != num_levels - 1:
        raise ValueError(
            f"sid_codes {sid_codes.shape} / rest_logits {rest_logits.shape} do not fit an index of "
            f"{num_levels} levels (expected [B, G, {num_levels}] and [B, G, {num_levels - 1}, V])."
        )
    states = _prefix_states(index, sid_codes)
    out = []
    for level in range(num_levels):
        codes = sid_codes[..., level]
        if level == 0:
            # One distribution per request: normalise it once, read it per rollout.
            root = jnp.zeros(first_logits.shape[:1], jnp.int32)
            child_codes, log_probs, valid = _restricted_log_probs(
                index, 0, first_logits, root, root, normalization)
            child_codes, log_probs, valid = (x[:, None] for x in (child_codes, log_probs, valid))
        else:
            child_codes, log_probs, valid = _restricted_log_probs(
                index, level, rest_logits[:, :, level - 1], states[level], sid_codes[..., 0], normalization)
        hit = valid & (child_codes == codes[..., None])
        read = jnp.sum(jnp.where(hit, log_probs, 0.0), axis=-1)
        out.append(jnp.where(codes < 0, 0.0, jnp.where(hit.any(-1), read, -jnp.inf)))
    return jnp.stack(out, axis=-1)


def restricted_kl(
    index: DeviceIndex,
    new_first_logits: jax.Array,
    new_rest_logits: jax.Array,
    ref_first_logits: jax.Array,
    ref_rest_logits: jax.Array,
    sid_codes: jax.Array,
) -> jax.Array:
    """Exact KL(pi_new || pi_ref) of the trie-restricted policies at each prefix of given SIDs (differentiable).

    Entry ``[b, g, l]`` is ``sum_c pi_new(c | s_l) * (log pi_new(c | s_l) - log pi_ref(c | s_l))`` over
    the valid children ``c`` of rollout ``g``'s prefix ``s_l`` (its first ``l`` codes), both policies
    renormalised over those children (docs/rl.md, "The policy"). Unlike the k3 estimate on the chosen
    code, it is the KL at ``s_l`` whichever way the rollout was chosen (docs/rl.md, "Losses").
    Logits are laid out as in :func:`token_log_probs_of`.

    Args:
      index: the device index (built with the model's ``token_offsets``).
      new_first_logits, ref_first_logits: float[batch, vocab], level 0 (the root, one per request).
      new_rest_logits, ref_rest_logits: float[batch, G, levels - 1, vocab]; entry ``l - 1`` predicts level ``l``.
      sid_codes: int32[batch, G, levels], codes; -1 marks an empty slot.

    Returns:
      float32[batch, G, levels], >= 0 up to rounding; 0.0 where the code is -1, at a prefix with one
      child and at a prefix off the trie (no valid child); NaN logits give NaN. Gradients (to both
      sets of logits) are finite wherever the logits are, one-child prefixes included.
    """
    num_levels = index.meta.num_levels
    for name, rest in (("new_rest_logits", new_rest_logits), ("ref_rest_logits", ref_rest_logits)):
        if sid_codes.shape[-1] != num_levels or rest.shape[:3] != sid_codes.shape[:2] + (num_levels - 1,):
            raise ValueError(
                f"restricted_kl: sid_codes {sid_codes.shape} / {name} {rest.shape} do not fit an index of "
                f"{num_levels} levels (expected [B, G, {num_levels}] and [B, G, {num_levels - 1}, V])."
            )
    states = _prefix_states(index, sid_codes)
    root = jnp.zeros(new_first_logits.shape[:1], jnp.int32)

    def level_kl(level, new_logits, ref_logits, level_states, level0):
        _, new_lp, valid = _restricted_log_probs(index, level, new_logits, level_states, level0, "trie")
        _, ref_lp, _ = _restricted_log_probs(index, level, ref_logits, level_states, level0, "trie")
        # Non-children are masked before exp / subtraction, so -inf never reaches a value or a gradient.
        new_lp = jnp.where(valid, new_lp, 0.0)
        ref_lp = jnp.where(valid, ref_lp, 0.0)
        return jnp.sum(jnp.where(valid, jnp.exp(new_lp) * (new_lp - ref_lp), 0.0), axis=-1)

    out = []
    for level in range(num_levels):
        if level == 0:
            # One distribution per request: its KL once, read by every rollout.
            kl = level_kl(0, new_first_logits, ref_first_logits, root, root)[:, None]
            kl = jnp.broadcast_to(kl, sid_codes.shape[:2])
        else:
            kl = level_kl(level, new_rest_logits[:, :, level - 1], ref_rest_logits[:, :, level - 1],
                          states[level], sid_codes[..., 0])
        out.append(jnp.where(sid_codes[..., level] < 0, 0.0, kl))
    return jnp.stack(out, axis=-1)


def restricted_entropy(
    index: DeviceIndex, logits: jax.Array, prefix_codes: jax.Array, prefix_len: jax.Array
) -> jax.Array:
    """Entropy (nats) of the trie-restricted policy at each prefix (VED's H(s), Eq. 11).

    Args:
      index: the device index.
      logits: float[..., vocab], the model's logits for the code at level ``prefix_len``.
      prefix_codes: int32[..., levels], the prefix's codes, -1 padding past ``prefix_len``.
      prefix_len: int32[...], in ``0 .. levels``.

    Returns:
      float32[...]; 0.0 at a complete SID (``prefix_len == levels``), at a
      prefix with one child, and at a prefix off the trie.
    """
    states = _prefix_states(index, prefix_codes)
    entropy = jnp.zeros(prefix_len.shape, jnp.float32)
    for level in range(index.meta.num_levels):
        _, log_probs, valid = _restricted_log_probs(
            index, level, logits, states[level], prefix_codes[..., 0], "trie")
        safe = jnp.where(valid, log_probs, 0.0)
        level_entropy = -jnp.sum(jnp.where(valid, jnp.exp(safe) * safe, 0.0), axis=-1)
        entropy = jnp.where(prefix_len == level, level_entropy, entropy)
    return entropy


# ------------------------------------------------------- jitted genrec entries


def sample_batch(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    index: DeviceIndex,
    history_tokens: jax.Array,
    history_mask: jax.Array,
    key: jax.Array,
    allow_mask: jax.Array | None = None,
    exclude_rows: jax.Array | None = None,
    *,
    num_samples: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    normalization: str = "trie",
) -> SampleOutput:
    """Encode + :func:`constrained_sample` for one batch of a genrec model, in one compiled call.

    Arguments as ``constrained.decode.decode_batch`` (``graphdef, state =
    nnx.split(model)``; ``history_tokens, history_mask`` from
    ``constrained.decode.history_tokens``) and :func:`constrained_sample`.
    One compile per (model structure, ``num_samples``, batch shape, which
    filters and truncations are given); new values of ``temperature``,
    ``top_k`` and ``top_p`` reuse it.
    """
    _check_sampling_args(temperature, top_k, top_p)
    return _sample_batch(
        graphdef, state, index, history_tokens, history_mask, key, allow_mask, exclude_rows,
        temperature, top_k, top_p, num_samples=num_samples, normalization=normalization,
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "num_samples", "normalization"))
def _sample_batch(
    graphdef, state, index, history_tokens, history_mask, key, allow_mask, exclude_rows,
    temperature, top_k, top_p, *, num_samples, normalization,
) -> SampleOutput:
    model = nnx.merge(graphdef, state)
    shared = model.encode(history_tokens, history_mask)
    return constrained_sample(
        index, model.decode_step, shared, model.init_beam_cache(shared, num_samples), key,
        num_samples=num_samples, start_token=BOS_ID, temperature=temperature, top_k=top_k, top_p=top_p,
        normalization=normalization, allow_mask=allow_mask, exclude_rows=exclude_rows,
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "num_rollouts", "num_beams", "normalization"))
def beam_rollout_batch(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    index: DeviceIndex,
    history_tokens: jax.Array,
    history_mask: jax.Array,
    allow_mask: jax.Array | None = None,
    exclude_rows: jax.Array | None = None,
    *,
    num_rollouts: int,
    num_beams: int | None = None,
    normalization: str = "trie",
) -> SampleOutput:
    """Encode + :func:`beam_rollouts` (beam width ``num_beams``, default
    ``num_rollouts``) for one batch of a genrec model, in one compiled call."""
    model = nnx.merge(graphdef, state)
    shared = model.encode(history_tokens, history_mask)
    return beam_rollouts(
        index, model.decode_step, shared, model.init_beam_cache(shared, num_beams or num_rollouts),
        num_rollouts=num_rollouts, start_token=BOS_ID, normalization=normalization,
        allow_mask=allow_mask, exclude_rows=exclude_rows,
    )
