"""Ranking metric math (pure NumPy): where the target sits in a beam, and Recall@k / NDCG@k.

Where it sits: decode -> **metrics**; ``training/evaluate.py`` and
``training/diagnostics.py`` score beams with it. One relevant item per example,
so IDCG = 1 (protocol: ``training/evaluate.py``'s module docstring).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hit_ranks", "ranking_metrics"]


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
