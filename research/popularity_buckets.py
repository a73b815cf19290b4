"""Where two groups of runs differ: test metrics by how popular each test
user's target item is.

An aggregate Recall@10 can hide a trade: a method may find more long-tail
targets and fewer popular ones. This script splits the test users by the
popularity of their target (how many training examples of the leave-one-out
split have that item as their target) at the given percentiles, and for each
bucket prints both groups' mean metric over their runs (± sd over runs) and
the p-value of compare_runs.py's permutation test over run labels (small when
B beats A in that bucket; seeds are the unit).

Each group is a set of ``test_ranks.npy`` files (one per run, written by
``training.train`` or ``genrec eval --save-ranks``; or their ``.npy.gz`` copies,
as collect_results.py stores them) of the same dataset, split
and users, in the order ``genrec.split.leave_one_out_split`` gives them. With
``--prefix-ranks`` the files are ``genrec eval --diagnose --save-prefix-ranks``
outputs (``int[levels, users]``) and the metrics are ``prefix_in_beam@t``: the
share of users whose target's length-``t`` prefix is still among the beams
after level ``t`` (does a method keep long-tail targets alive longer?).

Run:
    python research/popularity_buckets.py --data data_local/Office \\
        --a 'research/results_raw/2026-11-26/ranks/office_t5_ce_s*' \\
        --b 'research/results_raw/2026-11-26/ranks/office_t5_apao_s*'
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# compare_runs.py sits beside this script; research/ is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_runs import load_group, per_user_metric, run_permutation_test  # noqa: E402
from summarize_results import mean_sd  # noqa: E402

DEFAULT_METRICS = "recall@10,ndcg@10"
DEFAULT_PERCENTILES = "50,90"


def target_popularity(sequences: Sequence[np.ndarray], max_history: int = 20, split: str = "test") -> np.ndarray:
    """``int64[num_users]``: for each example of ``split`` ("test" or "valid"), how many
    training examples have its target item as their target (leave-one-out split of
    ``sequences``)."""
    from genrec.split import leave_one_out_split  # the project's split, so the order matches the ranks

    if split not in ("test", "valid"):
        raise ValueError(f"split {split!r}: expected 'test' or 'valid'")
    parts = leave_one_out_split(sequences, max_history)
    num_items = int(max(seq.max() for seq in sequences)) + 1
    counts = np.bincount(parts.train.targets, minlength=num_items)
    return counts[getattr(parts, split).targets].astype(np.int64)


def bucket_masks(popularity: np.ndarray, percentiles: Sequence[float]) -> list[tuple[str, np.ndarray]]:
    """``[(label, bool[users])]``: users whose target's popularity lies in each
    interval between consecutive percentile thresholds (upper bound included),
    then all users. Labels give the count range, e.g. ``"14-51"``."""
    if len(popularity) == 0:
        raise ValueError("no test users")
    if any(not 0 < p < 100 for p in percentiles) or list(percentiles) != sorted(set(percentiles)):
        raise ValueError(f"percentiles must be increasing and inside (0, 100), got {list(percentiles)}")
    thresholds = np.percentile(popularity, percentiles)
    edges = [-np.inf, *thresholds, np.inf]
    buckets = []
    for low, high in zip(edges[:-1], edges[1:]):
        mask = (popularity > low) & (popularity <= high)
        if not mask.any():
            continue
        values = popularity[mask]
        buckets.append((f"{values.min()}-{values.max()}", mask))
    buckets.append(("all", np.ones_like(popularity, dtype=bool)))
    return buckets


def bucket_table(ranks_a: np.ndarray, ranks_b: np.ndarray, popularity: np.ndarray, metric: str,
                 percentiles: Sequence[float], seed: int = 0) -> list[dict]:
    """One row per bucket: users, popularity range, each group's mean and sd over runs
    of the bucket's mean ``metric``, B - A relative, and the run-label permutation p."""
    return bucket_table_values(per_user_metric(ranks_a, metric), per_user_metric(ranks_b, metric),
                               popularity, percentiles, seed)


def bucket_table_values(per_user_a: np.ndarray, per_user_b: np.ndarray, popularity: np.ndarray,
                        percentiles: Sequence[float], seed: int = 0) -> list[dict]:
    """:func:`bucket_table` on per-user values ``float[runs, users]`` of any metric."""
    if per_user_a.shape[1] != len(popularity) or per_user_b.shape[1] != len(popularity):
        raise ValueError(f"ranks cover {per_user_a.shape[1]} / {per_user_b.shape[1]} users, "
                         f"the data's test split {len(popularity)}")
    rows = []
    for label, mask in bucket_masks(popularity, percentiles):
        run_a, run_b = per_user_a[:, mask].mean(axis=1), per_user_b[:, mask].mean(axis=1)  # [runs]
        perm = (run_permutation_test(run_a, run_b, seed=seed)
                if min(len(run_a), len(run_b)) >= 2 else None)
        rows.append({"bucket": label, "users": int(mask.sum()), "a": run_a, "b": run_b,
                     "relative": run_b.mean() / run_a.mean() - 1 if run_a.mean() else float("nan"),
                     "p": None if perm is None else perm["p"],
                     "min_p": None if perm is None else perm["min_p"]})
    return rows


