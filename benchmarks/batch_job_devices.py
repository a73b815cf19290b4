"""The batch job (``serving.batch_job.run_batch_job``) on one device against all
local devices, in one process: users per second of the whole job (history
preparation, decode, item mapping, JSON shards, manifest), not of the decode
alone (that is ``recommend_throughput.py --data-parallel``).

Three runs over the same users with the same model (random weights of the
chosen size: speed does not depend on their values): one device at
``--batch`` users per decode call; all devices at the same ``--batch`` (each
device decodes ``batch / N``); all devices at ``N * --batch`` (each decodes
``--batch``, as ``recommend_throughput.py --data-parallel`` does). Each run is
timed after a warm-up call that compiles its decode; the users/s of the last two
against the first are the ratios to report. Every run's shards are compared
with the one-device run's: the share of users whose items are the same is
written too (1.0 expected; the scores differ only by float rounding).

Run (GPUs):  PYTHONPATH=. python benchmarks/batch_job_devices.py --data data_local/Beauty --out devices.json
CPU smoke:   XLA_FLAGS=--xla_force_host_platform_device_count=2 PYTHONPATH=. python benchmarks/batch_job_devices.py \\
                 --preset tiny --num-users 200 --batch 16 --out /tmp/devices.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from genrec.models import ModelConfig, build_model
from serving.batch_job import run_batch_job, shard_path
from serving.recommender import Recommender

PRESETS = {"t5": ModelConfig.t5_small_rec, "llama": ModelConfig.llama_small_rec, "tiny": ModelConfig.tiny}


def load_users(args):
    """The users (all of them, however short their history) and their catalogue."""
    if args.data:
        from genrec.datasets import load_sid_dataset

        return load_sid_dataset(args.data, min_interactions=0)
    from genrec.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(num_items=args.num_items, num_users=args.num_users, num_levels=3,
                                  codebook_size=args.codebook_size, seed=0)


def shard_items(out_dir: Path, num_shards: int) -> list[list[str]]:
    """Each user's recommended items, in job order."""
    items = []
    for shard in range(num_shards):
        with shard_path(out_dir, shard).open(encoding="utf-8") as f:
            items += [json.loads(line)["items"] for line in f]
    return items


def time_job(model, data, args, devices: int, batch_size: int, out_dir: Path) -> dict:
    recommender = Recommender(model, data.vocab, data.sid_codes, data.item_ids, num_beams=args.beams,
                              batch_size=batch_size, max_history=args.history, devices=devices)
    # Warm-up: compile the decode this job calls (the unfiltered or the exclude-seen one).
    warm = [data.sequences[u] for u in range(min(recommender.batch_size, data.num_users))]
    recommender.recommend_rows(warm, top_k=args.top_k, exclude_seen=args.exclude_seen)
    start = time.perf_counter()
    result = run_batch_job(recommender, data, out_dir, top_k=args.top_k, users_per_shard=args.users_per_shard,
                           exclude_seen=args.exclude_seen, log=lambda line: None)
    seconds = time.perf_counter() - start
    return {"devices": recommender.num_devices, "batch": recommender.batch_size,
            "batch_per_device": recommender.batch_size // recommender.num_devices, "users": data.num_users,
            "seconds": seconds, "users_per_s": data.num_users / seconds, "num_shards": result.num_shards}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="t5", choices=sorted(PRESETS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--data", default=None, help="dataset dir (its users and catalogue); default synthetic")
    parser.add_argument("--num-users", type=int, default=100_000, help="synthetic users (without --data)")
    parser.add_argument("--num-items", type=int, default=12_000, help="synthetic items (without --data)")
    parser.add_argument("--codebook-size", type=int, default=32, help="synthetic codes per level")
    parser.add_argument("--batch", type=int, default=512, help="users per decode call on one device")
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--users-per-shard", type=int, default=10_000)
    parser.add_argument("--exclude-seen", action="store_true")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)

    data = load_users(args)
    config = PRESETS[args.preset](data.vocab.vocab_size, data.num_levels, dtype=getattr(jnp, args.dtype))
    model = build_model(config, rngs=nnx.Rngs(0))
    num_devices = jax.local_device_count()
    print(f"jax {jax.__version__} {jax.local_devices()}; {data.num_users} users, {data.num_items} items", flush=True)
    runs = [(1, args.batch)]
    if num_devices > 1:
        runs += [(num_devices, args.batch), (num_devices, args.batch * num_devices)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="batch-job-devices-") as tmp:
        for run, (devices, batch_size) in enumerate(runs):
            out_dir = Path(tmp) / f"run{run}"
            row = {"preset": args.preset, "dtype": args.dtype, **time_job(model, data, args, devices, batch_size,
                                                                        out_dir)}
            items = shard_items(out_dir, row["num_shards"])
            if run == 0:
                reference = items
            row["same_items_fraction"] = sum(a == b for a, b in zip(items, reference)) / len(reference)
            row["speedup"] = row["users_per_s"] / rows[0]["users_per_s"] if rows else 1.0
            rows.append(row)
            print(row, flush=True)
    print("\n| devices | batch (per device) | users | seconds | users/s | vs 1 device | same items |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} | {r['batch']} ({r['batch_per_device']}) | {r['users']:,} | {r['seconds']:.2f} | "
              f"{r['users_per_s']:,.0f} | {r['speedup']:.2f}x | {r['same_items_fraction']:.4f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": jax.local_devices()[0].device_kind, "num_local_devices": num_devices,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
