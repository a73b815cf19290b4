"""Leave-one-out evaluation through the constrained beam search.

Where it sits: checkpoint -> **index -> decode** -> metrics. The trainer calls
:func:`evaluate_split` on the validation split for model selection and on the
test split at the end; ``genrec eval`` and ``genrec demo`` call it on a saved
model. :class:`serving.recommender.Recommender` reuses :func:`decode_batch`
and :func:`history_tokens`, so evaluation and serving decode the same way.

Protocol (the APAO / TIGER setting):

* every example is a user's history (``int32[n, H]`` item rows, left-padded
  with -1) and one held-out target item;
* the model generates ``num_beams`` SIDs by beam search constrained to the
  catalogue's SIDs; the beam is ranked by sequence log-probability;
* ``recall@k`` = fraction of examples whose target appears in the top ``k``;
  ``ndcg@k`` = mean of ``1 / log2(rank + 1)`` over examples whose target has
  1-based ``rank <= k`` (0 otherwise); one relevant item, so IDCG = 1.

**Colliding SIDs.** A few items can share a SID (Office has 5 shared SIDs
covering 10 items, Beauty 11 covering 23). Evaluation is at SID level: the
index (:func:`build_eval_index`) holds every *distinct* SID once, so each SID
occupies at most one beam slot, and a hit means the generated SID equals the
target item's SID. This is what the published reference code does (it
compares generated token strings with the target's), so our numbers are
comparable with the paper's. It credits a hit for a SID shared with the target
even though a server could show only one of its items; on Office/Beauty that
concerns < 0.2% of the items. :func:`popularity_baseline` ranks SIDs the same way.

Every batch has the same shape (the last one is padded with empty histories
and its rows dropped from the metrics), so one compile serves a whole split,
and the compiled decode is cached across calls with the same model structure,
beam width and batch size (the trainer's periodic evaluations compile once).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from constrained.beam_search import (
    BeamSearchOutput,
    constrained_beam_search,
    unconstrained_beam_search,
)
from constrained.index import TrieIndex, build_index
from genrec.datasets import InteractionData
from genrec.split import SplitArrays
from genrec.vocab import BOS_ID, PAD_ID, SIDVocabulary

__all__ = [
    "build_eval_index",
    "decode_batch",
    "evaluate_split",
    "hit_ranks",
    "history_tokens",
    "popularity_baseline",
    "prefix_indexes",
    "ranking_metrics",
    "validation_ce",
]


# ---------------------------------------------------------------------------
# Index over distinct SIDs
# ---------------------------------------------------------------------------


def build_eval_index(sid_codes: np.ndarray, vocab: SIDVocabulary) -> tuple[TrieIndex, np.ndarray]:
    """The trie over the catalogue's *distinct* SIDs (collision policy: module docstring).

    Args:
      sid_codes: ``int[num_items, L]`` SID codes of every item row.
      vocab: token layout; the index reads logit ``vocab.level_offsets[l] + code``.

    Returns:
      ``(index, sid_row_of_item)``: the index, whose item ids are distinct-SID
      rows ``0 .. num_sids-1`` (SIDs in lexicographic order), and
      ``int32[num_items]`` giving each item row's distinct-SID row.
    """
    sid_codes = np.asarray(sid_codes)
    if sid_codes.ndim != 2 or sid_codes.shape[0] == 0:
        raise ValueError(f"sid_codes must be a non-empty [num_items, num_levels] array, got {sid_codes.shape}")
    if sid_codes.shape[1] != vocab.num_levels:
        raise ValueError(
            f"sid_codes have {sid_codes.shape[1]} levels but the vocabulary has {vocab.num_levels}; "
            "use the vocabulary saved with these SIDs"
        )
    distinct_codes, sid_row_of_item = np.unique(sid_codes, axis=0, return_inverse=True)
    index = build_index(
        distinct_codes,
        item_ids=np.arange(distinct_codes.shape[0], dtype=np.int64),
        codebook_sizes=vocab.codebook_sizes,
        token_offsets=vocab.level_offsets,
    )
    return index, sid_row_of_item.reshape(-1).astype(np.int32)


def prefix_indexes(sid_codes: np.ndarray, vocab: SIDVocabulary) -> list[TrieIndex]:
    """Tries over the catalogue's distinct length-``t`` prefixes, ``t = 1 .. L-1``.

    A beam search over the length-``t`` trie keeps exactly the beams the full
    search holds after level ``t`` (the same candidates, scores and selection
    rule), so it tells whether a target's prefix survived that far.
    """
    sid_codes = np.asarray(sid_codes)
    indexes = []
    for length in range(1, sid_codes.shape[1]):
        distinct = np.unique(sid_codes[:, :length], axis=0)
        indexes.append(build_index(
            distinct,
            item_ids=np.arange(distinct.shape[0], dtype=np.int64),
            codebook_sizes=vocab.codebook_sizes[:length],
            token_offsets=vocab.level_offsets[:length],
        ))
    return indexes


# ---------------------------------------------------------------------------
# History tokens and the jitted decode (shared with serving.recommender)
# ---------------------------------------------------------------------------


def history_tokens(history_rows: np.ndarray, item_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Item-row histories -> the model's flattened history tokens.

    Args:
      history_rows: ``int[B, H]`` item rows, left-padded with -1 (most recent last).
      item_tokens: ``int32[num_items, L]`` SID token ids of every item row.

    Returns:
      ``(tokens int32[B, H*L], mask bool[B, H*L])``, left-padded with ``PAD_ID``.
    """
    history_rows = np.asarray(history_rows)
    batch, max_history = history_rows.shape
    num_levels = item_tokens.shape[1]
    present = history_rows >= 0
    tokens = np.where(present[..., None], item_tokens[np.maximum(history_rows, 0)], PAD_ID)
    mask = np.broadcast_to(present[..., None], (batch, max_history, num_levels))
    return (
        tokens.reshape(batch, max_history * num_levels).astype(np.int32),
        mask.reshape(batch, max_history * num_levels).copy(),
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "num_beams", "normalization"))
def decode_batch(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    index: Any,
    history_tokens: jax.Array,
    history_mask: jax.Array,
    allow_mask: jax.Array | None = None,
    exclude_rows: jax.Array | None = None,
    *,
    num_beams: int,
    normalization: str = "vocab",
) -> BeamSearchOutput:
    """Encode + constrained beam search for one batch: the one jit boundary of decoding.

    The weights enter as the ``state`` argument (``nnx.split(model)``), not as
    constants, so a new checkpoint of the same architecture reuses the compiled
    program. One compile per (model structure, ``num_beams``, batch shape, which
    filters are given).

    Args:
      graphdef, state: ``nnx.split(model)``.
      index: ``TrieIndex.to_device()``.
      history_tokens: ``int32[B, H*L]``; history_mask: ``bool[B, H*L]``.
      allow_mask: optional ``bool[B, num_index_items]`` over index item rows.
      exclude_rows: optional ``int32[B, E]`` index item rows to drop, -1 padding.
      normalization: ``"vocab"`` or ``"trie"`` (``constrained.beam_search``);
        ``"trie"`` for models trained with the MSL loss.

    Returns:
      ``BeamSearchOutput`` with leaves ``[B, num_beams, ...]``, best first.
    """
    model = nnx.merge(graphdef, state)
    shared = model.encode(history_tokens, history_mask)
    beam_cache = model.init_beam_cache(shared, num_beams)
    return constrained_beam_search(
        index, model.decode_step, shared, beam_cache,
        num_beams=num_beams, start_token=BOS_ID,
        allow_mask=allow_mask, exclude_rows=exclude_rows, normalization=normalization,
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "num_beams", "codebook_sizes", "token_offsets"))
def _unconstrained_decode(
    graphdef, state, history_tokens, history_mask, *, num_beams, codebook_sizes, token_offsets
) -> jax.Array:
    """Free beam search (no trie): ``int32[B, num_beams, L]`` codes, for the diagnosis."""
    model = nnx.merge(graphdef, state)
    shared = model.encode(history_tokens, history_mask)
    beam_cache = model.init_beam_cache(shared, num_beams)
    codes, _ = unconstrained_beam_search(
        model.decode_step, shared, beam_cache, num_beams=num_beams, start_token=BOS_ID,
        num_levels=len(codebook_sizes), codebook_sizes=codebook_sizes, token_offsets=token_offsets,
    )
    return codes