def survival_values(prefix_ranks: np.ndarray, metric: str) -> np.ndarray:
    """``float[runs, users]``: 1 where the target's length-``t`` prefix survived level ``t``
    (``metric`` = ``prefix_in_beam@t``), from ``int[runs, levels, users]`` prefix ranks."""
    name, _, level = metric.partition("@")
    if name != "prefix_in_beam" or not level.isdigit() or not 1 <= int(level) <= prefix_ranks.shape[1]:
        raise ValueError(f"metric {metric!r}: with --prefix-ranks use prefix_in_beam@t, "
                         f"t in 1..{prefix_ranks.shape[1]}")
    return (prefix_ranks[:, int(level) - 1] > 0).astype(np.float64)


def _paths(patterns: Sequence[str]) -> list[str]:
    paths = sorted({p for pattern in patterns
                    for p in (glob.glob(pattern) or glob.glob(pattern + "*.npy") or glob.glob(pattern + "*.npy.gz"))})
    if not paths:
        raise ValueError(f"no file matches {list(patterns)}")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset directory (NAME.inter.json + NAME.index.*.json)")
    parser.add_argument("--a", nargs="+", required=True, help="test_ranks.npy(.gz) files or globs of group A")
    parser.add_argument("--b", nargs="+", required=True, help="test_ranks.npy(.gz) files or globs of group B")
    parser.add_argument("--metrics", default=None,
                        help=f"default {DEFAULT_METRICS}; with --prefix-ranks, prefix_in_beam@1,..,@levels")
    parser.add_argument("--prefix-ranks", action="store_true",
                        help="the files are --save-prefix-ranks outputs: compare prefix survival per level")
    parser.add_argument("--percentiles", default=DEFAULT_PERCENTILES,
                        help="bucket edges, percentiles of the targets' training counts")
    parser.add_argument("--max-history", type=int, default=20, help="as in the runs' data config")
    parser.add_argument("--split", choices=("test", "valid"), default="test",
                        help="the split the rank files cover (valid: genrec eval --split valid --save-ranks; "
                             "files of the first N users, as --max-examples evaluates, are accepted)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        from genrec.datasets import load_sid_dataset

        if args.prefix_ranks and args.split != "test":
            raise ValueError("--prefix-ranks files cover the test split (genrec eval --split test --diagnose)")
        paths_a, paths_b = _paths(args.a), _paths(args.b)
        group_a = load_group(paths_a, prefix_ranks=args.prefix_ranks)  # [runs, (levels,) users]
        group_b = load_group(paths_b, prefix_ranks=args.prefix_ranks)
        data = load_sid_dataset(args.data)
        popularity = target_popularity(data.sequences, args.max_history, args.split)
        num_users = group_a.shape[-1]
        if args.split == "valid" and num_users < len(popularity):
            # genrec eval --max-examples N evaluates the first N validation users.
            print(f"popularity_buckets: note: the rank files cover the first {num_users} of "
                  f"{len(popularity)} validation users", file=sys.stderr)
            popularity = popularity[:num_users]
        percentiles = [float(p) for p in args.percentiles.split(",") if p.strip()]
        if args.prefix_ranks:
            metrics = args.metrics or ",".join(f"prefix_in_beam@{t}" for t in range(1, group_a.shape[1] + 1))
            tables = {m: bucket_table_values(survival_values(group_a, m), survival_values(group_b, m),
                                             popularity, percentiles, args.seed)
                      for m in (m.strip() for m in metrics.split(",")) if m}
        else:
            tables = {m: bucket_table(group_a, group_b, popularity, m, percentiles, args.seed)
                      for m in (m.strip() for m in (args.metrics or DEFAULT_METRICS).split(",")) if m}
        if not tables:
            raise ValueError(f"no metric in --metrics {args.metrics!r}")
    except (ValueError, OSError) as error:
        print(f"popularity_buckets: {error}", file=sys.stderr)
        return 2
    print(f"A: {len(paths_a)} run(s), B: {len(paths_b)} run(s), {len(popularity)} {args.split} users of {args.data}; "
          f"buckets by the target's count as a training target, at percentiles {args.percentiles}")
    for metric, rows in tables.items():
        print()
        print(f"| {metric} | users | A (mean ± sd over runs) | B | B vs A | perm. p (runs) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            p = "n/a" if r["p"] is None else f"{r['p']:.3f}"
            print(f"| {r['bucket']} | {r['users']} | {mean_sd(list(r['a']))} | {mean_sd(list(r['b']))} | "
                  f"{r['relative']:+.1%} | {p} |")
    first = next(iter(tables.values()))[0]
    if first["min_p"] is not None:
        print(f"\nperm. p: share of the reassignments of run labels with B - A >= observed in that bucket "
              f"(smallest attainable {first['min_p']:.3f}); one test per bucket and metric, not corrected "
              f"for multiplicity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
