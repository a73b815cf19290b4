"""Does a user's recommendation depend on the batch it is decoded in? (a diagnostic, not a speed harness)

Decodes the same users with one ``Recommender`` three ways: in order, in order
again, and in reversed order (so each user shares its batch with other users
and sits at another row); with a second ``Recommender`` (a separate compilation
of the same shapes) and with one of a quarter of the batch size (other kernel
choices); then all again with float32 matmuls at full precision
(``jax_default_matmul_precision="highest"``). Prints, for each pair, the share
of users with the same item list and the largest score difference among them.
On a GPU the default float32 matmul precision may use TF32; this tells
run-to-run nondeterminism apart from batch-composition effects.

    PYTHONPATH=. python benchmarks/decode_determinism.py --num-users 20000 --out det.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import jax
import numpy as np
from random_workdir import random_workdir  # benchmarks/ is the script directory, on sys.path

from genrec.run_files import load_workdir_data
from serving.recommender import Recommender


def compare(a, b) -> dict[str, float]:
    same = (a.item_ids == b.item_ids).all(axis=1)
    gap = np.abs(a.scores - b.scores)[same]
    return {"same_items_share": float(same.mean()), "max_score_diff_same_items": float(gap.max(initial=0.0))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="t5_small_rec", choices=["tiny", "t5_small_rec", "llama_small_rec"])
    parser.add_argument("--num-users", type=int, default=20000)
    parser.add_argument("--num-items", type=int, default=12000)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--max-history", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir, data_dir = random_workdir(Path(tmp), args)
        recommender = Recommender.from_workdir(workdir, "best", num_beams=20, batch_size=args.batch_size)
        data = load_workdir_data(workdir, data_dir, recommender.vocab, min_interactions=0)
        histories = [seq[-args.max_history:].tolist() for seq in data.sequences]
        order = np.arange(len(histories))[::-1]
        for precision in ("default", "highest"):
            with jax.default_matmul_precision(None if precision == "default" else "highest"):
                first = recommender.recommend_rows(histories, top_k=10)
                again = recommender.recommend_rows(histories, top_k=10)
                reversed_ = recommender.recommend_rows([histories[i] for i in order], top_k=10)
                # A second compilation of the same shapes, and of another batch size (other kernels).
                fresh = Recommender.from_workdir(workdir, "best", num_beams=20, batch_size=args.batch_size)
                fresh_rows = fresh.recommend_rows(histories, top_k=10)
                smaller = Recommender.from_workdir(workdir, "best", num_beams=20, batch_size=args.batch_size // 4)
                smaller_rows = smaller.recommend_rows(histories, top_k=10)
            rev_items = np.empty_like(reversed_.item_ids)
            rev_items[order] = reversed_.item_ids
            rev_scores = np.empty_like(reversed_.scores)
            rev_scores[order] = reversed_.scores
            ns = argparse.Namespace(item_ids=rev_items, scores=rev_scores)
            rows[precision] = {"again": compare(first, again), "reversed": compare(first, ns),
                               "fresh_compile": compare(first, fresh_rows),
                               f"batch_size_{args.batch_size // 4}": compare(first, smaller_rows), "first": first}
        rows["highest_vs_default"] = compare(rows["highest"]["first"], rows["default"]["first"])
    for key in ("default", "highest"):
        rows[key].pop("first")
    report = {"device": jax.devices()[0].device_kind, "users": args.num_users, **rows}
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
