"""Is the first-N slice of the validation users a fair stand-in for all of them?

The Beauty configs selected the checkpoint and stopped early on the first
5,000 of 22,363 validation users (``eval.max_examples=5000``, for speed) until
this script showed that slice to be atypical; they validate on every user
now. A leading slice is only harmless if its users look like the rest. This script compares the first
``--first`` validation examples (leave-one-out order, ``genrec.split``) with
the remaining ones on what the data alone says (items before the validation
target, history kept by the model, training popularity of the target) and,
given ``valid_ranks.npy`` (or ``.npy.gz``) files of runs (each validation user's target rank at
the run's best checkpoint), on the runs' metrics: the mean over runs in each
part, and how unusual the first slice's gap to the rest is among random
slices of the same size (two-sided share of ``--draws`` random slices whose
gap is at least as large: a p-value of "the first slice is a random one").

Run:
    python research/validation_subset.py --data data_local/Beauty --first 5000 \\
        --ranks 'research/results_raw/2026-11-26/valid_ranks/beauty_t5_*'
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
from compare_runs import format_p, load_group, per_user_metric  # noqa: E402
from popularity_buckets import target_popularity  # noqa: E402

DEFAULT_METRICS = "recall@10,ndcg@10"


def data_profile(sequences: Sequence[np.ndarray], max_history: int, sid_codes: np.ndarray) -> dict[str, np.ndarray]:
    """Per validation example (leave-one-out order): ``items_before`` the
    validation target, ``history_kept`` (at most ``max_history``),
    ``target_popularity`` (training examples with the same target item) and
    ``same_first_code`` (1 when the target's first SID code is the last
    history item's: a crude measure of how coherent the sequence is)."""
    # One validation example per user, in user order (genrec.split): target s[-2] after s[-3].
    items_before = np.array([len(seq) - 2 for seq in sequences], np.int64)
    targets = np.array([seq[-2] for seq in sequences])
    last_history_item = np.array([seq[-3] for seq in sequences])
    return {
        "items_before": items_before,
        "history_kept": np.minimum(items_before, max_history),
        "target_popularity": target_popularity(sequences, max_history, split="valid"),
        "same_first_code": (sid_codes[targets, 0] == sid_codes[last_history_item, 0]).astype(np.int64),
    }


LENGTH_EDGES = (1, 4, 6, 9, 13, 21)  # buckets of items before the target: 1-3, 4-5, 6-8, 9-12, 13-20, 21+


def by_length_rows(items_before: np.ndarray, values: np.ndarray,
                   first: int) -> list[tuple[str, int, int, float, float]]:
    """``(bucket, users in the first slice, users in the rest, mean there, mean here)`` per
    bucket of ``items_before`` (LENGTH_EDGES): does the first slice differ at equal history
    length? Buckets empty on either side are left out."""
    in_first = np.arange(values.shape[0]) < first
    edges = (*LENGTH_EDGES, np.inf)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        bucket = (items_before >= low) & (items_before < high)
        label = f"{low}+" if high == np.inf else f"{low}-{int(high) - 1}"
        a, b = bucket & in_first, bucket & ~in_first
        if a.any() and b.any():
            rows.append((label, int(a.sum()), int(b.sum()), float(values[a].mean()), float(values[b].mean())))
    return rows


def slice_gap_test(values: np.ndarray, first: int, *, draws: int, seed: int) -> tuple[float, float]:
    """``(gap, p)``: mean of ``values[:first]`` minus mean of the rest, and the
    two-sided share of random ``first``-sized slices whose gap is at least as
    large in absolute value (the observed slice counted as one of them)."""
    values = np.asarray(values, np.float64)
    n = values.shape[0]
    if not 0 < first < n:
        raise ValueError(f"--first {first} must lie strictly between 0 and the {n} validation examples")
    total = values.sum()

    def gap(first_sum: np.ndarray | float) -> np.ndarray | float:
        return first_sum / first - (total - first_sum) / (n - first)

    observed = float(gap(values[:first].sum()))
    rng = np.random.default_rng(seed)
    sums = np.array([values[rng.choice(n, first, replace=False)].sum() for _ in range(draws)])
    extreme = np.count_nonzero(np.abs(gap(sums)) >= abs(observed) - 1e-12)
    return observed, (1 + extreme) / (1 + draws)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="dataset folder (NAME.inter.json, NAME.index.*.json)")
    p.add_argument("--first", type=int, default=5000, help="size of the leading slice (eval.max_examples)")
    p.add_argument("--ranks", nargs="*", default=[], help="valid_ranks.npy(.gz) files or globs of runs on this data")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help="comma-separated recall@k / ndcg@k")
    p.add_argument("--max-history", type=int, default=20)
    p.add_argument("--draws", type=int, default=2000, help="random slices for the p-value")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from genrec.datasets import load_sid_dataset

    data = load_sid_dataset(args.data)
    n = len(data.sequences)
    if not 0 < args.first < n:
        print(f"validation_subset: --first {args.first} must lie strictly between 0 and the "
              f"{n} validation examples of {args.data}", file=sys.stderr)
        return 2
    profile = data_profile(data.sequences, args.max_history, data.sid_codes)
    rows = list(profile.items())
    paths = sorted({path for pattern in args.ranks for path in (glob.glob(pattern) or [pattern])})
    if paths:
        missing = [path for path in paths if not Path(path).is_file()]
        if missing:
            print(f"validation_subset: no such rank file: {', '.join(missing)}", file=sys.stderr)
            return 2
        try:
            ranks = load_group(paths)  # [runs, users]
        except (ValueError, OSError) as error:  # shapes differ, a run given twice, a corrupt .gz
            print(f"validation_subset: {error}", file=sys.stderr)
            return 2
        if ranks.shape[1] != n:
            print(f"validation_subset: the rank files cover {ranks.shape[1]} users, {args.data} has "
                  f"{n} validation examples (use the valid_ranks of runs on this data)", file=sys.stderr)
            return 2
        metric_rows = [(f"{metric} (mean of {ranks.shape[0]} runs)", per_user_metric(ranks, metric).mean(axis=0))
                       for metric in args.metrics.split(",")]
        rows += metric_rows

    print(f"{args.data.name}: first {args.first} of {n} validation examples vs the other {n - args.first}\n")
    print("| quantity | first slice | rest | all | first - rest | p (random slices) |")
    print("|---|---|---|---|---|---|")
    for name, values in rows:
        values = np.asarray(values, np.float64)
        gap, p_value = slice_gap_test(values, args.first, draws=args.draws, seed=args.seed)
        digits = 4 if "@" in name or name == "same_first_code" else 2
        print(f"| {name} | {values[:args.first].mean():.{digits}f} | {values[args.first:].mean():.{digits}f} | "
              f"{values.mean():.{digits}f} | {gap:+.{digits}f} | {format_p(p_value)} |")
    print(f"\np: two-sided share of {args.draws} random slices of {args.first} examples (seed {args.seed}) "
          f"whose gap to the rest is at least the first slice's, smallest attainable {format_p(1 / (1 + args.draws))}")
    if paths:
        print("runs: " + ", ".join(Path(path).name.split(".")[0] for path in paths))
        metric_name, metric_values = metric_rows[0]
        print(f"\nAt equal history length, {metric_name}:\n")
        print("| items before the target | users (first / rest) | first slice | rest |")
        print("|---|---|---|---|")
        for label, count_first, count_rest, mean_first, mean_rest in by_length_rows(
                profile["items_before"], np.asarray(metric_values, np.float64), args.first):
            print(f"| {label} | {count_first} / {count_rest} | {mean_first:.4f} | {mean_rest:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
