"""Paired comparison of two groups of runs on the same test users.

Every training writes ``workdir/test_ranks.npy``: each test user's 1-based
rank of the target SID in the beam, 0 when it was missed (``genrec eval
--save-ranks FILE`` writes the same for any checkpoint). Two models evaluated
on the same users can then be compared user by user, which is far more
sensitive than comparing seed means: the users' difficulty cancels out.

For every run the per-user metric is computed (``recall@k`` = rank in 1..k;
``ndcg@k`` = 1/log2(rank + 1) there), giving a ``[runs, users]`` matrix per
group (e.g. the CE seeds, the APAO seeds). The reported difference is
mean over users of (mean over B's runs - mean over A's runs). Its 95% interval
and the share of resamples where B <= A come from one of two bootstraps:

``--resample runs+users`` (two-level, hierarchical): each resample draws runs
    with replacement within A and, independently, within B, and draws users
    with replacement (one draw shared by both groups, so still paired over
    users); the statistic is the mean over the drawn users of (mean over B's
    drawn runs - mean over A's drawn runs).
``--resample users``: the runs of each group are averaged first and only the
    users are resampled (the paired bootstrap over users).

Why runs+users is the honest default: the user-only bootstrap treats the
group's runs as fixed, so it answers "would these exact checkpoints differ on
new users?", not "does method B beat method A?". Seed-to-seed variance is
large here: two CE runs differing only in the training seed differ by +15.7%
Recall@10 with a user-only p of about 0.01, i.e. the user-only bootstrap would call
a seed change significant. Resampling runs puts that variance into the
interval. ``--resample auto`` (default) uses runs+users when both groups have
at least 2 runs and otherwise falls back to users, with a note on stderr that
seed variance is then not included.

Caveat: the run level only sees the spread of seeds *within* each group. With
few runs (2-3 per group) it is resampled coarsely (a bootstrap over R runs
also shrinks their variance by (R - 1)/R), and when a group's seeds happen to
agree it sees little variance at all: the 4 Office CE runs split 2 vs 2 (s4 +
vce_s1 vs s5 + vce_s2, CE on both sides) still give B - A = +13.3%
Recall@10 with P(B <= A) = 0.009 under runs+users (0.002 under users). Read
the interval as a lower bound on the real uncertainty, and prefer 5+ runs per
group before calling a difference real.

Run:
    python benchmarks/compare_runs.py --a runs/office_t5_ce_s*/test_ranks.npy --b runs/office_t5_apao_s*/test_ranks.npy
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

DEFAULT_METRICS = "recall@10,recall@20,ndcg@10,ndcg@20"
RESAMPLE_MODES = ("auto", "users", "runs+users")
_CHUNK_ELEMENTS = 1 << 22  # resamples x users drawn at a time (bounds memory to a few x 32 MiB)
_MODE_TEXT = {"runs+users": "runs within each group and users (paired), seed variance included",
              "users": "users only (paired, runs averaged per group), seed variance NOT included"}


def per_user_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """``float64`` contribution of each user to ``metric`` ("recall@k" or "ndcg@k"), same shape as ``ranks``."""
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


def resolve_resample(mode: str, runs_a: int, runs_b: int) -> str:
    """The bootstrap actually used: ``auto`` is ``runs+users`` when both groups have >= 2 runs, else ``users``."""
    if mode not in RESAMPLE_MODES:
        raise ValueError(f"resample {mode!r}: expected one of {', '.join(RESAMPLE_MODES)}")
    if mode == "auto":
        return "runs+users" if min(runs_a, runs_b) >= 2 else "users"
    return mode


def _user_draw_counts(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``float64[size, n]``: how often each user is drawn in each of ``size`` resamples of ``n`` users."""
    rows = rng.integers(0, n, size=(size, n))
    rows += (np.arange(size) * n)[:, None]
    return np.bincount(rows.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def paired_bootstrap_many(pairs: Sequence[tuple[np.ndarray, np.ndarray]], *, num_resamples: int, seed: int,
                          resample: str = "users") -> list[dict[str, float | str]]:
    """:func:`paired_bootstrap` of several ``(a, b)`` pairs (e.g. one per metric) over the same runs and users.

    Every resample's run and user draws are shared by all pairs, so they are drawn once (the cost
    of the bootstrap) and each pair's result equals ``paired_bootstrap(a, b, ...)`` with the same seed.
    """
    groups = []
    for a, b in pairs:
        a = np.atleast_2d(np.asarray(a, np.float64))
        b = np.atleast_2d(np.asarray(b, np.float64))
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] == 0:
            raise ValueError(f"groups must be [runs, users] over the same users, got {a.shape} and {b.shape}")
        groups.append((a, b))
    if not groups:
        return []
    if len({(a.shape, b.shape) for a, b in groups}) != 1:
        raise ValueError("every pair must cover the same runs and users")
    runs_a, runs_b, n = groups[0][0].shape[0], groups[0][1].shape[0], groups[0][0].shape[1]
    resample = resolve_resample(resample, runs_a, runs_b)
    user_rng, run_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    if resample == "users":
        # Run weights fixed at 1/R: each pair collapses to the per-user difference of the group means.
        rows = np.stack([b.mean(axis=0) - a.mean(axis=0) for a, b in groups])  # [pairs, users]
        weights = np.ones((num_resamples, 1))
    else:
        rows = np.concatenate([np.concatenate([-a, b]) for a, b in groups])  # [pairs * (runs_a + runs_b), users]
        weights = np.concatenate(  # [resamples, runs_a + runs_b]; the weighted row sum gives B - A
            [run_rng.multinomial(runs_a, np.full(runs_a, 1.0 / runs_a), size=num_resamples) / runs_a,
             run_rng.multinomial(runs_b, np.full(runs_b, 1.0 / runs_b), size=num_resamples) / runs_b], axis=1)
    means = np.empty((len(groups), num_resamples))
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, num_resamples, chunk):
        stop = min(start + chunk, num_resamples)
        sums = _user_draw_counts(user_rng, stop - start, n) @ rows.T  # [chunk, rows]: each row summed over drawn users
        sums = sums.reshape(stop - start, len(groups), -1)
        means[:, start:stop] = np.einsum("spr,sr->ps", sums, weights[start:stop]) / n
    results = []
    for (a, b), pair_means in zip(groups, means):
        low, high = np.quantile(pair_means, [0.025, 0.975])
        mean_a, mean_b = float(a.mean()), float(b.mean())  # every run covers the same users
        results.append({"mean_a": mean_a, "mean_b": mean_b, "diff": mean_b - mean_a,
                        "low": float(low), "high": float(high),
                        "p_b_not_better": float(np.mean(pair_means <= 0.0)), "resample": resample})
    return results


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, num_resamples: int, seed: int,
                     resample: str = "users") -> dict[str, float | str]:
    """Mean of ``b - a`` over users, its 95% bootstrap interval and P(resampled mean <= 0).

    ``a``, ``b``: per-user values of the two groups, ``float[users]`` (one run) or
    ``float[runs, users]`` (one row per run; the two groups may have different run counts).
    ``resample``: ``"users"`` averages each group's runs and resamples users only;
    ``"runs+users"`` also resamples runs with replacement within each group, independently
    (``"auto"`` picks as :func:`resolve_resample`). The user draws come from their own stream
    of ``seed``, so both modes see the same user draws and differ only by the run draws.
    Also returns ``"resample"``, the mode used.
    """
    return paired_bootstrap_many([(a, b)], num_resamples=num_resamples, seed=seed, resample=resample)[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="+", required=True, help="test_ranks.npy files of group A (e.g. CE seeds)")
    parser.add_argument("--b", nargs="+", required=True, help="test_ranks.npy files of group B")
    parser.add_argument("--metrics", default=DEFAULT_METRICS)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--resample", choices=RESAMPLE_MODES, default="auto",
                        help="what the bootstrap resamples: runs+users (default when both groups have >= 2 runs) "
                             "or users only (default otherwise; ignores seed-to-seed variance)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        group_a, group_b = load_group(args.a), load_group(args.b)
        if group_a.shape[1] != group_b.shape[1]:
            raise ValueError(f"group A covers {group_a.shape[1]} users, group B {group_b.shape[1]}")
        runs_a, runs_b = len(group_a), len(group_b)
        resample = resolve_resample(args.resample, runs_a, runs_b)
        if resample == "users" and min(runs_a, runs_b) >= 2:
            print("compare_runs: note: --resample users keeps each group's runs fixed; the interval and "
                  "P(B <= A) do not include seed-to-seed variance", file=sys.stderr)
        elif resample == "users":
            print(f"compare_runs: note: {'auto falls back to' if args.resample == 'auto' else 'using'} "
                  f"--resample users (A has {runs_a} run(s), B {runs_b}; runs+users needs >= 2 per group): "
                  "seed-to-seed variance is NOT included in the interval or P(B <= A)", file=sys.stderr)
        elif min(runs_a, runs_b) < 2:
            print("compare_runs: note: a group with a single run contributes no seed variance to runs+users",
                  file=sys.stderr)
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        pairs = [(per_user_metric(group_a, m), per_user_metric(group_b, m)) for m in metrics]  # [runs, users]
        rows = list(zip(metrics, paired_bootstrap_many(pairs, num_resamples=args.resamples, seed=args.seed,
                                                       resample=resample)))
    except (ValueError, OSError) as error:
        print(f"compare_runs: {error}", file=sys.stderr)
        return 2
    print(f"A: {runs_a} run(s), B: {runs_b} run(s), {group_a.shape[1]} users, "
          f"paired bootstrap, resampling: {resample} ({_MODE_TEXT[resample]}; {args.resamples} resamples)")
    print("| metric | A | B | B - A | 95% interval | relative | P(B <= A) |")
    print("|---|---|---|---|---|---|---|")
    for metric, r in rows:
        relative = r["diff"] / r["mean_a"] if r["mean_a"] else float("nan")
        print(f"| {metric} | {r['mean_a']:.4f} | {r['mean_b']:.4f} | {r['diff']:+.4f} | "
              f"[{r['low']:+.4f}, {r['high']:+.4f}] | {relative:+.1%} | {r['p_b_not_better']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
