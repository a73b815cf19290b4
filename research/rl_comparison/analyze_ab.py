"""A supervised A/B's table and its pre-registered test (docs/results.md, "Hugging Face T5 numerics on Beauty CE").

Reads the runs of ``rl_grid_gpu.py --arms sup-default,sup-hf --learning-rates config --no-start``
(each run's results.json, test_ranks.npy) and prints, as Markdown: per-run and mean test
Recall/NDCG@{5,10,20}, best steps and validation NDCG@10; the primary test, an exact one-sided
permutation test of mean(B) - mean(A) of per-run test Recall@10 over every split of the runs into
two arms of the same sizes (70 splits for 4 + 4); and a per-user sign-flip test of the seed means
beside it (secondary).

Usage: python research/rl_comparison/analyze_ab.py --runs DIR [DIR ...] [--a sup-default] [--b sup-hf]
       [--a-lane PREFIX --a-seeds 1,2,3,4] [--published 0.0611] [--json OUT.json]
(DIR: the unpacked rl_<tag>.tar.gz of each call. ``--a-lane``: arm A from earlier lane runs instead, the
pre-registered fallback when a session can run only arm B: ``PREFIX_s<S>.json`` and
``<dir of PREFIX>/ranks/<name>_s<S>.test_ranks.npy``, e.g.
``research/results_raw/2026-11-26/beauty_t5_ce_fullval``.)
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from analyze_grid import KS, per_user, sign_flip_p


def exact_permutation_p(a: list[float], b: list[float]) -> tuple[float, int]:
    """One-sided p of mean(b) - mean(a) over every relabelling of the pooled runs (and the split count)."""
    pooled = np.array(a + b)
    observed = np.mean(b) - np.mean(a)
    splits = list(itertools.combinations(range(pooled.size), len(b)))
    count = 0
    for chosen in splits:
        mask = np.zeros(pooled.size, bool)
        mask[list(chosen)] = True
        count += pooled[mask].mean() - pooled[~mask].mean() >= observed - 1e-12
    return count / len(splits), len(splits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--a", default="sup-default", help="the baseline arm")
    parser.add_argument("--b", default="sup-hf", help="the arm H1 says is better")
    parser.add_argument("--published", type=float, default=0.0611, help="the published CE Recall@10 (Beauty)")
    parser.add_argument("--a-lane", type=Path, default=None, help="arm A from lane results: PREFIX of PREFIX_s<S>.json")
    parser.add_argument("--a-seeds", default="1,2,3,4", help="with --a-lane: the seeds, comma-separated")
    parser.add_argument("--flips", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    arms: dict[str, dict[int, dict]] = {args.a: {}, args.b: {}}
    for run_dir in sorted(p for runs in args.runs for p in runs.iterdir() if p.is_dir()):
        arm, _, seed = run_dir.name.rsplit("_", 2)
        if arm in arms:
            result = json.loads((run_dir / "results.json").read_text())
            arms[arm][int(seed[1:])] = {"ranks": np.load(run_dir / "test_ranks.npy"), "best_step": result["best_step"],
                                        "valid_ndcg@10": result["best_valid_metrics"]["ndcg@10"]}
    if args.a_lane is not None:
        for seed in map(int, args.a_seeds.split(",")):
            result = json.loads(Path(f"{args.a_lane}_s{seed}.json").read_text())
            ranks = args.a_lane.parent / "ranks" / f"{args.a_lane.name}_s{seed}.test_ranks.npy"
            arms[args.a][seed] = {"ranks": np.load(ranks), "best_step": result["best_step"],
                                  "valid_ndcg@10": result["best_valid_metrics"]["ndcg@10"]}
    for arm, runs in arms.items():
        if len(runs) < 2:
            raise SystemExit(f"arm {arm}: {len(runs)} finished runs under {[str(r) for r in args.runs]}; need >= 2")

    report: dict = {"arms": {}}
    print("| arm | seed | best step | valid N@10 | " + " | ".join(f"R@{k} | N@{k}" for k in KS[1:]) + " |")
    print("|---|---|---|---|" + "---|---|" * len(KS[1:]))
    for arm, runs in arms.items():
        rows = {}
        for seed, run in sorted(runs.items()):
            row = {f"{m}@{k}": float(per_user(run["ranks"], m, k).mean()) for k in KS for m in ("recall", "ndcg")}
            row.update(best_step=run["best_step"], valid_ndcg10=run["valid_ndcg@10"])
            rows[seed] = row
            print(f"| {arm} | {seed} | {row['best_step']} | {row['valid_ndcg10']:.4f} | "
                  + " | ".join(f"{row[f'recall@{k}']:.4f} | {row[f'ndcg@{k}']:.4f}" for k in KS[1:]) + " |")
        mean = {key: float(np.mean([r[key] for r in rows.values()])) for key in next(iter(rows.values()))}
        sd = float(np.std([r["recall@10"] for r in rows.values()], ddof=1))
        print(f"| **{arm} mean** | {len(rows)} seeds | {mean['best_step']:.0f} | {mean['valid_ndcg10']:.4f} | "
              + " | ".join(f"{mean[f'recall@{k}']:.4f} | {mean[f'ndcg@{k}']:.4f}" for k in KS[1:])
              + f" |  (R@10 sd {sd:.4f})")
        report["arms"][arm] = {"runs": rows, "mean": mean, "recall@10_sd": sd}

    a = [r["recall@10"] for r in report["arms"][args.a]["runs"].values()]
    b = [r["recall@10"] for r in report["arms"][args.b]["runs"].values()]
    p, splits = exact_permutation_p(a, b)
    diff = np.mean(b) - np.mean(a)
    per_user_diff = (np.mean([per_user(r["ranks"], "recall", 10) for r in arms[args.b].values()], axis=0)
                     - np.mean([per_user(r["ranks"], "recall", 10) for r in arms[args.a].values()], axis=0))
    p_users = sign_flip_p(per_user_diff, args.flips, np.random.default_rng(0))
    report.update(primary={"diff_recall@10": float(diff), "relative": float(diff / np.mean(a)), "p": p,
                           "splits": splits, "p_users": p_users, "published": args.published})
    print(f"\nPrimary: test Recall@10 {args.b} {np.mean(b):.4f} vs {args.a} {np.mean(a):.4f} "
          f"({diff:+.4f}, {diff / np.mean(a):+.1%}); exact one-sided permutation p {p:.3f} over {splits} splits "
          f"(alpha 0.05): {'B better' if p < 0.05 else 'no evidence that B is better'}. Secondary: per-user "
          f"sign-flip p {p_users:.3f}; gap to the published CE {args.published}: {args.a} "
          f"{np.mean(a) / args.published - 1:+.1%}, {args.b} {np.mean(b) / args.published - 1:+.1%}.")
    winner = args.b if p < 0.05 else args.a
    start_seed = max(sorted(report["arms"][winner]["runs"]),
                     key=lambda s: (report["arms"][winner]["runs"][s]["valid_ndcg10"], -s))
    report["rl_start"] = {"arm": winner, "seed": start_seed}
    print(f"RL start (the winning arm's run with the best validation NDCG@10): {winner} seed {start_seed}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
