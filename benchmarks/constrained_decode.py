"""Constrained decoding speed: this decoder against three baselines, side by
side in one process on one device, with a random-logit model (the STATIC
paper's harness: the "model" draws uniform logits each step, so the figures
measure the decoder, not a network).

Methods (all full decodes of ``num_levels`` steps, median wall-clock of
``--trials`` calls after a warm-up, each call with a fresh PRNG key):
  ours           constrained_beam_search (dense level 0/1 + CSR gathers)
  unconstrained  the same harness with no trie (the floor)
  dense_mask     builds a [batch, beams, vocab] validity mask from the CSR
                 rows each step and runs a masked full-vocabulary top-k
  cpu_trie       a Python dict trie queried through jax.pure_callback each
                 step (the Hugging Face prefix_allowed_tokens_fn way);
                 only at N <= 1M and fewer trials (it is slow)

Run (GPU):  PYTHONPATH=. python benchmarks/constrained_decode.py --out $OUT/decode.json
Quick CPU smoke:  PYTHONPATH=. python benchmarks/constrained_decode.py --configs smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from constrained.beam_search import (
    _select,
    constrained_beam_search,
    unconstrained_beam_search,
)
from constrained.index import build_index
from constrained.reference import build_dict_trie

CONFIGS = {
    # name: (num_items, vocab, levels, batch, beams)
    "1M-V2048-L8-b2-m70": (1_000_000, 2048, 8, 2, 70),
    "10M-V2048-L8-b2-m70": (10_000_000, 2048, 8, 2, 70),
    "1M-V256-L4-b2-m70": (1_000_000, 256, 4, 2, 70),
    "1M-V256-L4-b256-m20": (1_000_000, 256, 4, 256, 20),
    "10M-V2048-L8-b256-m20": (10_000_000, 2048, 8, 256, 20),
    "smoke": (20_000, 64, 4, 4, 10),
}
# Public STATIC reference on one H100 (shared/performance-targets.md).
STATIC_MS = {
    "1M-V2048-L8-b2-m70": (0.727, 0.602),
    "10M-V2048-L8-b2-m70": (0.898, 0.691),
    "1M-V256-L4-b2-m70": (0.601, 0.257),
    "1M-V256-L4-b256-m20": (0.659, 0.362),
    "10M-V2048-L8-b256-m20": (1.711, 4.726),
}


def unique_random_sids(rng, num_items, vocab, levels):
    """num_items distinct random SIDs, sorted order irrelevant."""
    codes = rng.integers(0, vocab, size=(int(num_items * 1.02) + 16, levels), dtype=np.int32)
    if vocab**levels < 2**62:
        key = np.zeros(len(codes), dtype=np.int64)
        for level in range(levels):
            key = key * vocab + codes[:, level]
        _, first = np.unique(key, return_index=True)
        codes = codes[np.sort(first)]
    return codes[:num_items]


def random_logit_step(shared, beam_cache, last_tokens, step):
    """Uniform logits [batch, beams, vocab]; the beam cache carries the last
    token so the search's cache reorder is exercised as with a real model."""
    key, vocab = shared["key"], shared["vocab_probe"].shape[-1]
    logits = jax.random.uniform(jax.random.fold_in(key, step), last_tokens.shape + (vocab,))
    return logits, {"last": last_tokens}


