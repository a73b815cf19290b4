"""Beam pipeline vs the local batch job: users/s on the same workdir and data, in one process.

``genrec recommend --runner beam`` (serving/beam_pipeline.py) against the local
job (serving/batch_job.py, ``--runner local``): both recommend for every user
of the same dataset with the same model and settings, and the script checks
that they wrote the same records. Each row is the wall time of a whole job as
a user runs it (local: load the model and the data, write the shards; Beam:
build the pipeline, read the requests, load the model in the worker, decode,
write the files), after one warm-up decode so that neither pays the compile.
The best of ``--repeats`` runs per row; the Beam rows' ``ratio`` is their
users/s over the local job's (issue 23 asks for at least 0.8 on the GPU).

Fixed cost and steady rate: every runner also serves only the first
``--startup-users`` users (default: one batch), interleaved with the full
runs. A job's time is modelled as ``fixed_s + users / steady_users_per_s``:
``steady_users_per_s = (N - n) / (T_N - T_n)`` is the rate of the users
beyond the first batch, and ``fixed_s`` what remains (pipeline construction
and start, model load, output finalisation). Beam's fixed cost is a few
seconds, so 20,000 users on a GPU (a few seconds of decode) mostly measure
it; ``--num-users 200000`` measures the rate a large job runs at.

Beam sources: ``dataset`` (the ``inter.json`` read on the launcher, as the
local job does, and again by the runner's worker process, which serves
ranges of its users) and ``jsonl`` (the same requests as JSONL,
``--jsonl-files`` files read by the runner in byte ranges: the path for large
jobs). The runner is the job's default, Beam's DirectRunner in this process
with two worker threads, so that one thread's host work overlaps the other's
decode (the user ranges or byte ranges are what the threads share out).
``--pipeline-options`` (repeatable: one set of Beam rows per value) changes
it, e.g. ``--direct_num_workers=1 --direct_running_mode=in_memory`` for
Beam's own default of one thread.

``--host-only`` replaces the decode by a replay of its answer for the batch
shape (computed once): the rows then measure the runners' host work alone,
what bounds the rate where the accelerator decodes fast, on any machine
(the records are the replayed answers, the same for every runner). With
``--device-ms MS`` each replayed call also waits MS milliseconds with the
GIL released, as a decode on an accelerator does: a CPU-only model of a GPU
run that shows how much host work a runner overlaps with the device.

Without ``--workdir``, a random model of ``--preset`` over the synthetic
dataset is written to a temporary workdir (speed does not depend on the
weights' values).

Run (GPU):  PYTHONPATH=. python benchmarks/beam_vs_local.py --workdir runs/beauty --data data_local/Beauty \\
                --out beam_vs_local.json
            PYTHONPATH=. python benchmarks/beam_vs_local.py --preset t5_small_rec --num-users 200000 --repeats 2 \\
                --jsonl-files 4 --out bvl.json
CPU:        PYTHONPATH=. python benchmarks/beam_vs_local.py --preset tiny --num-users 2000 --num-items 500 \\
                --codebook-size 16 --batch-size 256 --repeats 1

``--matmul-precision highest`` decodes both runners at float32 matmul
precision: on a GPU the ``same items`` column should then be 1.0 (at the
default, TF32, a user's items depend on the other users of its batch, and
Beam's batches hold other users than the local job's: docs/serving.md,
"Reproducibility on GPUs").
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import jax
from random_workdir import random_workdir  # benchmarks/ is the script directory, on sys.path

from constrained.decode import MATMUL_PRECISIONS
from genrec.run_files import load_workdir_data
from serving.batch_job import run_batch_job
from serving.beam_pipeline import DIRECT_RUNNER_DEFAULTS, dataset_requests, run_beam_job
from serving.recommender import Recommender
from serving.requests_io import read_requests

# Beam's own default, one thread; without --pipeline-options the job's default (two threads) runs.
ONE_THREAD = "--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=in_memory"


def read_records(out_dir: Path) -> dict[str, dict]:
    """The records of a job's shard files by user (order-free)."""
    records = (json.loads(line) for path in sorted(out_dir.glob("shard-*.jsonl"))
               for line in path.read_text().splitlines())
    return {str(record["user"]): record for record in records}


