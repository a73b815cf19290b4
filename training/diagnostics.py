"""Where a constrained evaluation loses the target: probes that ``evaluate_split`` runs per batch.

Where it sits: checkpoint -> index -> decode -> metrics -> **diagnostics**
(``genrec eval --diagnose``, ``training.evaluate.evaluate_split(diagnose_...=True)``).

* :class:`UnconstrainedValidity`: a free beam search (no trie) beside the
  constrained one; ``unconstrained_valid_fraction`` is the share of its
  ``n * num_beams`` generated SIDs that exist in the catalogue.
* :class:`PrefixSurvival`: per SID level ``t``, whether the target's
  length-``t`` prefix is among the ``num_beams`` beams kept after level ``t``
  (``prefix_in_beam@t``, what APAO's prefix losses try to raise; docs/losses.md).
  A search over the trie of length-``t`` prefixes keeps exactly the beams the
  full search holds after level ``t`` (same candidates, scores and selection
  rule), so it costs one extra ``t``-level search per ``t < L``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx

from constrained.beam_search import unconstrained_beam_search
from constrained.decode import decode_batch
from constrained.index import TrieIndex, build_index
from genrec.datasets import InteractionData
from genrec.vocab import BOS_ID, SIDVocabulary
from training.ranking import hit_ranks

__all__ = ["PrefixSurvival", "UnconstrainedValidity", "catalogue_membership", "prefix_indexes"]


def prefix_indexes(sid_codes: np.ndarray, vocab: SIDVocabulary) -> list[TrieIndex]:
    """Tries over the catalogue's distinct length-``t`` prefixes, ``t = 1 .. L-1``."""
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


def catalogue_membership(sid_codes: np.ndarray, codebook_sizes: Sequence[int]) -> Callable[[np.ndarray], np.ndarray]:
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


@functools.partial(jax.jit, static_argnames=("graphdef", "num_beams", "codebook_sizes", "token_offsets"))
def _unconstrained_decode(
    graphdef, state, history_tokens, history_mask, *, num_beams, codebook_sizes, token_offsets
) -> jax.Array:
    """Free beam search (no trie): ``int32[B, num_beams, L]`` codes."""
    model = nnx.merge(graphdef, state)
    shared = model.encode(history_tokens, history_mask)
    beam_cache = model.init_beam_cache(shared, num_beams)
    codes, _ = unconstrained_beam_search(
        model.decode_step, shared, beam_cache, num_beams=num_beams, start_token=BOS_ID,
        num_levels=len(codebook_sizes), codebook_sizes=codebook_sizes, token_offsets=token_offsets,
    )
    return codes


class UnconstrainedValidity:
    """Counts how many SIDs a free beam search generates that are catalogue items.

    Args:
      data: the catalogue (SID codes and token layout).
      num_beams: beam width of the free search.
    """

    def __init__(self, data: InteractionData, num_beams: int):
        self.num_beams = num_beams
        self._contains = catalogue_membership(data.sid_codes, data.vocab.codebook_sizes)
        self._codebook_sizes = tuple(int(s) for s in data.vocab.codebook_sizes)
        self._token_offsets = tuple(int(o) for o in data.vocab.level_offsets)
        self._num_in_catalogue = 0
        self._num_examples = 0

    def add_batch(self, graphdef: nnx.GraphDef, state: nnx.State, tokens: np.ndarray, mask: np.ndarray,
                  num_real: int) -> None:
        """Decodes one padded batch (``tokens, mask: [B, H*L]``); its first ``num_real`` rows count."""
        free_codes = _unconstrained_decode(graphdef, state, tokens, mask, num_beams=self.num_beams,
                                           codebook_sizes=self._codebook_sizes, token_offsets=self._token_offsets)
        self._num_in_catalogue += int(self._contains(np.asarray(free_codes)[:num_real]).sum())
        self._num_examples += num_real

    def metrics(self) -> dict[str, float]:
        """``{"unconstrained_valid_fraction": share of generated SIDs that are items}``."""
        return {"unconstrained_valid_fraction": self._num_in_catalogue / float(self._num_examples * self.num_beams)}


class PrefixSurvival:
    """Ranks of each example's target prefixes among the beams after each level.

    Args:
      data: the catalogue (SID codes and token layout).
      num_examples: examples of the evaluation (rows of :attr:`prefix_ranks`).
      num_beams, normalization: those of the evaluated search.
    """

    def __init__(self, data: InteractionData, num_examples: int, num_beams: int, normalization: str):
        self.num_beams = num_beams
        self.normalization = normalization
        self._indexes = [index.to_device() for index in prefix_indexes(data.sid_codes, data.vocab)]
        # int32[L-1, n]: rank of the target's length-t prefix after level t (0 = pruned).
        self._ranks = np.zeros((len(self._indexes), num_examples), np.int32)

    def add_batch(self, graphdef: nnx.GraphDef, state: nnx.State, tokens: np.ndarray, mask: np.ndarray,
                  start: int, stop: int, target_codes: np.ndarray) -> None:
        """Decodes examples ``start:stop`` (padded batch ``tokens, mask``; ``target_codes: int[stop-start, L]``)."""
        for level, index in enumerate(self._indexes):
            output = decode_batch(graphdef, state, index, tokens, mask, num_beams=self.num_beams,
                                  normalization=self.normalization)
            self._ranks[level, start:stop] = hit_ranks(
                np.asarray(output.sid_codes)[: stop - start],
                np.asarray(output.valid)[: stop - start],
                target_codes[:, : level + 1],
            )

    def prefix_ranks(self, final_ranks: np.ndarray) -> np.ndarray:
        """``int32[L, n]``: row ``t-1`` the rank of the length-``t`` prefix, the last row ``final_ranks``."""
        return np.concatenate([self._ranks, np.asarray(final_ranks, np.int32)[None]])

    def metrics(self, final_ranks: np.ndarray) -> dict[str, float]:
        """``{"prefix_in_beam@t": share of examples whose length-t prefix survived level t}``, ``t = 1..L``."""
        ranks = self.prefix_ranks(final_ranks)
        return {f"prefix_in_beam@{level + 1}": float(np.mean(ranks[level] > 0)) for level in range(ranks.shape[0])}
