"""End-to-end recommendation throughput: the real model (APAO's T5 size by
default) + constrained beam search, users per second, against our
unconstrained beam search in the same harness and on the same device.

One jitted call per batch: encode the histories once, then ``num_levels``
decode steps with the trie constraint, returning item ids. Medians of
``--trials`` calls after warm-up; inputs are random histories over the
catalogue (speed does not depend on the weights' values).

With several devices, ``--data-parallel`` also times the same decode with
the batch sharded over all of them (index and weights replicated).
``--matmul-precisions default,highest`` times each dtype at each float32
matmul precision (docs/serving.md, "Reproducibility on GPUs": the cost of
``--matmul-precision highest``).

Run (GPU):  PYTHONPATH=. python benchmarks/recommend_throughput.py --data data_local/Beauty
CPU smoke:  PYTHONPATH=. python benchmarks/recommend_throughput.py --batch 16 --trials 2 --num-items 500
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from constrained.beam_search import constrained_beam_search, unconstrained_beam_search
from constrained.decode import matmul_precision_scope
from constrained.index import build_index
from genrec.models import ModelConfig, build_model, count_params
from genrec.vocab import BOS_ID, PAD_ID, SIDVocabulary


def load_catalogue(args):
    if args.data:
        from genrec.datasets import load_sid_dataset

        data = load_sid_dataset(args.data)
        _, first = np.unique(data.sid_codes, axis=0, return_index=True)
        return data.sid_codes[np.sort(first)], data.vocab
    rng = np.random.default_rng(0)
    flat = rng.choice(256**3, size=args.num_items, replace=False)
    codes = np.stack(np.unravel_index(flat, (256, 256, 256)), 1)
    codes = np.concatenate([codes, rng.integers(0, 256, (args.num_items, 1))], 1).astype(np.int32)
    return codes, SIDVocabulary(codebook_sizes=(256,) * 4)


def make_fns(graphdef, num_beams, vocab, normalization="vocab"):
    offsets = tuple(int(o) for o in vocab.level_offsets)
    sizes = tuple(int(k) for k in vocab.codebook_sizes)

    @jax.jit
    def constrained(state, index, history_tokens, history_mask):
        model = nnx.merge(graphdef, state)
        shared = model.encode(history_tokens, history_mask)
        cache = model.init_beam_cache(shared, num_beams)
        out = constrained_beam_search(index, model.decode_step, shared, cache, num_beams=num_beams, start_token=BOS_ID,
                                      normalization=normalization)
        return out.item_ids, out.scores

    @jax.jit
    def unconstrained(state, history_tokens, history_mask):
        model = nnx.merge(graphdef, state)
        shared = model.encode(history_tokens, history_mask)
        cache = model.init_beam_cache(shared, num_beams)
        return unconstrained_beam_search(
            model.decode_step, shared, cache, num_beams=num_beams, start_token=BOS_ID,
            num_levels=len(sizes), codebook_sizes=sizes, token_offsets=offsets,
        )

    return constrained, unconstrained


def median_ms(fn, inputs_list, trials):
    jax.block_until_ready(fn(*inputs_list[0]))
    times = []
    for t in range(trials):
        args = inputs_list[t % len(inputs_list)]
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def random_histories(rng, sid_codes, vocab, batch, history):
    items = rng.integers(0, len(sid_codes), size=(batch, history))
    lengths = rng.integers(3, history + 1, size=batch)
    mask_items = np.arange(history)[None, :] >= history - lengths[:, None]  # left padding
    tokens = np.asarray(vocab.codes_to_tokens(sid_codes[items]))  # [B, H, L]
    tokens = np.where(mask_items[..., None], tokens, PAD_ID).reshape(batch, -1).astype(np.int32)
    mask = np.repeat(mask_items, sid_codes.shape[1], axis=1)
    return tokens, mask


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="t5", choices=["t5", "llama"])
    parser.add_argument("--data", default=None, help="dataset dir for a real catalogue")
    parser.add_argument("--num-items", type=int, default=12101)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--data-parallel", action="store_true")
    parser.add_argument("--normalization", default="vocab", choices=["vocab", "trie"],
                        help="beam-score softmax support (trie = MSL-trained models)")
    parser.add_argument("--matmul-precisions", default="default",
                        help="comma-separated: default, high, highest (constrained.decode.matmul_precision_scope)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    sid_codes, vocab = load_catalogue(args)
    index = build_index(sid_codes, codebook_sizes=vocab.codebook_sizes, token_offsets=vocab.level_offsets).to_device()
    rng = np.random.default_rng(1)
    inputs = [random_histories(rng, sid_codes, vocab, args.batch, args.history) for _ in range(4)]
    print(f"jax {jax.__version__} {jax.devices()}; catalogue {len(sid_codes)} SIDs", flush=True)
    rows = []
    for dtype in args.dtypes.split(","):
        # One model and program pair per dtype; each precision is another compile of the same functions.
        preset = ModelConfig.t5_small_rec if args.arch == "t5" else ModelConfig.llama_small_rec
        config = preset(vocab.vocab_size, vocab.num_levels, dtype=getattr(jnp, dtype))
        model = build_model(config, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        constrained, unconstrained = make_fns(graphdef, args.beams, vocab, args.normalization)
        dev_inputs = [tuple(jnp.asarray(a) for a in x) for x in inputs]
        for precision in args.matmul_precisions.split(","):
            with matmul_precision_scope(precision):
                c_ms = median_ms(constrained, [(state, index) + x for x in dev_inputs], args.trials)
                u_ms = median_ms(unconstrained, [(state,) + x for x in dev_inputs], args.trials)
            row = {"arch": args.arch, "dtype": dtype, "precision": precision, "params": count_params(model),
                   "batch": args.batch, "beams": args.beams, "devices": 1, "constrained_ms": c_ms,
                   "unconstrained_ms": u_ms, "users_per_s": args.batch / c_ms * 1e3}
            rows.append(row)
            print(row, flush=True)
            if args.data_parallel and jax.device_count() > 1:
                n = jax.device_count()
                mesh = Mesh(np.array(jax.devices()), ("data",))
                shard = NamedSharding(mesh, P("data"))
                repl = NamedSharding(mesh, P())
                big = [random_histories(rng, sid_codes, vocab, args.batch * n, args.history) for _ in range(4)]
                big = [tuple(jax.device_put(a, shard) for a in x) for x in big]
                state_r = jax.device_put(state, repl)
                index_r = jax.device_put(index, repl)
                with matmul_precision_scope(precision):
                    dp_ms = median_ms(constrained, [(state_r, index_r) + x for x in big], args.trials)
                row = dict(row, devices=n, batch=args.batch * n, constrained_ms=dp_ms, unconstrained_ms=None,
                           users_per_s=args.batch * n / dp_ms * 1e3)
                rows.append(row)
                print(row, flush=True)
    print("\n| arch | dtype | precision | devices | batch | constrained ms | unconstrained ms | "
          "constrained/unconstrained | users/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        u = r["unconstrained_ms"]
        ratio = f"{r['constrained_ms'] / u:.3f}" if u else "-"
        print(f"| {r['arch']} | {r['dtype']} | {r['precision']} | {r['devices']} | {r['batch']} | "
              f"{r['constrained_ms']:.3f} | {u if u is None else round(u, 3)} | {ratio} | {r['users_per_s']:,.0f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
