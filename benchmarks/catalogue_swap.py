"""Catalogue updates without recompiling: how long ``Recommender.update_catalogue``
takes at 1M and 10M items, and what decoding over an index padded to a capacity
costs against exact shapes, in one process on one device.

Per catalogue size N (``--sizes``), with the real model (APAO's T5 size by
default; speed does not depend on the weights' values) and random distinct
SIDs over 4 levels of 256 codes:

  build_s              ``Recommender(..., capacity=--headroom)`` on day 0's catalogue
  swap_s               median ``update_catalogue`` of a next day's catalogue (``--churn``
                       of the items retired, as many new ones added; ``--swaps`` updates
                       alternating two days): the new index, device arrays and id maps
                       built off to the side, then one reference assignment. Requests
                       are served from the old catalogue meanwhile and never wait.
  fits, recompiled     the update fitted the capacity, and a decode after it compiled
                       nothing (both must hold: True, False)
  exact_ms, capacity_ms
                       decode of one batch (``decode_batch``: encode + constrained beam
                       search; ``--batch`` users, ``--beams`` beams) over the exact-shape
                       index and over the padded index of the same catalogue, medians
                       over interleaved rounds
  capacity_over_exact  their ratio (issue 23's bar: under 1.05)
  exact_mb, capacity_mb  host bytes of the two indexes (TrieIndex.memory_report)

Run (GPU):  PYTHONPATH=. python benchmarks/catalogue_swap.py --out $OUT/catalogue_swap.json
CPU smoke:  PYTHONPATH=. python benchmarks/catalogue_swap.py --sizes 3000 --preset tiny --batch 4 --beams 5 \
            --trials 2 --rounds 1 --swaps 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# constrained_decode.py sits beside this script; benchmarks/ is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from constrained_decode import unique_random_sids  # noqa: E402

from constrained.decode import build_eval_index, decode_batch, history_tokens  # noqa: E402
from constrained.index import pad_index  # noqa: E402
from genrec.atomic_files import write_json_atomic  # noqa: E402
from genrec.models import ModelConfig, build_model  # noqa: E402
from genrec.vocab import SIDVocabulary  # noqa: E402
from serving.recommender import Recommender  # noqa: E402

CODEBOOK, LEVELS = 256, 4


def day_zero(rng: np.random.Generator, num_items: int, churn: float) -> tuple[np.ndarray, np.ndarray]:
    """``(sid_codes int32[N + new, L], item_ids int64[N + new])``: day 0's N items, then a pool of
    ``ceil(churn * N)`` items that arrive later, all with distinct SIDs."""
    num_new = int(np.ceil(churn * num_items))
    codes = unique_random_sids(rng, num_items + num_new, CODEBOOK, LEVELS)
    return codes, np.arange(len(codes), dtype=np.int64)


def next_day(rng: np.random.Generator, pool_codes: np.ndarray, pool_ids: np.ndarray, num_items: int,
             churn: float) -> tuple[np.ndarray, np.ndarray]:
    """Day 0's catalogue (the first ``num_items`` of the pool) with ``ceil(churn * N)`` random items
    retired and as many of the pool's later items added at the end: ``(sid_codes, item_ids)``."""
    num_new = len(pool_ids) - num_items
    kept = np.sort(rng.choice(num_items, size=num_items - num_new, replace=False))
    rows = np.concatenate([kept, np.arange(num_items, len(pool_ids))])
    return pool_codes[rows], pool_ids[rows]