def make_fns(index_dev, meta, vocab, batch, beams):
    levels = meta.num_levels

    def inputs(key):
        shared = {"key": key, "vocab_probe": jnp.zeros((1, vocab), jnp.int8)}
        cache = {"last": jnp.zeros((batch, beams), jnp.int32)}
        return shared, cache

    @jax.jit
    def ours(key):
        shared, cache = inputs(key)
        out = constrained_beam_search(index_dev, random_logit_step, shared, cache, num_beams=beams, start_token=0)
        return out.sid_codes, out.scores

    @jax.jit
    def unconstrained(key):
        shared, cache = inputs(key)
        return unconstrained_beam_search(
            random_logit_step, shared, cache, num_beams=beams, start_token=0,
            num_levels=levels, codebook_sizes=meta.codebook_sizes, token_offsets=meta.token_offsets,
        )

    @jax.jit
    def dense_mask(key):
        """Masked full-vocabulary search: children scattered into a [B, M, V] mask."""
        shared, cache = inputs(key)
        idx = index_dev
        states = jnp.zeros((batch, 1), jnp.int32)
        scores = jnp.zeros((batch, 1), jnp.float32)
        codes = jnp.zeros((batch, beams, 0), jnp.int32)
        last = jnp.zeros((batch, beams), jnp.int32)
        for level in range(levels):
            if level:
                last = codes[..., -1]
            logits, cache = random_logit_step(shared, cache, last, level)
            logp = jax.nn.log_softmax(logits[:, : states.shape[1]], axis=-1)
            width = meta.max_branch[level]
            starts = idx.csr_indptr[states]
            pos = starts[..., None] + jnp.arange(width)
            ok = pos < idx.csr_indptr[states + 1][..., None]
            pos = jnp.minimum(pos, idx.csr_codes.shape[0] - 1)
            child = jnp.where(ok, idx.csr_codes[pos], vocab)  # vocab = dropped
            mask = jnp.zeros(logp.shape, bool)
            b_i = jnp.arange(batch)[:, None, None]
            m_i = jnp.arange(states.shape[1])[None, :, None]
            mask = mask.at[b_i, m_i, child].set(True, mode="drop")
            nxt_full = jnp.zeros(logp.shape, jnp.int32).at[b_i, m_i, child].set(idx.csr_next[pos], mode="drop")
            cand = scores[..., None] + jnp.where(mask, logp, -jnp.inf)
            scores, parent, new_codes = _select(cand, beams)
            states = jnp.take_along_axis(nxt_full.reshape(batch, -1), parent * vocab + new_codes, axis=1)
            codes = jnp.concatenate([jnp.take_along_axis(codes, parent[..., None], axis=1), new_codes[..., None]], -1)
        return codes, scores

    # Ablation: the same decoder with plain lax.top_k selection (no chunk maxima).
    import constrained.beam_search as bs

    @jax.jit
    def ours_plain_topk(key):
        saved = bs.CHUNKED_SELECT_MIN_WIDTH, bs.PER_BEAM_MAX_ROWS
        bs.CHUNKED_SELECT_MIN_WIDTH, bs.PER_BEAM_MAX_ROWS = 2**62, 0  # read at trace time
        try:
            return ours.__wrapped__(key)
        finally:
            bs.CHUNKED_SELECT_MIN_WIDTH, bs.PER_BEAM_MAX_ROWS = saved

    return {"ours": ours, "unconstrained": unconstrained, "dense_mask": dense_mask, "ours_plain_topk": ours_plain_topk}


def make_cpu_trie_fn(trie, vocab, batch, beams, levels):
    def host_mask(prefixes):
        prefixes = np.asarray(prefixes)
        mask = np.zeros(prefixes.shape[:2] + (vocab,), dtype=bool)
        for b in range(prefixes.shape[0]):
            for m in range(prefixes.shape[1]):
                node = trie
                for code in prefixes[b, m].tolist():
                    node = node.get(code, {})
                if isinstance(node, dict) and node:
                    mask[b, m, list(node.keys())] = True
        return mask

    @jax.jit
    def cpu_trie(key):
        shared = {"key": key, "vocab_probe": jnp.zeros((1, vocab), jnp.int8)}
        cache = {"last": jnp.zeros((batch, beams), jnp.int32)}
        scores = jnp.zeros((batch, 1), jnp.float32)
        codes = jnp.zeros((batch, 1, 0), jnp.int32)
        for level in range(levels):
            last = codes[..., -1] if level else jnp.zeros((batch, beams), jnp.int32)
            if level:
                last = jnp.broadcast_to(last, (batch, beams))
            logits, cache = random_logit_step(shared, cache, last, level)
            logp = jax.nn.log_softmax(logits[:, : codes.shape[1]], axis=-1)
            mask = jax.pure_callback(
                host_mask, jax.ShapeDtypeStruct(logp.shape, jnp.bool_), codes, vmap_method="sequential"
            )
            cand = scores[..., None] + jnp.where(mask, logp, -jnp.inf)
            scores, parent, new_codes = _select(cand, beams)
            codes = jnp.concatenate([jnp.take_along_axis(codes, parent[..., None], axis=1), new_codes[..., None]], -1)
        return codes, scores

    return cpu_trie


def time_fn(fn, trials, seed=0):
    jax.block_until_ready(fn(jax.random.key(seed)))  # compile + warm-up
    jax.block_until_ready(fn(jax.random.key(seed + 1)))
    times = []
    for t in range(trials):
        key = jax.random.key(seed + 100 + t)
        start = time.perf_counter()
        jax.block_until_ready(fn(key))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), times