def agreement(records: dict[str, dict], reference: dict[str, dict]) -> dict[str, float | bool]:
    """How far a run's records are from the local job's: the same users; the share of users with the same
    item list; the largest score difference among those (float noise of other batch compositions)."""
    same_users = records.keys() == reference.keys()
    common = records.keys() & reference.keys()
    same_items = [u for u in common if records[u]["items"] == reference[u]["items"]]
    score_gap = max((abs(a - b) for u in same_items for a, b in zip(records[u]["scores"], reference[u]["scores"])),
                    default=0.0)
    return {"same_users": same_users, "same_items_share": len(same_items) / max(len(common), 1),
            "max_score_diff": float(score_gap), "identical": records == reference}


def run_local(workdir: Path, data_dir: Path, out_dir: Path, args: argparse.Namespace,
              users: list[str] | None = None) -> int:
    """``genrec recommend --runner local`` from Python: model, data, shards. Returns the users served.

    ``users``: serve only these (``--users``), else every user of the dataset."""
    recommender = Recommender.from_workdir(workdir, args.which, num_beams=args.num_beams, batch_size=args.batch_size,
                                           matmul_precision=args.matmul_precision)
    data = load_workdir_data(workdir, data_dir, recommender.vocab, min_interactions=0)
    requests = data if users is None else read_requests(data=data).select_users(users)
    run_batch_job(recommender, requests, out_dir, top_k=args.top_k, users_per_shard=args.users_per_shard,
                  exclude_seen=args.exclude_seen, log=lambda line: None)
    return data.num_users if users is None else len(users)


def run_beam(workdir: Path, data_dir: Path, out_dir: Path, source: str, requests: str, options: str,
             args: argparse.Namespace, users: list[str] | None = None) -> int:
    """``genrec recommend --runner beam`` from Python, on the dataset (only ``users`` when given) or on
    JSONL request files (``requests``, a glob)."""
    result = run_beam_job(
        workdir, out_dir, requests=requests if source == "jsonl" else None,
        users=users if source == "dataset" else None, data=data_dir if source == "dataset" else None,
        which=args.which, top_k=args.top_k, num_beams=args.num_beams, batch_size=args.batch_size,
        matmul_precision=args.matmul_precision, exclude_seen=args.exclude_seen,
        pipeline_options=shlex.split(options), log=lambda line: None)
    if result.num_dead_letter:
        raise RuntimeError(f"{result.num_dead_letter} requests failed; see {out_dir}/dead-letter-*.jsonl")
    return result.num_recommended


