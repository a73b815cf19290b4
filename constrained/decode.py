"""Model + index -> items: the one jitted decode entry point of genrec.

Where it sits: checkpoint -> **index -> decode** -> serve / evaluate.
:func:`build_eval_index` builds the trie over a catalogue's *distinct* SIDs,
:func:`history_tokens` turns item-row histories into the model's tokens, and
:func:`decode_batch` runs encode + constrained beam search in one compiled
call. ``serving.recommender.Recommender`` and ``training.evaluate`` both decode
through it, so serving and evaluation rank items the same way.

**Colliding SIDs.** A few items can share a SID (Office has 5 shared SIDs
covering 10 items, Beauty 11 covering 23). The index holds every distinct SID
once, so each SID occupies at most one beam slot; its leaves are distinct-SID
rows, and ``sid_row_of_item`` maps item rows to them. Evaluation scores hits at
SID level and serving picks one item per SID (docs/serving.md).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Literal

import jax
import numpy as np
from flax import nnx

from constrained.beam_search import BeamSearchOutput, constrained_beam_search
from constrained.index import TrieIndex, build_index
from genrec.vocab import BOS_ID, PAD_ID, SIDVocabulary

__all__ = ["MATMUL_PRECISIONS", "MatmulPrecision", "build_eval_index", "check_matmul_precision", "decode_batch",
           "history_tokens", "matmul_precision_scope"]

MatmulPrecision = Literal["default", "high", "highest"]
# Float32 matmul precisions a decode can run at (matmul_precision_scope).
MATMUL_PRECISIONS: tuple[MatmulPrecision, ...] = ("default", "high", "highest")


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
    allow_rows: jax.Array | None = None,
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
      graphdef, state: ``nnx.split(model)`` of a genrec model (``encode`` /
        ``init_beam_cache`` / ``decode_step``, docs/models.md).
      index: ``TrieIndex.to_device()``.
      history_tokens: ``int32[B, H*L]``; history_mask: ``bool[B, H*L]`` (:func:`history_tokens`).
      allow_mask: optional ``bool[B, num_index_items]`` over index item rows.
      exclude_rows: optional ``int32[B, E]`` index item rows to drop, -1 padding.
      allow_rows: optional ``int32[B, A]`` the only index item rows allowed, -1
        padding; an all-padding row leaves its request unconstrained. List
        widths, not the catalogue size, fix these two shapes.
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
        allow_mask=allow_mask, exclude_rows=exclude_rows, allow_rows=allow_rows, normalization=normalization,
    )


def check_matmul_precision(precision: str) -> None:
    """Refuses a float32 matmul precision other than those of :data:`MATMUL_PRECISIONS`, in one line."""
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul_precision={precision!r}; use one of {', '.join(map(repr, MATMUL_PRECISIONS))}")


def matmul_precision_scope(precision: MatmulPrecision) -> contextlib.AbstractContextManager:
    """The context to call :func:`decode_batch` in for a float32 matmul ``precision``.

    ``"default"`` enters nothing: JAX's own setting stays (TF32 on recent GPUs,
    one bfloat16 pass on TPUs; fastest). ``"high"`` (bfloat16 x3 on TPUs, TF32
    on GPUs) and ``"highest"`` (full float32: a request's result no longer
    depends on the other rows of its batch) set ``jax.default_matmul_precision``,
    which the jit cache keys on: one compile per precision. CPUs compute float32
    at every level. docs/serving.md, "Reproducibility on GPUs", has the measurement.
    """
    check_matmul_precision(precision)
    return contextlib.nullcontext() if precision == "default" else jax.default_matmul_precision(precision)
