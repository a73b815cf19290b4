"""Plain-Python reference for the constrained decoder: a dict trie and an
explicit beam search. Slow and obvious on purpose: it is the oracle the tests
hold the jitted search to, and the CPU baseline of the benchmark.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def build_dict_trie(sid_codes: np.ndarray, item_ids: Sequence[int]) -> dict:
    """Nested dicts code -> child; a full SID maps to its item id."""
    root: dict = {}
    for codes, item in zip(np.asarray(sid_codes).tolist(), item_ids):
        node = root
        for code in codes[:-1]:
            node = node.setdefault(code, {})
        if codes[-1] in node:
            raise ValueError(f"duplicate SID {codes}")
        node[codes[-1]] = int(item)
    return root


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    if not np.all(np.isfinite(m)):
        m = np.where(np.isfinite(m), m, 0.0)
    out = x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))
    return np.where(np.isnan(out), -np.inf, out)


def reference_beam_search(
    trie: dict,
    logits_fn: Callable[[tuple[int, ...]], np.ndarray],
    *,
    num_levels: int,
    num_beams: int,
    token_offsets: Sequence[int],
    normalization: str = "vocab",
    normalizer_trie: dict | None = None,
) -> list[tuple[float, tuple[int, ...], int]]:
    """Beam search over one request.

    Args:
      trie: from :func:`build_dict_trie` (already restricted to the request's
        allowed items, if it has a filter).
      logits_fn: prefix codes -> logits over the model vocabulary for the next
        level.
      num_levels, num_beams, token_offsets, normalization: as in the jitted
        search.
      normalizer_trie: with ``normalization="trie"``, the (unfiltered) trie
        whose children of each prefix form the softmax support; defaults to
        ``trie``.

    Returns:
      Up to ``num_beams`` (score, codes, item_id), best first. Candidates are
      ranked by score, ties broken by parent beam then code (the jitted
      search's rule).
    """
    beams: list[tuple[float, tuple[int, ...], dict | int]] = [(0.0, (), trie)]
    for level in range(num_levels):
        candidates = []
        for beam_rank, (score, prefix, node) in enumerate(beams):
            logits = np.asarray(logits_fn(prefix), np.float64)
            if normalization == "vocab":
                logp = log_softmax(logits)
            else:
                support = _lookup(normalizer_trie if normalizer_trie is not None else trie, prefix)
                codes = np.asarray(sorted(support)) + token_offsets[level]
                logp = np.full_like(logits, -np.inf)
                logp[codes] = log_softmax(logits[codes])
            for code in sorted(node):
                s = score + logp[token_offsets[level] + code]
                if s == -np.inf:
                    continue
                candidates.append((-s, beam_rank, code, prefix + (code,), node[code]))
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        beams = [(-c[0], c[3], c[4]) for c in candidates[:num_beams]]
    return [(score, prefix, item) for score, prefix, item in beams]


def _lookup(trie: dict, prefix: tuple[int, ...]) -> dict:
    node = trie
    for code in prefix:
        node = node[code]
    return node


def prune_trie(trie: dict, allowed_items: set[int]) -> dict:
    """Copy of the trie keeping only allowed items (empty branches removed)."""

    def prune(node):
        out = {}
        for code, child in node.items():
            if isinstance(child, dict):
                sub = prune(child)
                if sub:
                    out[code] = sub
            elif child in allowed_items:
                out[code] = child
        return out

    return prune(trie)


def reference_listed_prefix(
    sid_codes: np.ndarray,
    prefix: Sequence[int],
    *,
    allow_rows: Sequence[int] | None = None,
    exclude_rows: Sequence[int] | None = None,
) -> bool:
    """Does some item whose SID starts with ``prefix`` survive one request's lists?

    ``sid_codes``: ``int[num_items, L]`` by input row. ``allow_rows``: the only
    input rows allowed (``-1`` entries ignored; none listed = no constraint);
    ``exclude_rows``: input rows removed (``-1`` ignored).
    """
    codes = np.asarray(sid_codes)
    alive = np.all(codes[:, : len(prefix)] == np.asarray(prefix, dtype=codes.dtype).reshape(1, -1), axis=1)
    if allow_rows is not None:
        listed = [row for row in allow_rows if row >= 0]
        if listed:
            alive &= np.isin(np.arange(len(codes)), listed)
    if exclude_rows is not None:
        alive &= ~np.isin(np.arange(len(codes)), [row for row in exclude_rows if row >= 0])
    return bool(alive.any())


def reference_step_distribution(
    logits: np.ndarray, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> np.ndarray:
    """The constrained sampler's proposal over some children: softmax of
    ``logits / temperature``, truncated to the ``top_k`` best, then to the
    fewest best holding ``top_p`` of the mass (ties at the cut kept), renormalised."""
    scores = np.asarray(logits, np.float64) / temperature
    scores = np.where(np.isnan(scores), -np.inf, scores)
    if top_k is not None and top_k < len(scores):
        scores = np.where(scores >= np.sort(scores)[::-1][top_k - 1], scores, -np.inf)
    probs = np.exp(log_softmax(scores))
    if top_p is not None:
        ranked = np.sort(probs)[::-1]
        mass_before = np.cumsum(ranked) - ranked
        kept = max(1, int(np.sum(mass_before < top_p)))
        probs = np.where(probs >= ranked[kept - 1], probs, 0.0)
        probs = probs / probs.sum()
    return probs


def reference_sample_distribution(
    trie: dict,
    logits_fn: Callable[[tuple[int, ...]], np.ndarray],
    *,
    num_levels: int,
    token_offsets: Sequence[int],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> dict[int, float]:
    """Exact probability of each item under constrained sampling, by enumeration.

    At each prefix the next code is drawn among the children of ``trie`` (the
    request's, already pruned by its filter) with
    :func:`reference_step_distribution` of their logits.

    Returns:
      item id -> probability (items of probability 0 included).
    """
    out: dict[int, float] = {}

    def walk(node, prefix, prob):
        level = len(prefix)
        codes = sorted(node)
        logits = np.asarray(logits_fn(prefix), np.float64)
        step = reference_step_distribution(
            logits[np.asarray(codes) + token_offsets[level]], temperature=temperature, top_k=top_k, top_p=top_p)
        for code, p in zip(codes, step):
            if level + 1 == num_levels:
                out[node[code]] = prob * p
            else:
                walk(node[code], prefix + (code,), prob * p)

    walk(trie, (), 1.0)
    return out


def reference_token_log_probs(
    trie: dict,
    logits_fn: Callable[[tuple[int, ...]], np.ndarray],
    codes: Sequence[int],
    *,
    token_offsets: Sequence[int],
    normalization: str = "trie",
) -> np.ndarray:
    """log pi(code_l | codes[:l]) of one SID, float64[levels]: the softmax over
    the prefix's children in ``trie`` (``"trie"``) or over the vocabulary (``"vocab"``)."""
    out = []
    for level, code in enumerate(codes):
        prefix = tuple(codes[:level])
        logits = np.asarray(logits_fn(prefix), np.float64)
        if normalization == "vocab":
            out.append(log_softmax(logits)[token_offsets[level] + code])
        else:
            children = sorted(_lookup(trie, prefix))
            logp = log_softmax(logits[np.asarray(children) + token_offsets[level]])
            out.append(logp[children.index(code)])
    return np.asarray(out)


def reference_restricted_kl(
    trie: dict,
    new_logits_fn: Callable[[tuple[int, ...]], np.ndarray],
    ref_logits_fn: Callable[[tuple[int, ...]], np.ndarray],
    codes: Sequence[int],
    *,
    token_offsets: Sequence[int],
) -> np.ndarray:
    """KL(new || ref) at each prefix ``codes[:l]`` of one SID, float64[levels]: both
    softmaxes taken over the prefix's children in ``trie``, summed over those children."""
    out = []
    for level in range(len(codes)):
        prefix = tuple(codes[:level])
        children = np.asarray(sorted(_lookup(trie, prefix))) + token_offsets[level]
        new = log_softmax(np.asarray(new_logits_fn(prefix), np.float64)[children])
        ref = log_softmax(np.asarray(ref_logits_fn(prefix), np.float64)[children])
        out.append(float(np.sum(np.exp(new) * (new - ref))))
    return np.asarray(out)