def random_history_tokens(rng, item_tokens, batch, max_history):
    rows = rng.integers(0, len(item_tokens), size=(batch, max_history))
    rows[:, : max_history // 2] = -1  # half-empty histories, left-padded as the Recommender pads them
    return tuple(jnp.asarray(a) for a in history_tokens(rows, item_tokens))


def timed_ms(fn, trials):
    """Wall-clock milliseconds of ``trials`` calls of ``fn`` after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return times


def measure_size(num_items, model, vocab, args, rng):
    pool_codes, pool_ids = day_zero(rng, num_items, args.churn)
    codes0, ids0 = pool_codes[:num_items], pool_ids[:num_items]
    start = time.perf_counter()
    rec = Recommender(model, vocab, codes0, ids0, num_beams=args.beams, batch_size=args.batch,
                      max_history=args.history, capacity=args.headroom)
    build_s = time.perf_counter() - start
    days = [next_day(rng, pool_codes, pool_ids, num_items, args.churn), (codes0, ids0)]
    histories = rng.integers(0, num_items, size=(args.batch, args.history))  # rows of every day's catalogue
    rec.recommend_rows(histories, top_k=1)  # compiles the capacity's decode
    swap_s, fits, compiles_before = [], True, decode_batch._cache_size()
    for swap in range(args.swaps):
        codes, ids = days[swap % 2]
        start = time.perf_counter()
        fits &= rec.update_catalogue(codes, ids)
        swap_s.append(time.perf_counter() - start)
        rec.recommend_rows(histories, top_k=1)
    recompiled = decode_batch._cache_size() != compiles_before

    # Decode over the exact and the padded index of one catalogue, same inputs, interleaved rounds.
    exact, _ = build_eval_index(codes0, vocab)
    padded = pad_index(exact, rec.capacity)
    graphdef, state = nnx.split(model)
    tokens, mask = random_history_tokens(rng, vocab.codes_to_tokens(codes0), args.batch, args.history)
    indexes = {"exact": exact.to_device(), "capacity": padded.to_device()}
    times = {name: [] for name in indexes}
    for _ in range(args.rounds):
        for name, index in indexes.items():
            times[name] += timed_ms(lambda index=index: decode_batch(  # called as the Recommender calls it
                graphdef, state, index, tokens, mask, None, None, num_beams=args.beams, normalization="vocab",
            ).item_ids, args.trials)
    exact_ms, capacity_ms = (statistics.median(times[name]) for name in ("exact", "capacity"))
    return {
        "num_items": num_items, "churn": args.churn, "headroom": args.headroom, "build_s": build_s,
        "swap_s": statistics.median(swap_s), "swaps": args.swaps, "fits": bool(fits), "recompiled": recompiled,
        "batch": args.batch, "beams": args.beams, "exact_ms": exact_ms, "capacity_ms": capacity_ms,
        "capacity_over_exact": capacity_ms / exact_ms,
        "exact_mb": exact.memory_report()["total"] / 2**20, "capacity_mb": padded.memory_report()["total"] / 2**20,
        "capacity": rec.capacity.to_json(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="catalogue sizes, comma-separated")
    parser.add_argument("--preset", default="t5_small_rec", choices=["t5_small_rec", "tiny"])
    parser.add_argument("--headroom", type=float, default=1.25, help="capacity over day 0's sizes")
    parser.add_argument("--churn", type=float, default=0.01, help="share of items retired and added per day")
    parser.add_argument("--swaps", type=int, default=3, help="timed update_catalogue calls per size")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--trials", type=int, default=20, help="timed decodes per index per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)

    vocab = SIDVocabulary(codebook_sizes=(CODEBOOK,) * LEVELS)
    if args.preset == "tiny":
        config = ModelConfig.tiny(vocab.vocab_size, vocab.num_levels, num_encoder_layers=1, num_decoder_layers=1)
    else:
        config = ModelConfig.t5_small_rec(vocab.vocab_size, vocab.num_levels)
    model = build_model(config, rngs=nnx.Rngs(0))
    print(f"jax {jax.__version__} {jax.devices()}; model {args.preset}", flush=True)
    rng = np.random.default_rng(0)
    rows = []
    for num_items in (int(n) for n in args.sizes.split(",")):
        row = measure_size(num_items, model, vocab, args, rng)
        rows.append(row)
        print(row, flush=True)
    print("\n| items | build s | swap s | fits | recompiled | exact ms | capacity ms | capacity/exact | "
          "index MB exact / capacity |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['num_items']:,} | {r['build_s']:.2f} | {r['swap_s']:.2f} | {r['fits']} | {r['recompiled']} | "
              f"{r['exact_ms']:.3f} | {r['capacity_ms']:.3f} | {r['capacity_over_exact']:.3f} | "
              f"{r['exact_mb']:.0f} / {r['capacity_mb']:.0f} |")
    if args.out:
        write_json_atomic(args.out, {"device": jax.devices()[0].device_kind, "preset": args.preset,
                                     "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
