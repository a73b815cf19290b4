"""Paired comparison of two groups of runs on the same test users.

Every training writes ``workdir/test_ranks.npy``: each test user's 1-based
rank of the target SID in the beam, 0 when it was missed (``genrec eval
--save-ranks FILE`` writes the same for any checkpoint; collect_results.py
stores them as ``.npy.gz``, read alike). Two models evaluated
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

The permutation test over run labels (column ``perm. p (runs)``, shown when
both groups have >= 2 runs) treats the runs, i.e. the seeds, as the unit of
replication. Each run is summarised by its run-level metric (mean over users);
the statistic is mean over B's runs - mean over A's runs. Under "the method
makes no difference" the labels A/B are exchangeable, so every one of the
C(nA + nB, nB) ways to split the runs into groups of the same sizes is equally
likely; the p-value is the share of those splits (the observed one included)
whose statistic is >= the observed one: one-sided, small when B beats A, like
``P(B <= A)``. It is exact (all splits enumerated) up to 20,000 splits, beyond
that it uses 20,000 random splits from ``--seed`` (p = (1 + hits) / (1 +
20,000)) and says so. It needs no model of the seed variance (the spread of all
runs, pooled, is the reference) and none of the users, but it is coarse: the
smallest attainable p is 1 / C(nA + nB, nB) (2 vs 2 runs: 1/6 = 0.167; 3 vs
3: 1/20 = 0.05; 5 vs 5: 1/252 = 0.004), printed under the table. This is the
test to trust for a method comparison when seed variance dominates (it does
here); the bootstrap intervals describe the size of the difference, not
whether it is real. The CE 2 vs 2 split above gets perm. p = 0.167 on every
metric: both B runs beat both A runs, which a seed shuffle does 1 time in 6,
far from the runs+users bootstrap's 0.009. With 2 runs per group no split can
be significant; use 4+ vs 4+ (1/70 = 0.014) to be able to reach p < 0.05 with
room to spare.

Run:
    python research/compare_runs.py --a runs/office_t5_ce_s*/test_ranks.npy --b runs/office_t5_apao_s*/test_ranks.npy
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# raw_files.py sits beside this script; research/ is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from raw_files import check_unique, load_array  # noqa: E402

DEFAULT_METRICS = "recall@10,recall@20,ndcg@10,ndcg@20"
RESAMPLE_MODES = ("auto", "users", "runs+users")
MAX_REASSIGNMENTS = 20_000  # beyond this many splits of the runs, the permutation test samples them at random
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


def load_group(paths: Sequence[str], *, prefix_ranks: bool = False) -> np.ndarray:
    """``int[runs, users]`` ranks of one group (``.npy`` or ``.npy.gz`` files); every file must
    cover the same users, and no run may be given twice (plain and compressed).

    ``prefix_ranks=True``: the files are ``genrec eval --save-prefix-ranks`` outputs,
    ``int[levels, users]`` each, and the result is ``int[runs, levels, users]``.
    """
    if not paths:
        raise ValueError("a group needs at least one rank file")
    check_unique(paths)
    arrays = [load_array(path) for path in paths]
    for path, array in zip(paths, arrays):
        if prefix_ranks and array.ndim != 2:
            raise ValueError(f"{path}: expected int[levels, users] prefix ranks, got shape {array.shape}")
        if not prefix_ranks and array.ndim != 1:
            raise ValueError(f"{path}: expected int[users] test ranks, got shape {array.shape} "
                             "(prefix ranks are int[levels, users]: popularity_buckets.py --prefix-ranks)")
    lengths = {a.shape for a in arrays}
    if len(lengths) != 1:
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


def run_permutation_test_many(pairs: Sequence[tuple[np.ndarray, np.ndarray]], *,
                              max_reassignments: int = MAX_REASSIGNMENTS,
                              seed: int = 0) -> list[dict[str, float | int | bool]]:
    """:func:`run_permutation_test` of several ``(a, b)`` pairs (e.g. one per metric) over the same runs.

    All pairs see the same reassignments of the run labels, so each result equals
    ``run_permutation_test(a, b, ...)`` with the same ``max_reassignments`` and ``seed``.
    """
    groups = []
    for a, b in pairs:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.ndim != b.ndim or a.ndim not in (1, 2) or (a.ndim == 2 and a.shape[1] != b.shape[1]):
            raise ValueError(f"groups must be [runs] or [runs, users] over the same users, got {a.shape} and {b.shape}")
        if a.ndim == 2:  # run-level metric: mean over users
            a, b = a.mean(axis=1), b.mean(axis=1)
        groups.append((a, b))
    if not groups:
        return []
    if len({(a.shape, b.shape) for a, b in groups}) != 1:
        raise ValueError("every pair must cover the same runs")
    runs_a, runs_b = len(groups[0][0]), len(groups[0][1])
    if runs_a < 1 or runs_b < 1:
        raise ValueError(f"each group needs at least one run, got {runs_a} and {runs_b}")
    if max_reassignments < 1:
        raise ValueError(f"max_reassignments must be >= 1, got {max_reassignments}")
    total = runs_a + runs_b
    count = math.comb(total, runs_b)
    exact = count <= max_reassignments
    if exact:  # every split; B takes the runs at these indices of [A's runs, B's runs], A the rest
        b_index = np.array(list(itertools.combinations(range(total), runs_b)), dtype=np.int64)
    else:  # random splits (first runs_b of a random permutation go to B); the observed one is added below
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])  # not the bootstrap's streams
        order = rng.permuted(np.tile(np.arange(total), (max_reassignments, 1)), axis=1)
        b_index = order[:, :runs_b]
    values = np.stack([np.concatenate([a, b]) for a, b in groups])  # [pairs, runs_a + runs_b]
    totals = values.sum(axis=1, keepdims=True)
    b_sums = values[:, b_index].sum(axis=2)  # [pairs, reassignments]
    stats = b_sums / runs_b - (totals - b_sums) / runs_a
    results = []
    for (a, b), pair_stats in zip(groups, stats):
        observed = float(b.mean() - a.mean())
        # the same sums in another order may differ in the last bits: a split that ties the observed one counts
        tolerance = 1e-9 * max(1.0, float(np.abs(pair_stats).max()))
        hits = int(np.count_nonzero(pair_stats >= observed - tolerance))
        if exact:  # the observed split is one of the enumerated ones, so hits >= 1
            p, num = hits / count, count
        else:
            p, num = (1 + hits) / (1 + max_reassignments), 1 + max_reassignments
        results.append({"diff": observed, "p": p, "min_p": 1.0 / num, "num_reassignments": num,
                        "num_splits": count, "exact": exact})
    return results


def run_permutation_test(a: np.ndarray, b: np.ndarray, *, max_reassignments: int = MAX_REASSIGNMENTS,
                         seed: int = 0) -> dict[str, float | int | bool]:
    """Permutation test over run labels: are B's runs better than A's, with the runs (seeds) as the unit?

    ``a``, ``b``: run-level values ``float[runs]``, or per-user values ``float[runs, users]``
    (averaged over users first). The statistic is mean of ``b`` - mean of ``a``; the p-value is the
    share of the C(runs_a + runs_b, runs_b) reassignments of the run labels (the observed one
    included) whose statistic is >= the observed one, so it is small when B is better. When that
    count exceeds ``max_reassignments``, that many random reassignments (from ``seed``) are used
    instead and p = (1 + hits) / (1 + max_reassignments).
    Returns ``diff`` (observed statistic), ``p``, ``min_p`` (smallest attainable p,
    1 / num_reassignments), ``num_reassignments`` (observed one included), ``num_splits``
    (C(runs_a + runs_b, runs_b)) and ``exact`` (all splits enumerated).
    """
    return run_permutation_test_many([(a, b)], max_reassignments=max_reassignments, seed=seed)[0]


def seed_matched_test(a: dict[int, float], b: dict[int, float], *,
                      max_flips: int = MAX_REASSIGNMENTS, seed: int = 0) -> dict[str, float | int | bool]:
    """Sign-flip test over the seeds both groups ran: is B better than A at the same seed?

    ``a``, ``b``: run-level values by training seed. A seed fixes the model's initial
    parameters and the order of the training batches for every method, so a seed where
    both groups ran is a matched pair; comparing a variant's seeds with the baseline's
    mean over *other* seeds mixes a seed-batch effect into the difference (docs/results.md).
    The statistic is the mean over shared seeds of ``b[s] - a[s]``. Under "no difference"
    each pair's sign is exchangeable, so p is the share of the 2^n sign patterns (the
    observed one included) whose mean is >= the observed one: one-sided, small when B
    is better. Beyond ``max_flips`` patterns, that many random ones (from ``seed``) plus
    the observed one are used. Returns ``diff``, ``p``, ``min_p``, ``seeds`` (the number
    of shared seeds), ``mean_a`` (A's mean over those seeds) and ``exact``.
    """
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError(f"no seed in common: A has {sorted(a)}, B has {sorted(b)}")
    if max_flips < 1:
        raise ValueError(f"max_flips must be >= 1, got {max_flips}")
    diffs = np.array([b[s] - a[s] for s in shared], np.float64)
    n = len(diffs)
    exact = 2 ** n <= max_flips
    if exact:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)  # [2^n, n], every pattern
    else:
        rng = np.random.default_rng(seed)
        signs = np.concatenate([np.ones((1, n), np.int64), rng.choice([-1, 1], size=(max_flips, n))])
    stats = (signs * diffs).mean(axis=1)
    observed = float(diffs.mean())
    tolerance = 1e-9 * max(1.0, float(np.abs(stats).max()))
    hits = int(np.count_nonzero(stats >= observed - tolerance))
    return {"diff": observed, "p": hits / len(signs), "min_p": 1 / len(signs), "seeds": n,
            "mean_a": float(np.mean([a[s] for s in shared])), "exact": exact}


def format_p(p: float) -> str:
    """3 decimals, or 2 significant digits below 0.001 (a sampled permutation p can be 1/20001)."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="+", required=True, help="test_ranks.npy(.gz) files of group A (e.g. CE seeds)")
    parser.add_argument("--b", nargs="+", required=True, help="test_ranks.npy(.gz) files of group B")
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
        with_perm = min(runs_a, runs_b) >= 2
        perm = run_permutation_test_many(pairs, seed=args.seed) if with_perm else [None] * len(pairs)
    except (ValueError, OSError) as error:
        print(f"compare_runs: {error}", file=sys.stderr)
        return 2
    print(f"A: {runs_a} run(s), B: {runs_b} run(s), {group_a.shape[1]} users, "
          f"paired bootstrap, resampling: {resample} ({_MODE_TEXT[resample]}; {args.resamples} resamples)")
    print("| metric | A | B | B - A | 95% interval | relative | P(B <= A) | perm. p (runs) |")
    print("|---|---|---|---|---|---|---|---|")
    for (metric, r), q in zip(rows, perm):
        relative = r["diff"] / r["mean_a"] if r["mean_a"] else float("nan")
        print(f"| {metric} | {r['mean_a']:.4f} | {r['mean_b']:.4f} | {r['diff']:+.4f} | "
              f"[{r['low']:+.4f}, {r['high']:+.4f}] | {relative:+.1%} | {r['p_b_not_better']:.3f} | "
              f"{'n/a' if q is None else format_p(q['p'])} |")
    if with_perm:
        q = perm[0]
        how = (f"exact, all C({runs_a + runs_b}, {runs_b}) = {q['num_splits']} reassignments" if q["exact"] else
               f"{q['num_reassignments'] - 1} random reassignments (seed {args.seed}) + the observed one, "
               f"out of C({runs_a + runs_b}, {runs_b}) = {q['num_splits']}")
        print(f"perm. p (runs): permutation test over run labels (seeds are the unit), share of reassignments "
              f"with B - A >= observed; {how}; smallest attainable p = 1/{q['num_reassignments']} = "
              f"{format_p(q['min_p'])}")
    else:
        print(f"perm. p (runs): n/a, the permutation test over run labels needs >= 2 runs per group "
              f"(A has {runs_a}, B {runs_b})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
