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

Beam sources: ``dataset`` (the ``inter.json`` read on the launcher, as the
local job does) and ``jsonl`` (the same requests as a JSONL file, read by the
runner: the path for large jobs). The runner is Beam's DirectRunner in this
process (``--pipeline-options`` to change it).

Without ``--workdir``, a random model of ``--preset`` over the synthetic
dataset is written to a temporary workdir (speed does not depend on the
weights' values).

Run (GPU):  PYTHONPATH=. python benchmarks/beam_vs_local.py --workdir runs/beauty --data data_local/Beauty \\
                --out beam_vs_local.json
            PYTHONPATH=. python benchmarks/beam_vs_local.py --preset t5_small_rec --num-users 20000 --out bvl.json
CPU smoke:  PYTHONPATH=. python benchmarks/beam_vs_local.py --preset tiny --num-users 40 --num-items 60 \\
                --batch-size 16 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path

import jax
from flax import nnx

from genrec.datasets import write_sid_dataset
from genrec.models import ModelConfig, build_model
from genrec.run_files import load_workdir_data
from genrec.synthetic import make_synthetic_dataset
from serving.batch_job import run_batch_job
from serving.beam_pipeline import dataset_requests, run_beam_job
from serving.recommender import Recommender

DIRECT_RUNNER = "--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=in_memory"


def random_workdir(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """``(workdir, data_dir)``: a random ``--preset`` model over the synthetic dataset, checkpointed as 'best'."""
    from training.checkpoint import Checkpointer, TrainingProgress, write_run_files
    from training.config import CheckpointConfig, DataConfig, TrainConfig

    data = make_synthetic_dataset(num_items=args.num_items, num_users=args.num_users, num_levels=3,
                                  codebook_size=args.codebook_size, seed=0)
    preset = getattr(ModelConfig, args.preset)
    config = preset(data.vocab.vocab_size, data.num_levels, **({} if args.preset != "tiny" else
                                                                {"num_encoder_layers": 1, "num_decoder_layers": 1}))
    model = build_model(config, rngs=nnx.Rngs(0))
    workdir, data_dir = root / "run", root / "data"
    write_run_files(workdir, TrainConfig(data=DataConfig(max_history=args.max_history)), config, data.vocab,
                    data.sid_codes, data.item_ids)
    checkpointer = Checkpointer(workdir, CheckpointConfig(async_save=False))
    checkpointer.save_best(nnx.state(model, nnx.Param), TrainingProgress(step=1, data_step=1, rng_key=(0, 0)),
                           {"ndcg@10": 0.0})
    checkpointer.close()
    write_sid_dataset(data, data_dir, "synthetic")
    return workdir, data_dir


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


def run_local(workdir: Path, data_dir: Path, out_dir: Path, args: argparse.Namespace) -> int:
    """``genrec recommend --runner local`` from Python: model, data, shards. Returns the users served."""
    recommender = Recommender.from_workdir(workdir, args.which, num_beams=args.num_beams, batch_size=args.batch_size)
    data = load_workdir_data(workdir, data_dir, recommender.vocab, min_interactions=0)
    run_batch_job(recommender, data, out_dir, top_k=args.top_k, users_per_shard=args.users_per_shard,
                  exclude_seen=args.exclude_seen, log=lambda line: None)
    return data.num_users


def run_beam(workdir: Path, data_dir: Path, out_dir: Path, source: str, requests: Path,
             args: argparse.Namespace) -> int:
    """``genrec recommend --runner beam`` from Python, on the dataset or on a JSONL request file."""
    result = run_beam_job(
        workdir, out_dir, requests=str(requests) if source == "jsonl" else None,
        data=data_dir if source == "dataset" else None, which=args.which, top_k=args.top_k,
        num_beams=args.num_beams, batch_size=args.batch_size, exclude_seen=args.exclude_seen,
        pipeline_options=shlex.split(args.pipeline_options), log=lambda line: None)
    if result.num_dead_letter:
        raise RuntimeError(f"{result.num_dead_letter} requests failed; see {out_dir}/dead-letter-*.jsonl")
    return result.num_recommended


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None, help="trained workdir; default: a random --preset model")
    parser.add_argument("--data", default=None, help="dataset dir (default: the workdir's, or the synthetic one)")
    parser.add_argument("--preset", default="t5_small_rec", choices=["tiny", "t5_small_rec", "llama_small_rec"])
    parser.add_argument("--num-users", type=int, default=20000, help="synthetic users (without --workdir)")
    parser.add_argument("--num-items", type=int, default=12000, help="synthetic items (without --workdir)")
    parser.add_argument("--codebook-size", type=int, default=256, help="synthetic codebook size per level")
    parser.add_argument("--max-history", type=int, default=20)
    parser.add_argument("--which", default="best", choices=["best", "latest"])
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--num-beams", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=512, help="users per decode call, both runners")
    parser.add_argument("--users-per-shard", type=int, default=10000, help="the local job's shard size")
    parser.add_argument("--exclude-seen", action="store_true")
    parser.add_argument("--sources", default="dataset,jsonl", help="Beam request sources: dataset, jsonl")
    parser.add_argument("--pipeline-options", default=DIRECT_RUNNER, help="Beam pipeline options, one string")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the best counts")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    sources = args.sources.split(",")
    if not set(sources) <= {"dataset", "jsonl"}:
        parser.error(f"--sources {args.sources}: use dataset and/or jsonl")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.workdir is None:
            workdir, data_dir = random_workdir(tmp, args)
        else:
            workdir, data_dir = Path(args.workdir), None if args.data is None else Path(args.data)
        requests = tmp / "requests.jsonl"
        requests.write_text("".join(json.dumps(r) + "\n" for r in dataset_requests(workdir, data_dir)))
        # Warm-up: compile the decode of these shapes once, outside every timed run.
        warm = Recommender.from_workdir(workdir, args.which, num_beams=args.num_beams, batch_size=args.batch_size)
        warm.recommend([[]], top_k=args.top_k, exclude_seen=args.exclude_seen)
        print(f"jax {jax.__version__} {jax.devices()}; {warm.num_items} items, batch {args.batch_size}", flush=True)

        runs = {"local": lambda out: run_local(workdir, data_dir, out, args)}
        for source in sources:
            runs[f"beam_{source}"] = lambda out, source=source: run_beam(workdir, data_dir, out, source, requests, args)
        seconds = {name: [] for name in runs}
        users = {}
        records = {}
        for repeat in range(args.repeats):
            for name, run in runs.items():  # interleaved, so drift in the machine hits every row alike
                out = tmp / f"{name}-{repeat}"
                start = time.perf_counter()
                users[name] = run(out)
                seconds[name].append(time.perf_counter() - start)
                records[name] = read_records(out)
        rows = []
        for name in runs:
            best = min(seconds[name])
            rows.append({"runner": name, "users": users[name], "seconds": best, "users_per_s": users[name] / best,
                         "all_seconds": seconds[name], **agreement(records[name], records["local"])})
        for row in rows:
            row["ratio"] = row["users_per_s"] / rows[0]["users_per_s"]
            print(row, flush=True)
    print("\n| runner | users | seconds | users/s | ratio to local | same users | same items | max score diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['runner']} | {r['users']} | {r['seconds']:.2f} | {r['users_per_s']:,.0f} | {r['ratio']:.3f} | "
              f"{r['same_users']} | {r['same_items_share']:.4f} | {r['max_score_diff']:.1e} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "batch_size": args.batch_size,
                       "num_beams": args.num_beams, "top_k": args.top_k, "workdir": args.workdir,
                       "pipeline_options": args.pipeline_options, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
