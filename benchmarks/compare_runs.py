"""Paired comparison of two groups of runs on the same test users.

Every training writes ``workdir/test_ranks.npy``: each test user's 1-based
rank of the target SID in the beam, 0 when it was missed (``genrec eval
--save-ranks FILE`` writes the same for any checkpoint). Two models evaluated
on the same users can then be compared user by user, which is far more
sensitive than comparing seed means: the users' difficulty cancels out.

For each group (e.g. the CE seeds, the APAO seeds) the per-user metric
(``recall@k`` = rank in 1..k; ``ndcg@k`` = 1/log2(rank + 1) there) is averaged
over the group's runs; the difference B - A is then averaged over users, with
a paired bootstrap over users (resampling users, the same draw for both
groups) for a 95% interval and the share of resamples where B <= A.

Run:
    python benchmarks/compare_runs.py --a runs/office_t5_ce_s*/test_ranks.npy --b runs/office_t5_apao_s*/test_ranks.npy
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

DEFAULT_METRICS = "recall@10,recall@20,ndcg@10,ndcg@20"


def per_user_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """``float64[n]`` contribution of each user to ``metric`` ("recall@k" or "ndcg@k")."""
    name, _, k = metric.partition("@")
    if name not in ("recall", "ndcg") or not k.isdigit():
        raise ValueError(f"metric {metric!r}: expected recall@k or ndcg@k")
    ranks = np.asarray(ranks, np.int64)
    hit = (ranks >= 1) & (ranks <= int(k))
    if name == "recall":
        return hit.astype(np.float64)
    return np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)


def load_group(paths: Sequence[str]) -> np.ndarray:
    """``int[runs, users]`` ranks of one group; every file must cover the same users."""
    if not paths:
        raise ValueError("a group needs at least one test_ranks.npy file")
    arrays = [np.load(path) for path in paths]
    lengths = {a.shape for a in arrays}
    if len(lengths) != 1 or arrays[0].ndim != 1:
        raise ValueError(f"rank files differ in shape ({sorted(lengths)}); compare runs on the same test split")
    return np.stack(arrays)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, num_resamples: int, seed: int) -> dict[str, float]:
    """Mean of ``b - a`` over users, its 95% bootstrap interval and P(resampled mean <= 0).

    ``a``, ``b``: ``float[users]`` per-user values of the two groups.
    """
    diff = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    rng = np.random.default_rng(seed)
    n = diff.shape[0]
    means = np.empty(num_resamples)
    for start in range(0, num_resamples, 1000):  # bounded memory: 1000 resamples x n at a time
        stop = min(start + 1000, num_resamples)
        rows = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[rows].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {"mean_a": float(np.mean(a)), "mean_b": float(np.mean(b)), "diff": float(diff.mean()),
            "low": float(low), "high": float(high), "p_b_not_better": float(np.mean(means <= 0.0))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="+", required=True, help="test_ranks.npy files of group A (e.g. CE seeds)")
    parser.add_argument("--b", nargs="+", required=True, help="test_ranks.npy files of group B")
    parser.add_argument("--metrics", default=DEFAULT_METRICS)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        group_a, group_b = load_group(args.a), load_group(args.b)
        if group_a.shape[1] != group_b.shape[1]:
            raise ValueError(f"group A covers {group_a.shape[1]} users, group B {group_b.shape[1]}")
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        rows = []
        for metric in metrics:
            a = np.mean([per_user_metric(r, metric) for r in group_a], axis=0)
            b = np.mean([per_user_metric(r, metric) for r in group_b], axis=0)
            rows.append((metric, paired_bootstrap(a, b, num_resamples=args.resamples, seed=args.seed)))
    except (ValueError, OSError) as error:
        print(f"compare_runs: {error}", file=sys.stderr)
        return 2
    print(f"A: {len(group_a)} run(s), B: {len(group_b)} run(s), {group_a.shape[1]} users, "
          f"paired bootstrap over users ({args.resamples} resamples)")
    print("| metric | A | B | B - A | 95% interval | relative | P(B <= A) |")
    print("|---|---|---|---|---|---|---|")
    for metric, r in rows:
        relative = r["diff"] / r["mean_a"] if r["mean_a"] else float("nan")
        print(f"| {metric} | {r['mean_a']:.4f} | {r['mean_b']:.4f} | {r['diff']:+.4f} | "
              f"[{r['low']:+.4f}, {r['high']:+.4f}] | {relative:+.1%} | {r['p_b_not_better']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