# ---------------------------------------------------------------------------
# Metric math (pure NumPy)
# ---------------------------------------------------------------------------


def hit_ranks(beam_codes: np.ndarray, beam_valid: np.ndarray, target_codes: np.ndarray) -> np.ndarray:
    """1-based rank of the target's SID in each beam, 0 when absent.

    Args:
      beam_codes: ``int[n, K, L]`` generated SIDs, best first.
      beam_valid: ``bool[n, K]``; invalid slots never match.
      target_codes: ``int[n, L]`` the target item's SID.

    Returns:
      ``int64[n]``; the first matching slot counts (with a distinct-SID index
      each SID appears at most once).
    """
    matches = np.all(beam_codes == target_codes[:, None, :], axis=-1) & beam_valid
    return np.where(matches.any(axis=1), matches.argmax(axis=1) + 1, 0).astype(np.int64)


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@k and NDCG@k from 1-based hit ranks (0 = miss), one relevant item per example.

    ``recall@k = mean(0 < rank <= k)``; ``ndcg@k = mean(1 / log2(rank + 1))``
    over hits within ``k`` (misses count 0). Also ``num_examples``.
    """
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no examples to evaluate")
    hit = ranks > 0
    gain = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)
    metrics: dict[str, float] = {}
    for k in ks:
        within = hit & (ranks <= k)
        metrics[f"recall@{k}"] = float(within.mean())
        metrics[f"ndcg@{k}"] = float(np.where(within, gain, 0.0).mean())
    metrics["num_examples"] = float(ranks.size)
    return metrics


def _check_ks(ks: Sequence[int], num_beams: int | None) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks={ks} must be non-empty positive cut-offs")
    if num_beams is not None and max(ks) > num_beams:
        raise ValueError(
            f"cut-off k={max(ks)} exceeds num_beams={num_beams}: a beam of {num_beams} ranks only "
            f"{num_beams} SIDs; raise num_beams to at least {max(ks)}"
        )
    return ks


# ---------------------------------------------------------------------------
# Baseline
# ---------------------------------------------------------------------------


def popularity_baseline(
    sid_codes: np.ndarray,
    train_targets: np.ndarray,
    eval_targets: np.ndarray,
    *,
    ks: Sequence[int] = (5, 10, 20),
) -> dict[str, float]:
    """Metrics of recommending the same most popular SIDs to everyone.

    Popularity = how often a SID is a *training target*; ties go to the
    lexicographically smaller SID. Scored at SID level, like :func:`evaluate_split`.

    Args:
      sid_codes: ``int[num_items, L]``.
      train_targets: ``int[n_train]`` item rows (``split.train.targets``).
      eval_targets: ``int[n_eval]`` item rows to score (``split.test.targets``).

    Returns:
      The keys of :func:`ranking_metrics`.
    """
    ks = _check_ks(ks, None)
    _, sid_row_of_item = np.unique(np.asarray(sid_codes), axis=0, return_inverse=True)
    sid_row_of_item = sid_row_of_item.reshape(-1)
    num_sids = int(sid_row_of_item.max()) + 1
    counts = np.bincount(sid_row_of_item[np.asarray(train_targets)], minlength=num_sids)
    ranking = np.argsort(-counts, kind="stable")[: max(ks)]
    rank_of_sid = np.zeros(num_sids, np.int64)
    rank_of_sid[ranking] = np.arange(1, ranking.size + 1)
    return ranking_metrics(rank_of_sid[sid_row_of_item[np.asarray(eval_targets)]], ks)


# ---------------------------------------------------------------------------
# Evaluation loop
# ---------------------------------------------------------------------------


def _catalogue_membership(sid_codes: np.ndarray, codebook_sizes: Sequence[int]):
    """``contains(codes int[..., L]) -> bool[...]``: is each SID in the catalogue?"""
    sizes = tuple(int(s) for s in codebook_sizes)
    if math.prod(sizes) < 2**62:
        keys = np.unique(np.ravel_multi_index(tuple(np.asarray(sid_codes).T), sizes))

        def contains(codes):
            flat = np.ravel_multi_index(tuple(np.moveaxis(codes, -1, 0)), sizes)
            return np.isin(flat, keys)
    else:  # too many combinations for one int64 key: hash whole rows
        known = {row.tobytes() for row in np.asarray(sid_codes, np.int32)}

        def contains(codes):
            rows = np.asarray(codes, np.int32).reshape(-1, codes.shape[-1])
            found = np.fromiter((row.tobytes() in known for row in rows), bool, rows.shape[0])
            return found.reshape(codes.shape[:-1])
    return contains


def _num_examples(split_arrays: SplitArrays, max_examples: int | None) -> int:
    """Examples to evaluate: all, or the first ``max_examples``; raises if none."""
    num_examples = split_arrays.num_examples
    if max_examples is not None:
        num_examples = min(num_examples, int(max_examples))
    if num_examples == 0:
        raise ValueError("the split has no examples to evaluate")
    return num_examples


def _padded_batches(split_arrays: SplitArrays, num_examples: int, batch_size: int):
    """Yields ``(start, stop, histories int32[batch_size, H], targets int32[batch_size])``
    over the first ``num_examples`` examples; the last batch is padded to the
    compiled shape with empty histories (-1) and target row 0, to be ignored."""
    for start in range(0, num_examples, batch_size):
        stop = min(start + batch_size, num_examples)
        rows = np.asarray(split_arrays.histories[start:stop])
        targets = np.asarray(split_arrays.targets[start:stop])
        pad = batch_size - (stop - start)
        if pad:
            rows = np.concatenate([rows, np.full((pad, rows.shape[1]), -1, rows.dtype)])
            targets = np.concatenate([targets, np.zeros(pad, targets.dtype)])
        yield start, stop, rows, targets


def evaluate_split(
    model: nnx.Module,
    index: TrieIndex,
    data: InteractionData,
    split_arrays: SplitArrays,
    *,
    num_beams: int = 20,
    batch_size: int = 256,
    ks: Sequence[int] = (5, 10, 20),
    max_examples: int | None = None,
    diagnose_unconstrained: bool = False,
    diagnose_prefix_survival: bool = False,
    normalization: str = "vocab",
    ranks_out: np.ndarray | None = None,
    prefix_ranks_out: np.ndarray | None = None,
) -> dict[str, float]:
    """Recall@k / NDCG@k of ``model`` on one leave-one-out split.

    Args:
      model: a genrec recommender (``encode`` / ``init_beam_cache`` / ``decode_step``).
      index: from :func:`build_eval_index` (``data.sid_codes``, ``data.vocab``);
        any index over the same SIDs and token layout works, since hits compare
        SID codes, not item ids.
      data: gives the items' SID codes and token layout.
      split_arrays: ``histories int32[n, H]`` (left-padded with -1) and
        ``targets int32[n]``, item rows of ``data``.
      num_beams: beam width; every ``k`` in ``ks`` must be ``<= num_beams``.
      batch_size: examples per decode call (the last batch is padded).
      ks: cut-offs.
      max_examples: evaluate only the first this many examples.
      diagnose_unconstrained: also run a free beam search and report
        ``unconstrained_valid_fraction``, the share of its ``n * num_beams``
        generated SIDs that exist in the catalogue.
      diagnose_prefix_survival: also report ``prefix_in_beam@t`` for
        ``t = 1..L``: the share of examples whose target's length-``t`` prefix
        is among the ``num_beams`` beams kept after level ``t`` (what APAO's
        prefix losses try to raise; ``prefix_in_beam@L`` is
        ``recall@num_beams``). Costs one extra ``t``-level search per ``t < L``.
      normalization: beam scores' softmax support, ``"vocab"`` or ``"trie"``
        (``training.config.score_normalization`` picks it for a run).
      ranks_out: optional ``int[>= n]`` array that receives each example's
        1-based rank of the target SID in the beam (0 = not in it), for paired
        comparisons of two models on the same users
        (``research/compare_runs.py``).
      prefix_ranks_out: optional ``int[num_levels, >= n]`` array (needs
        ``diagnose_prefix_survival``): row ``t-1`` receives each example's rank
        of its target's length-``t`` prefix among the beams after level ``t``
        (0 = pruned); the last row is the final rank (as ``ranks_out``). For
        prefix survival by user group (``research/popularity_buckets.py``).

    Returns:
      ``{"recall@5": ..., "ndcg@5": ..., ..., "num_examples": n}`` (floats),
      plus ``"unconstrained_valid_fraction"`` / ``"prefix_in_beam@t"`` with
      the diagnoses.
    """
    ks = _check_ks(ks, num_beams)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if index.num_levels != data.num_levels:
        raise ValueError(
            f"the index has {index.num_levels} SID levels but the data has {data.num_levels}; "
            "build it with build_eval_index(data.sid_codes, data.vocab) (no disambiguation level)"
        )
    if tuple(index.token_offsets) != tuple(int(o) for o in data.vocab.level_offsets):
        raise ValueError(
            f"the index's token offsets {tuple(index.token_offsets)} differ from the vocabulary's "
            f"{tuple(data.vocab.level_offsets)}; build it with build_eval_index(data.sid_codes, data.vocab)"
        )
    if prefix_ranks_out is not None and not diagnose_prefix_survival:
        raise ValueError("prefix_ranks_out needs diagnose_prefix_survival=True")
    num_examples = _num_examples(split_arrays, max_examples)
    targets = np.asarray(split_arrays.targets[:num_examples])
    batch_size = min(batch_size, num_examples)

    item_tokens = data.vocab.codes_to_tokens(data.sid_codes)
    target_codes = np.asarray(data.sid_codes)[targets]
    graphdef, state = nnx.split(model)
    device_index = index.to_device()
    contains = _catalogue_membership(data.sid_codes, data.vocab.codebook_sizes) if diagnose_unconstrained else None
    num_levels = data.num_levels
    survival_indexes = (
        [i.to_device() for i in prefix_indexes(data.sid_codes, data.vocab)] if diagnose_prefix_survival else []
    )
    prefix_ranks = np.zeros((len(survival_indexes), num_examples), np.int64)

    ranks = np.zeros(num_examples, np.int64)
    num_in_catalogue = 0
    pending = None  # (start, stop, output): pulled after the next batch is dispatched

    def collect(start, stop, output):
        beam_codes = np.asarray(output.sid_codes)[: stop - start]
        beam_valid = np.asarray(output.valid)[: stop - start]
        ranks[start:stop] = hit_ranks(beam_codes, beam_valid, target_codes[start:stop])

    for start, stop, rows, _ in _padded_batches(split_arrays, num_examples, batch_size):
        tokens, mask = history_tokens(rows, item_tokens)
        output = decode_batch(graphdef, state, device_index, tokens, mask, num_beams=num_beams,
                              normalization=normalization)
        if diagnose_unconstrained:
            free_codes = _unconstrained_decode(
                graphdef, state, tokens, mask, num_beams=num_beams,
                codebook_sizes=tuple(data.vocab.codebook_sizes),
                token_offsets=tuple(int(o) for o in data.vocab.level_offsets),
            )
            num_in_catalogue += int(contains(np.asarray(free_codes)[: stop - start]).sum())
        for level, prefix_index in enumerate(survival_indexes):
            prefix_output = decode_batch(graphdef, state, prefix_index, tokens, mask, num_beams=num_beams,
                                         normalization=normalization)
            prefix_ranks[level, start:stop] = hit_ranks(
                np.asarray(prefix_output.sid_codes)[: stop - start],
                np.asarray(prefix_output.valid)[: stop - start],
                target_codes[start:stop, : level + 1],
            )
        if pending is not None:
            collect(*pending)
        pending = (start, stop, output)
    collect(*pending)

    if ranks_out is not None:
        ranks_out[:num_examples] = ranks
    if prefix_ranks_out is not None:
        prefix_ranks_out[:-1, :num_examples] = prefix_ranks
        prefix_ranks_out[-1, :num_examples] = ranks
    metrics = ranking_metrics(ranks, ks)
    if diagnose_unconstrained:
        metrics["unconstrained_valid_fraction"] = num_in_catalogue / float(num_examples * num_beams)
    if diagnose_prefix_survival:
        for level in range(len(survival_indexes)):
            metrics[f"prefix_in_beam@{level + 1}"] = float(np.mean(prefix_ranks[level] > 0))
        metrics[f"prefix_in_beam@{num_levels}"] = float(np.mean(ranks > 0))
    return metrics


# ---------------------------------------------------------------------------
# Teacher-forced validation loss
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _target_nll_sum(graphdef, state, history_tokens, history_mask, target_tokens, example_mask) -> jax.Array:
    """Sum over real rows of the mean token NLL of ``target_tokens: int32[B, L]``."""
    from training.losses import token_log_probs  # training.losses imports nothing from here

    model = nnx.merge(graphdef, state)
    logits = model(history_tokens, history_mask, target_tokens[:, None])[:, 0]  # [B, L, V]
    nll = -token_log_probs(logits, target_tokens).mean(axis=-1)
    return jnp.sum(jnp.where(example_mask, nll, 0.0))


def validation_ce(
    model: nnx.Module,
    data: InteractionData,
    split_arrays: SplitArrays,
    *,
    batch_size: int = 256,
    max_examples: int | None = None,
) -> float:
    """Mean token cross-entropy of the split's targets (teacher forced, no dropout).

    ``mean_n (1/L) sum_j -log p(y_nj | history_n, y_n<j)`` over the first
    ``max_examples`` examples (all by default), in float32; the last batch is
    padded and the padding excluded, so the value does not depend on
    ``batch_size``.
    """
    num_examples = _num_examples(split_arrays, max_examples)
    batch_size = min(batch_size, num_examples)
    item_tokens = data.vocab.codes_to_tokens(data.sid_codes)
    graphdef, state = nnx.split(model)
    batch_sums = []  # device scalars: one host sync at the end, not one per batch
    for start, stop, rows, targets in _padded_batches(split_arrays, num_examples, batch_size):
        tokens, mask = history_tokens(rows, item_tokens)
        real = np.arange(batch_size) < stop - start
        batch_sums.append(_target_nll_sum(graphdef, state, tokens, mask, item_tokens[targets], real))
    return float(sum(float(x) for x in jax.device_get(batch_sums))) / num_examples
