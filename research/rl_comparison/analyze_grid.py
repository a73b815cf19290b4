"""An RL comparison's table and tests (docs/results.md, "V-STAR RL on Office" / "on Beauty").

Reads the raw files of ``rl_grid_gpu.py`` (the start's and every RL run's
results.json, test_ranks.npy, metrics.jsonl), picks each arm's learning rate
on validation (seed mean of the best validation NDCG@10), and prints, as
Markdown: test Recall/NDCG@{1,5,10,20} (seed means, per-seed Recall@10), the
rollout statistics, and the pre-registered one-sided sign-flip permutation
test over test users of (seed-mean hit - start hit), with a bootstrap over RL
seeds and users beside it; each ``<arm>-<variant>`` beside its ``<arm>`` at the
same rate (two-sided sign flips) when both are in the runs.

Usage: python research/rl_comparison/analyze_grid.py --runs DIR [DIR ...] --start DIR [--bar 0.0671] [--primary ARM]
       [--json OUT.json]
(DIR: the unpacked rl_<tag>.tar.gz, several when the grid took several calls; the start: the unpacked
sup_<Dataset>.tar; --bar: the published APAO T5 Recall@10 to beat, Office 0.0671, Beauty 0.0639).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

ARMS = ("grpo_beam", "grpo_sample", "sibling", "vstar")  # table order; variants and ce_control follow
KS = (1, 5, 10, 20)


def table_order(arm: str) -> tuple:
    """Sort key of an arm's rows: the RL arms in ``ARMS`` order (each before its variants), then the rest,
    ``ce_control`` last."""
    base = arm.split("-")[0]
    return base not in ARMS, arm == "ce_control", ARMS.index(base) if base in ARMS else 0, arm


def per_user(ranks: np.ndarray, metric: str, k: int) -> np.ndarray:
    """float64[users]: recall@k (rank in 1..k) or ndcg@k (1 / log2(rank + 1) there) of 1-based ranks (0 = missed)."""
    hit = (ranks >= 1) & (ranks <= k)
    if metric == "recall":
        return hit.astype(np.float64)
    return np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)


def sign_flip_p(diff: np.ndarray, flips: int, rng: np.random.Generator, two_sided: bool = False) -> float:
    """p of mean(diff) > 0 (or, ``two_sided``, of |mean(diff)| as large) under random sign flips of the per-user
    differences (chunked)."""
    observed = abs(diff.mean()) if two_sided else diff.mean()
    nonzero = diff[diff != 0]
    count, done = 0, 0
    while done < flips:
        n = min(10_000, flips - done)
        signs = rng.integers(0, 2, size=(n, nonzero.size), dtype=np.int8) * 2 - 1
        flipped = (signs * nonzero).sum(axis=1) / diff.size
        count += int(((np.abs(flipped) if two_sided else flipped) >= observed - 1e-15).sum())
        done += n
    return (count + 1) / (flips + 1)


def bootstrap_p(runs: np.ndarray, start: np.ndarray, draws: int, rng: np.random.Generator) -> float:
    """Share of (seeds, users) resamples whose mean difference is <= 0: ``runs`` float64[seeds, users]."""
    seeds, users = runs.shape
    worse = 0
    for _ in range(draws):
        s = rng.integers(0, seeds, seeds)
        u = rng.integers(0, users, users)
        worse += (runs[s][:, u].mean() - start[u].mean()) <= 0
    return worse / draws


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--start", type=Path, required=True)
    parser.add_argument("--flips", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--bar", type=float, default=0.0671, help="published APAO T5 Recall@10 (Office 0.0671)")
    parser.add_argument("--primary", default="vstar",
                        help="the arm of the primary test (vstar-ranking: the ranking runs)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    start_ranks = np.load(args.start / "test_ranks.npy")
    start_valid = json.loads((args.start / "results.json").read_text())["best_valid_metrics"]["ndcg@10"]
    runs: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for run_dir in sorted((p for runs in args.runs for p in runs.iterdir() if p.is_dir()), key=lambda p: p.name):
        arm, lr, seed = run_dir.name.rsplit("_", 2)
        result = json.loads((run_dir / "results.json").read_text())
        train = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in train if r.get("kind") == "train"]
        # The CE control logs no rollouts: its rollout columns are NaN.
        runs[(arm, lr[2:])][int(seed[1:])] = {
            "ranks": np.load(run_dir / "test_ranks.npy"),
            "best_valid_ndcg10": result["best_valid_metrics"]["ndcg@10"],
            "best_step": result["best_step"],
            "unique": float(np.mean([r.get("unique_items_per_group", np.nan) for r in train])),
            "group_std": float(np.mean([r.get("reward_group_std", np.nan) for r in train])),
            "reward": float(np.mean([r.get("reward_mean", np.nan) for r in train])),
            "kl_exact_end": train[-1].get("kl_exact", np.nan) if train else np.nan,
        }
    arms = sorted({arm for arm, _ in runs}, key=table_order)
    rates = {arm: sorted({lr for a, lr in runs if a == arm}, key=float) for arm in arms}

    report: dict = {"start": {f"{m}@{k}": float(per_user(start_ranks, m, k).mean())
                              for m in ("recall", "ndcg") for k in KS}}
    report["start"]["valid_ndcg@10"] = start_valid
    print(f"start: valid NDCG@10 {start_valid:.4f}; test " + ", ".join(
        f"{key} {value:.4f}" for key, value in report["start"].items() if key != "valid_ndcg@10"))

    print("\n| arm | lr | valid NDCG@10 (best, seed mean) | best steps | test R@10 per seed |")
    print("|---|---|---|---|---|")
    chosen: dict[str, str] = {}
    for arm in arms:
        lrs = rates[arm]
        means = {lr: np.mean([r["best_valid_ndcg10"] for r in runs[(arm, lr)].values()]) for lr in lrs}
        chosen[arm] = max(lrs, key=lambda lr: (means[lr], -float(lr)))
        for lr in lrs:
            seeds = runs[(arm, lr)]
            per_seed = [per_user(seeds[s]["ranks"], "recall", 10).mean() for s in sorted(seeds)]
            mark = " (chosen)" if lr == chosen[arm] else ""
            print(f"| {arm} | {lr}{mark} | {means[lr]:.4f} | {[seeds[s]['best_step'] for s in sorted(seeds)]} | "
                  + " / ".join(f"{v:.4f}" for v in per_seed) + " |")

    header = " | ".join(f"R@{k}" for k in KS) + " | " + " | ".join(f"N@{k}" for k in KS)
    print(f"\n| model | lr | seeds | {header} | R@10 vs start | p (users) | p (seeds+users) | unique/group | "
          "reward std in group | KL at 300 |")
    print("|---|---|---|" + "---|" * (2 * len(KS)) + "---|---|---|---|---|---|")
    print("| CE start | - | 1 | " + " | ".join(f"{report['start'][f'recall@{k}']:.4f}" for k in KS) + " | "
          + " | ".join(f"{report['start'][f'ndcg@{k}']:.4f}" for k in KS) + " | - | - | - | - | - | - |")
    report["arms"] = {}
    for arm in arms:
        for lr in rates[arm]:
            seeds = runs[(arm, lr)]
            row: dict = {"lr": lr, "chosen": lr == chosen[arm], "seeds": len(seeds)}
            for metric in ("recall", "ndcg"):
                for k in KS:
                    row[f"{metric}@{k}"] = float(np.mean([per_user(r["ranks"], metric, k).mean()
                                                           for r in seeds.values()]))
            for metric in ("recall", "ndcg"):
                matrix = np.stack([per_user(r["ranks"], metric, 10) for r in seeds.values()])
                start = per_user(start_ranks, metric, 10)
                diff = matrix.mean(axis=0) - start
                row[f"{metric}@10_rel"] = float(diff.mean() / start.mean())
                row[f"{metric}@10_p_users"] = sign_flip_p(diff, args.flips, rng)
                row[f"{metric}@10_p_seeds_users"] = bootstrap_p(matrix, start, 2000, rng)
            for key in ("unique", "group_std", "reward", "kl_exact_end"):
                row[key] = float(np.mean([r[key] for r in seeds.values()]))
            report["arms"][f"{arm}@{lr}"] = row
            print(f"| {arm} | {lr}{' (chosen)' if row['chosen'] else ''} | {row['seeds']} | "
                  + " | ".join(f"{row[f'recall@{k}']:.4f}" for k in KS) + " | "
                  + " | ".join(f"{row[f'ndcg@{k}']:.4f}" for k in KS)
                  + f" | {row['recall@10_rel']:+.1%} | {row['recall@10_p_users']:.3f} | "
                  f"{row['recall@10_p_seeds_users']:.3f} | {row['unique']:.1f} | {row['group_std']:.3f} | "
                  f"{row['kl_exact_end']:.3f} |")
    # Secondary: each <arm>-<variant> against its <arm> at the same rate (two-sided; seed means per user).
    pairs = [(arm, lr) for arm in arms if "-" in arm for lr in rates[arm] if (arm.split("-")[0], lr) in runs]
    if pairs:
        print("\n| variant vs its arm | lr | R@10 | R@10 of the arm | difference | two-sided p (users) |")
        print("|---|---|---|---|---|---|")
    report["variants"] = {}
    for arm, lr in pairs:
        hits = [np.stack([per_user(r["ranks"], "recall", 10) for r in runs[(name, lr)].values()]).mean(axis=0)
                for name in (arm, arm.split("-")[0])]
        diff = hits[0] - hits[1]
        p = sign_flip_p(diff, args.flips, rng, two_sided=True)
        report["variants"][f"{arm}@{lr}"] = {"recall@10": float(hits[0].mean()),
                                             "base_recall@10": float(hits[1].mean()), "p_two_sided": p}
        print(f"| {arm} | {lr} | {hits[0].mean():.4f} | {hits[1].mean():.4f} | "
              f"{diff.mean() / hits[1].mean():+.1%} | {p:.3f} |")
    if args.primary in chosen:
        primary = report["arms"][f"{args.primary}@{chosen[args.primary]}"]
        bar = 1.05 * report["start"]["recall@10"]
        met = primary["recall@10"] >= bar and primary["recall@10_p_users"] < 0.05 and primary["recall@10"] > args.bar
        report["primary"] = {"arm": args.primary, "lr": chosen[args.primary], "met": bool(met)}
        print(f"\nPrimary ({args.primary} at lr {chosen[args.primary]}): test Recall@10 {primary['recall@10']:.4f} "
              f"vs start {report['start']['recall@10']:.4f} ({primary['recall@10_rel']:+.1%}), one-sided p "
              f"{primary['recall@10_p_users']:.3f}; the bar needs >= {bar:.4f}, p < 0.05 and > {args.bar}: "
              + ("MET" if met else "NOT MET"))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