def check_valid(index, fn, name):
    """Every valid beam of a decode must be an SID of the catalogue."""
    codes, scores = jax.device_get(fn(jax.random.key(7)))
    codes, scores = np.asarray(codes), np.asarray(scores)
    valid = np.isfinite(scores)
    catalogue = ({tuple(r) for r in index.sorted_codes[: min(len(index.sorted_codes), 2_000_000)].tolist()}
                 if index.num_items <= 2_000_000 else None)
    bad = 0
    flat = codes[valid]
    if catalogue is not None:
        bad = sum(tuple(r) not in catalogue for r in flat.tolist())
    else:  # walk with searchsorted on the sorted codes
        keys = index.sorted_codes
        for r in flat:
            lo, hi = 0, len(keys)
            for level, c in enumerate(r):
                col = keys[lo:hi, level]
                lo, hi = lo + np.searchsorted(col, c, "left"), lo + np.searchsorted(col, c, "right")
            bad += hi <= lo
    return int(valid.sum()), int(bad)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(k for k in CONFIGS if k != "smoke"))
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--cpu-trie-trials", type=int, default=3)
    parser.add_argument("--skip-cpu-trie", action="store_true")
    parser.add_argument("--out", default=None, help="write results JSON here")
    args = parser.parse_args(argv)

    print(f"jax {jax.__version__}, devices: {jax.devices()}", flush=True)
    results = []
    built = {}
    for name in args.configs.split(","):
        num_items, vocab, levels, batch, beams = CONFIGS[name]
        cat_key = (num_items, vocab, levels)
        if cat_key not in built:
            built.clear()
            rng = np.random.default_rng(0)
            codes = unique_random_sids(rng, num_items, vocab, levels)
            t0 = time.perf_counter()
            index = build_index(codes, codebook_sizes=(vocab,) * levels)
            build_s = time.perf_counter() - t0
            built[cat_key] = (index, index.to_device(), build_s, codes)
            print(f"[{name}] built index in {build_s:.1f}s: max_branch={index.max_branch} "
                  f"dense_depth={index.dense_depth} MB={index.memory_report()['total'] / 2**20:.0f}", flush=True)
        index, index_dev, build_s, codes = built[cat_key]
        fns = make_fns(index_dev, index_dev.meta, vocab, batch, beams)
        row = {"config": name, "num_items": num_items, "vocab": vocab, "levels": levels, "batch": batch,
               "beams": beams, "build_s": build_s, "index_mb": index.memory_report()["total"] / 2**20}
        for method, fn in fns.items():
            med, times = time_fn(fn, args.trials)
            row[f"{method}_ms"] = med
            row[f"{method}_ms_all"] = times
            if method in ("ours", "dense_mask"):
                n_valid, n_bad = check_valid(index, fn, method)
                row[f"{method}_valid_beams"], row[f"{method}_invalid_sids"] = n_valid, n_bad
            print(f"[{name}] {method:14s} median {med:8.3f} ms", flush=True)
        # The baselines must decode the same beams as ours (same random logits).
        ref_codes, ref_scores = jax.device_get(fns["ours"](jax.random.key(11)))
        for method in ("unconstrained", "dense_mask"):
            c, s = jax.device_get(fns[method](jax.random.key(11)))
            row[f"{method}_same_beams_as_ours"] = float(np.mean(np.all(np.asarray(c) == np.asarray(ref_codes), -1)))
        if not args.skip_cpu_trie and num_items <= 1_000_000:
            t0 = time.perf_counter()
            trie = build_dict_trie(codes, np.arange(len(codes)))
            print(f"[{name}] dict trie built in {time.perf_counter() - t0:.1f}s", flush=True)
            fn = make_cpu_trie_fn(trie, vocab, batch, beams, levels)
            med, times = time_fn(fn, args.cpu_trie_trials)
            row["cpu_trie_ms"], row["cpu_trie_ms_all"] = med, times
            c, _ = jax.device_get(fn(jax.random.key(11)))
            row["cpu_trie_same_beams_as_ours"] = float(np.mean(np.all(np.asarray(c) == np.asarray(ref_codes), -1)))
            print(f"[{name}] {'cpu_trie':14s} median {med:8.3f} ms", flush=True)
            del trie
        results.append(row)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "results": results},
                          f, indent=1)

    print("\n| config | ours ms | unconstrained ms | dense-mask ms | ours, plain top-k ms | CPU trie ms | "
          "ours/unconstrained | ours/STATIC ref | CPU trie/ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        static = STATIC_MS.get(r["config"], (float("nan"),))[0]
        cpu = r.get("cpu_trie_ms", float("nan"))
        print(f"| {r['config']} | {r['ours_ms']:.3f} | {r['unconstrained_ms']:.3f} | {r['dense_mask_ms']:.3f} | "
              f"{r['ours_plain_topk_ms']:.3f} | {cpu:.1f} | {r['ours_ms'] / r['unconstrained_ms']:.3f} | "
              f"{r['ours_ms'] / static:.3f} | "
              f"{cpu / r['ours_ms']:.0f} |")
    for r in results:
        print(f"{r['config']}: ours valid beams {r.get('ours_valid_beams')}, non-catalogue SIDs "
              f"{r.get('ours_invalid_sids')}; same beams as ours: dense_mask "
              f"{r.get('dense_mask_same_beams_as_ours')}, cpu_trie {r.get('cpu_trie_same_beams_as_ours')}, "
              f"unconstrained {r.get('unconstrained_same_beams_as_ours')}")


if __name__ == "__main__":
    sys.exit(main())