def write_jsonl(requests: list[dict], directory: Path, num_files: int) -> str:
    """The requests as ``num_files`` JSONL files (consecutive users in each) under ``directory``; their glob."""
    directory.mkdir(parents=True)
    per_file = -(-len(requests) // num_files)
    for k in range(num_files):
        part = requests[k * per_file:(k + 1) * per_file]
        (directory / f"part-{k:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return str(directory / "part-*.jsonl")


def steady_state(users: int, seconds: float, startup_users: int, startup_seconds: float) -> tuple[float, float]:
    """``(fixed_s, steady_users_per_s)`` of the model ``T(n) = fixed_s + n / steady_users_per_s`` through a full
    run and a startup run; ``(nan, nan)`` when the full run was not the slower one (noise)."""
    if users <= startup_users or seconds <= startup_seconds:
        return float("nan"), float("nan")
    rate = (users - startup_users) / (seconds - startup_seconds)
    return startup_seconds - startup_users / rate, rate


def replay_decode(device_seconds: float = 0.0) -> None:
    """``--host-only``: ``serving.recommender.decode_batch`` answers every batch of a shape with its first
    answer (host arrays), so no time goes to the model; each call then sleeps ``device_seconds`` (the GIL
    released), as a thread waiting for an accelerator does."""
    import numpy as np

    import serving.recommender

    decode = serving.recommender.decode_batch
    answers = {}

    def replayed(graphdef, state, index, tokens, mask, *args, **kwargs):
        if tokens.shape not in answers:
            output = decode(graphdef, state, index, tokens, mask, *args, **kwargs)
            answers[tokens.shape] = SimpleNamespace(item_ids=np.asarray(output.item_ids),
                                                    scores=np.asarray(output.scores))
        elif device_seconds:
            time.sleep(device_seconds)
        return answers[tokens.shape]

    serving.recommender.decode_batch = replayed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None, help="trained workdir; default: a random --preset model")
    parser.add_argument("--data", default=None, help="dataset dir (default: the workdir's, or the synthetic one)")
    parser.add_argument("--preset", default="t5_small_rec", choices=["tiny", "t5_small_rec", "llama_small_rec"])
    parser.add_argument("--num-users", type=int, default=20000,
                        help="synthetic users (without --workdir); 200000 for the steady rate on a GPU")
    parser.add_argument("--num-items", type=int, default=12000, help="synthetic items (without --workdir)")
    parser.add_argument("--codebook-size", type=int, default=256, help="synthetic codebook size per level")
    parser.add_argument("--max-history", type=int, default=20)
    parser.add_argument("--which", default="best", choices=["best", "latest"])
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--num-beams", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=512, help="users per decode call, both runners")
    parser.add_argument("--users-per-shard", type=int, default=10000, help="the local job's shard size")
    parser.add_argument("--exclude-seen", action="store_true")
    parser.add_argument("--matmul-precision", default="default", choices=MATMUL_PRECISIONS,
                        help="the decode's float32 matmul precision, both runners (genrec recommend "
                        "--matmul-precision): at highest a GPU gives each user the same items in any batch")
    parser.add_argument("--sources", default="dataset,jsonl", help="Beam request sources: dataset, jsonl")
    parser.add_argument("--jsonl-files", type=int, default=1, help="files the jsonl source's requests are split into")
    parser.add_argument("--startup-users", type=int, default=None,
                        help="users of the short run that separates the fixed cost (default: --batch-size; "
                        "0: no short runs)")
    parser.add_argument("--pipeline-options", action="append", default=None,
                        help="Beam pipeline options, one string; repeat it for more sets of Beam rows (default: "
                        f"none, the job's DirectRunner settings {' '.join(DIRECT_RUNNER_DEFAULTS)}; "
                        f"Beam's one thread: {ONE_THREAD!r})")
    parser.add_argument("--host-only", action="store_true",
                        help="replay one decode answer per batch shape: time the runners' host work alone")
    parser.add_argument("--device-ms", type=float, default=0.0,
                        help="with --host-only: each decode call waits this long, the GIL released (a GPU's decode)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the best counts")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    sources = args.sources.split(",")
    if not set(sources) <= {"dataset", "jsonl"}:
        parser.error(f"--sources {args.sources}: use dataset and/or jsonl")
    option_sets = args.pipeline_options or [""]
    startup_users = args.batch_size if args.startup_users is None else args.startup_users
    if args.host_only:
        replay_decode(args.device_ms / 1000)
    elif args.device_ms:
        parser.error("--device-ms models the device of a --host-only run; add --host-only")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.workdir is None:
            workdir, data_dir = random_workdir(tmp, args)
        else:
            workdir, data_dir = Path(args.workdir), None if args.data is None else Path(args.data)
        all_requests = dataset_requests(workdir, data_dir)
        startup_users = min(startup_users, len(all_requests))
        first_users = [request["user_id"] for request in all_requests[:startup_users]]
        requests = {"full": write_jsonl(all_requests, tmp / "requests", args.jsonl_files),
                    "startup": write_jsonl(all_requests[:startup_users], tmp / "startup", 1)}
        # Warm-up: compile the decode of these shapes once, outside every timed run.
        warm = Recommender.from_workdir(workdir, args.which, num_beams=args.num_beams, batch_size=args.batch_size,
                                        matmul_precision=args.matmul_precision)
        warm.recommend([[]], top_k=args.top_k, exclude_seen=args.exclude_seen)
        print(f"jax {jax.__version__} {jax.devices()}; {warm.num_items} items, {len(all_requests)} users, "
              f"batch {args.batch_size}, matmul precision {args.matmul_precision}"
              f"{'; host only (decode replayed)' if args.host_only else ''}"
              f"{f', {args.device_ms} ms a call' if args.device_ms else ''}", flush=True)

        runs = {"local": lambda out, size: run_local(workdir, data_dir, out, args,
                                                     None if size == "full" else first_users)}
        labels = {"local": None}
        for k, options in enumerate(option_sets):
            for source in sources:
                name = f"beam_{source}" + (f"@{k}" if k else "")
                labels[name] = options or f"(the job's default: {' '.join(DIRECT_RUNNER_DEFAULTS)})"
                runs[name] = lambda out, size, source=source, options=options: run_beam(
                    workdir, data_dir, out, source, requests[size], options, args,
                    None if size == "full" else first_users)
        sizes = ["full", "startup"] if startup_users else ["full"]
        seconds = {(name, size): [] for name in runs for size in sizes}
        users = {}
        records = {}
        for repeat in range(args.repeats):
            for name, run in runs.items():  # interleaved, so drift in the machine hits every row alike
                for size in sizes:
                    out = tmp / f"{name}-{size}-{repeat}"
                    start = time.perf_counter()
                    users[name, size] = run(out, size)
                    seconds[name, size].append(time.perf_counter() - start)
                    if size == "full":
                        records[name] = read_records(out)
        rows = []
        for name in runs:
            best = min(seconds[name, "full"])
            row = {"runner": name, "pipeline_options": labels[name], "users": users[name, "full"], "seconds": best,
                   "users_per_s": users[name, "full"] / best, "all_seconds": seconds[name, "full"]}
            if startup_users:
                startup_best = min(seconds[name, "startup"])
                fixed, rate = steady_state(row["users"], best, users[name, "startup"], startup_best)
                row.update(startup_users=users[name, "startup"], startup_seconds=startup_best,
                           all_startup_seconds=seconds[name, "startup"], fixed_s=fixed, steady_users_per_s=rate)
            rows.append({**row, **agreement(records[name], records["local"])})
        for row in rows:
            row["ratio"] = row["users_per_s"] / rows[0]["users_per_s"]
            if startup_users:
                row["steady_ratio"] = row["steady_users_per_s"] / rows[0]["steady_users_per_s"]
            print(row, flush=True)
    print("\n| runner | users | seconds | users/s | ratio to local | fixed s | steady users/s | steady ratio "
          "| same users | same items | max score diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        steady = (f"{r['fixed_s']:.2f} | {r['steady_users_per_s']:,.0f} | {r['steady_ratio']:.3f}" if startup_users
                  else "- | - | -")
        print(f"| {r['runner']} | {r['users']} | {r['seconds']:.2f} | {r['users_per_s']:,.0f} | {r['ratio']:.3f} | "
              f"{steady} | {r['same_users']} | {r['same_items_share']:.4f} | {r['max_score_diff']:.1e} |")
    for name, options in labels.items():
        if options is not None:
            print(f"{name}: {options}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "host_only": args.host_only,
                       "device_ms": args.device_ms,
                       "batch_size": args.batch_size, "num_beams": args.num_beams, "top_k": args.top_k,
                       "matmul_precision": args.matmul_precision,
                       "workdir": args.workdir, "jsonl_files": args.jsonl_files, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
