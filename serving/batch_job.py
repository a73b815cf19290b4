"""Offline batch recommendation: top-k items for every user of a dataset, in resumable shards.

Where it sits: checkpoint -> index -> decode -> **serve** (offline). Users are
taken in dataset order and cut into shards of ``users_per_shard``; shard ``s``
is written to ``OUT/shard-{s:05d}.jsonl``, one line per user::

    {"user": "A1B2", "items": ["item7", "item3", ...], "scores": [-1.23, -2.5, ...]}

(best first; only valid slots, so a line can hold fewer than ``top_k`` items
when a filter leaves few). Each user's history is their whole interaction
sequence: the job recommends what comes *after* everything in the data.

Crash safety: a shard goes to a temporary file in ``OUT`` that is fsynced and
``os.replace``-d into place, then ``OUT/manifest.json`` (also written
atomically) records it as complete, with its size and SHA-256. A job killed at
any moment leaves only complete shards and a manifest that lists a subset of
them; running the same command again verifies the listed shards (a missing,
truncated or altered one is written again), skips the good ones and produces
exactly the files an uninterrupted run would have.

Identity: the manifest binds the job to the model (checkpoint, step and a
digest of its weights: :attr:`Recommender.model_identity`), to the input (a
digest of the user ids and their histories: :func:`input_digest`) and to the
settings (users per shard, ``top_k``, filters, catalogue, checkpoint). A rerun
after the workdir was retrained, with changed histories, or with other
settings is refused with one line saying what changed, rather than mixing two
jobs' outputs (docs/serving.md).

Command line (also ``genrec recommend``)::

    python -m serving.batch_job --workdir runs/demo --out runs/demo/recs [--data DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genrec.atomic_files import atomic_open, write_json_atomic
from genrec.console import UserError, run_command
from genrec.datasets import MIN_INTERACTIONS, InteractionData
from genrec.locks import DirectoryLock
from genrec.progress import progress_bar
from genrec.run_files import catalogue_fingerprint, load_workdir_data
from serving.recommender import Recommender

__all__ = ["BatchJobResult", "input_digest", "main", "run_batch_job", "shard_path"]

MANIFEST_FILE = "manifest.json"
_MANIFEST_KIND = "genrec.batch_job"
# 2: the model's and the input's identity, and each shard's size and SHA-256 (version 1 had neither).
MANIFEST_FORMAT_VERSION = 2
_REFUSAL_FIX = "use another output directory or delete this one"


@dataclasses.dataclass(frozen=True)
class BatchJobResult:
    """What one invocation of :func:`run_batch_job` did.

    Attributes:
      out_dir: the output directory.
      num_shards: shards of the whole job.
      shards_written: shards written by this invocation.
      shards_skipped: shards already complete from an earlier invocation.
      finished: every shard is complete.
    """

    out_dir: Path
    num_shards: int
    shards_written: int
    shards_skipped: int
    finished: bool


def shard_path(out_dir: str | Path, shard: int) -> Path:
    """``OUT/shard-00007.jsonl``."""
    return Path(out_dir) / f"shard-{shard:05d}.jsonl"


def input_digest(data: InteractionData) -> str:
    """``sha256:<hex>`` of the users and their histories as the job serves them.

    Covers the user ids in order and each user's history as item ids (the
    item id table, each history's length and its item rows), so a dataset whose
    users or histories changed gets another digest, whatever its name.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([str(user) for user in data.user_ids]).encode())
    digest.update(json.dumps(np.asarray(data.item_ids).astype(str).tolist()).encode())
    lengths = np.fromiter((len(sequence) for sequence in data.sequences), dtype="<i8", count=data.num_users)
    digest.update(lengths.tobytes())
    if data.num_users:
        digest.update(np.concatenate([np.asarray(s, dtype="<i8") for s in data.sequences]).tobytes())
    return "sha256:" + digest.hexdigest()


def _file_record(payload: bytes) -> dict[str, Any]:
    """A shard's entry in the manifest: ``{"bytes": int, "sha256": "sha256:<hex>"}``."""
    return {"bytes": len(payload), "sha256": "sha256:" + hashlib.sha256(payload).hexdigest()}


def _shard_fault(path: Path, record: dict[str, Any] | None) -> str | None:
    """Why a shard the manifest lists as complete cannot be kept, or None when it is intact."""
    if record is None:
        return "listed without a checksum"
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != record["bytes"]:
        return (f"{'truncated' if size < record['bytes'] else 'extended'} ({size} bytes, the manifest "
                f"records {record['bytes']})")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if "sha256:" + digest.hexdigest() != record["sha256"]:
        return "altered (its SHA-256 differs from the manifest's)"
    return None


def _short(digest: str) -> str:
    """``sha256:ab12cd34ef56..``: enough of a digest to tell two apart in a message."""
    return digest[:len("sha256:") + 12] + ".."


def _describe_model(identity: dict[str, Any]) -> str:
    if identity.get("checkpoint") is None:
        return f"a model with params {_short(identity['params'])}"
    return f"checkpoint {identity['checkpoint']!r} step {identity['step']} (params {_short(identity['params'])})"


def _check_identity(manifest_path: Path, manifest: dict[str, Any], model: dict[str, Any],
                    data_input: dict[str, Any], settings: dict[str, Any]) -> None:
    """Refuses to resume a job of another model, input or settings, with one line saying what changed."""
    there = manifest["model"]
    if there != model:
        if there.get("checkpoint") is not None and there.get("checkpoint") == model.get("checkpoint"):
            now = (f"the workdir's {model['checkpoint']} is now step {model['step']} "
                   f"(params {_short(model['params'])})")
        else:
            now = f"this run has {_describe_model(model)}"
        raise ValueError(f"{manifest_path}: this directory holds a job of {_describe_model(there)}; {now}: "
                         f"{_REFUSAL_FIX}")
    there = manifest["input"]
    if there != data_input:
        raise ValueError(
            f"{manifest_path}: this directory holds a job over input {_short(there['sha256'])} "
            f"({there['num_users']} users of dataset {there['dataset']!r}); the input now is "
            f"{_short(data_input['sha256'])} ({data_input['num_users']} users of dataset "
            f"{data_input['dataset']!r}): its users or their histories changed; {_REFUSAL_FIX}"
        )
    there = manifest["settings"]
    if there != settings:
        changed = sorted(k for k in settings.keys() | there.keys() if there.get(k) != settings.get(k))
        raise ValueError(
            f"{manifest_path}: this directory holds a job with other settings ({', '.join(changed)}: "
            f"{[there.get(k) for k in changed]} there, {[settings.get(k) for k in changed]} now); {_REFUSAL_FIX}"
        )


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON ({e}); delete the output directory and rerun") from e
    if not isinstance(manifest, dict) or manifest.get("kind") != _MANIFEST_KIND:
        raise ValueError(f"{path} is not a genrec batch-job manifest; use an empty output directory")
    if manifest.get("format_version") != MANIFEST_FORMAT_VERSION:
        raise ValueError(
            f"{path}: a batch-job manifest of format version {manifest.get('format_version')}, but this genrec "
            f"resumes only version {MANIFEST_FORMAT_VERSION} (it binds the job to the model, the input and "
            f"each shard's checksum); {_REFUSAL_FIX}"
        )
    return manifest


def run_batch_job(
    recommender: Recommender,
    data: InteractionData,
    out_dir: str | Path,
    *,
    top_k: int = 10,
    users_per_shard: int = 1000,
    exclude_seen: bool = False,
    skip_unknown: bool = False,
    max_shards: int | None = None,
    job_info: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> BatchJobResult:
    """Writes top-``top_k`` recommendations of every user of ``data`` (format: module docstring).

    Args:
      recommender: the model and catalogue.
      data: the users; their item ids are looked up in the recommender's catalogue.
      out_dir: output directory (created); resumes the job found there.
      top_k: items per user (``<= recommender.num_beams``).
      users_per_shard: users per shard file.
      exclude_seen: never recommend an item of the user's history.
      skip_unknown: drop history items missing from the catalogue instead of failing.
      max_shards: write at most this many shards in this invocation, then
        return (``finished=False`` if shards remain); for time-boxed runs and
        for testing resumption.
      job_info: extra settings recorded in the manifest and checked on resume
        (e.g. the checkpoint it ran).
      log: where progress lines go.

    Raises:
      ValueError: the output directory holds a job of another model
        (:attr:`Recommender.model_identity`), another input
        (:func:`input_digest`) or other settings, or of an older manifest
        format; or unknown history items without ``skip_unknown``.
    """
    if users_per_shard < 1:
        raise ValueError(f"users_per_shard={users_per_shard} must be >= 1")
    out_dir = Path(out_dir)
    # One job per output directory: two would overwrite each other's shards and manifest.
    # The lock creates the directory.
    with DirectoryLock(out_dir, "genrec recommend"):
        num_users = data.num_users
        num_shards = -(-num_users // users_per_shard)
        settings = {
            "dataset": data.name,
            "num_users": num_users,
            "users_per_shard": users_per_shard,
            "top_k": top_k,
            "exclude_seen": exclude_seen,
            "skip_unknown": skip_unknown,
            "num_beams": recommender.num_beams,
            "max_history": recommender.max_history,
            # The catalogue's identity: a job never mixes the items of two catalogues.
            "catalogue": catalogue_fingerprint(recommender.item_ids, recommender.sid_codes),
            **(job_info or {}),
        }
        model = recommender.model_identity
        data_input = {"dataset": data.name, "num_users": num_users, "sha256": input_digest(data)}
        manifest_path = out_dir / MANIFEST_FILE
        manifest = _read_manifest(manifest_path)
        # Shard file name -> {"bytes", "sha256"} of each complete shard.
        shard_files: dict[str, dict[str, Any]] = {}
        completed: set[int] = set()
        if manifest is not None:
            _check_identity(manifest_path, manifest, model, data_input, settings)
            for shard in sorted(manifest["completed"]):
                name = shard_path(out_dir, shard).name
                fault = _shard_fault(shard_path(out_dir, shard), manifest["shards"].get(name))
                if fault is None:
                    completed.add(shard)
                    shard_files[name] = manifest["shards"][name]
                else:
                    log(f"{name} is {fault}; writing it again")

        # Data item row -> recommender row, once for the whole catalogue.
        rec_row_of_data_row = recommender.lookup_rows(data.item_ids.tolist())
        unknown = np.flatnonzero(rec_row_of_data_row < 0)
        if unknown.size and not skip_unknown:
            used = np.zeros(data.num_items, bool)
            for sequence in data.sequences:
                used[sequence] = True
            unknown_used = unknown[used[unknown]]
            if unknown_used.size:
                shown = ", ".join(repr(str(data.item_ids[r])) for r in unknown_used[:5])
                raise ValueError(
                    f"{unknown_used.size} item(s) of the histories in dataset {data.name!r} are not in the "
                    f"model's catalogue, e.g. {shown}; pass skip_unknown=True (--skip-unknown) to drop them"
                )

        def write_manifest(finished: bool) -> None:
            write_json_atomic(manifest_path, {
                "kind": _MANIFEST_KIND, "format_version": MANIFEST_FORMAT_VERSION, "model": model,
                "input": data_input, "settings": settings, "num_shards": num_shards,
                "completed": sorted(completed), "shards": dict(sorted(shard_files.items())), "finished": finished,
            }, indent=1)

        write_manifest(len(completed) == num_shards)
        skipped = len(completed)
        if skipped:
            log(f"resuming: {skipped} of {num_shards} shards already complete in {out_dir}")
        written = 0
        users_done = sum(min(users_per_shard, num_users - s * users_per_shard) for s in completed)
        job_start = time.perf_counter()
        # Counted in users, not shards: a job is often a handful of shards, and users/s is the rate to watch.
        bar = progress_bar(num_users, desc="recommend", unit="user", initial=users_done)
        for shard in range(num_shards):
            if shard in completed:
                continue
            if max_shards is not None and written >= max_shards:
                break
            shard_start = time.perf_counter()
            first, last = shard * users_per_shard, min((shard + 1) * users_per_shard, num_users)
            histories = [rec_row_of_data_row[data.sequences[u]] for u in range(first, last)]
            recs = recommender.recommend_rows(histories, top_k=top_k, exclude_seen=exclude_seen)
            lines = []
            for offset, user in enumerate(range(first, last)):
                keep = recs.valid[offset]
                lines.append(json.dumps({
                    "user": data.user_ids[user],
                    "items": [str(i) for i in recs.item_ids[offset][keep].tolist()],
                    "scores": [round(float(s), 6) for s in recs.scores[offset][keep]],
                }))
            # Shard first, then the manifest that records it (with the bytes' checksum).
            payload = ("\n".join(lines) + "\n").encode("utf-8")
            with atomic_open(shard_path(out_dir, shard), "wb") as f:
                f.write(payload)
            shard_files[shard_path(out_dir, shard).name] = _file_record(payload)
            completed.add(shard)
            write_manifest(len(completed) == num_shards)
            written += 1
            users_done += last - first
            bar.update(last - first)
            seconds = time.perf_counter() - shard_start
            log(f"shard {shard + 1}/{num_shards}: {last - first} users in {seconds:.2f} s "
                f"({(last - first) / max(seconds, 1e-9):.0f} users/s); {users_done}/{num_users} users done, "
                f"{time.perf_counter() - job_start:.1f} s")
        bar.close()
        finished = len(completed) == num_shards
        if finished:
            cold = sum(len(sequence) < MIN_INTERACTIONS for sequence in data.sequences)
            log(f"done: {num_users} users ({cold} with fewer than {MIN_INTERACTIONS} interactions, "
                f"served from what they have) in {num_shards} shards under {out_dir}")
        else:
            log(f"stopped after {written} shards; {num_shards - len(completed)} remain, "
                "rerun the same command to resume")
        return BatchJobResult(out_dir=out_dir, num_shards=num_shards, shards_written=written,
                              shards_skipped=skipped, finished=finished)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def build_parser(prog: str = "python -m serving.batch_job") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Recommend top-k items for every user of a dataset with a trained model; writes "
        "resumable JSONL shards (rerun the same command to resume an interrupted job).",
    )
    parser.add_argument("--workdir", required=True, help="training workdir (genrec train / genrec demo)")
    parser.add_argument("--out", required=True, help="output directory for shard-NNNNN.jsonl + manifest.json")
    parser.add_argument("--data", default=None,
                        help="dataset directory (docs/data.md); default: the dataset the model was trained on")
    parser.add_argument("--which", choices=("best", "latest"), default="best", help="checkpoint to load")
    parser.add_argument("--top-k", type=int, default=10, help="items per user (default 10)")
    parser.add_argument("--num-beams", type=int, default=20, help="beam width, >= top-k (default 20)")
    parser.add_argument("--batch-size", type=int, default=256, help="users per decode call (default 256)")
    parser.add_argument("--users-per-shard", type=int, default=1000, help="users per output file (default 1000)")
    parser.add_argument("--exclude-seen", action="store_true", help="never recommend an item the user has seen")
    parser.add_argument("--skip-unknown", action="store_true",
                        help="drop history items missing from the model's catalogue instead of failing")
    parser.add_argument("--max-shards", type=int, default=None,
                        help="write at most this many shards, then stop (resume later)")
    parser.add_argument("--runner", choices=("local", "beam"), default="local",
                        help="local: this resumable job (default); beam: the Apache Beam pipeline "
                        "(serving/beam_pipeline.py, docs/serving.md)")
    parser.add_argument("pipeline_options", nargs="*", metavar="-- OPTION",
                        help="with --runner beam, after --: --requests PATTERN, --output-format jsonl|parquet "
                        "and Beam pipeline options (default runner: DirectRunner)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m serving.batch_job") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.top_k > args.num_beams:
        raise UserError(f"--top-k {args.top_k} exceeds --num-beams {args.num_beams}; raise --num-beams to at least "
                        f"{args.top_k} or lower --top-k")
    if args.runner == "beam":
        try:
            from serving.beam_pipeline import run_from_args  # lazily: apache-beam is an optional extra
        except ModuleNotFoundError as error:
            if error.name != "apache_beam":
                raise
            raise UserError('--runner beam needs apache-beam: pip install -e ".[beam]"') from None
        return run_from_args(args, args.pipeline_options)
    if args.pipeline_options:
        raise UserError(f"unexpected arguments {' '.join(args.pipeline_options)}: options after -- are for "
                        "--runner beam")
    recommender = Recommender.from_workdir(args.workdir, args.which, num_beams=args.num_beams,
                                           batch_size=args.batch_size)
    # Every user of the input is served: the 3-interaction minimum is leave-one-out's, not serving's.
    data = load_workdir_data(args.workdir, args.data, recommender.vocab, min_interactions=0)
    result = run_batch_job(
        recommender, data, args.out, top_k=args.top_k, users_per_shard=args.users_per_shard,
        exclude_seen=args.exclude_seen, skip_unknown=args.skip_unknown, max_shards=args.max_shards,
        job_info={"workdir": str(Path(args.workdir).resolve()), "checkpoint": args.which},
        log=lambda line: print(line, flush=True),
    )
    return 0 if result.finished or args.max_shards is not None else 1


if __name__ == "__main__":
    sys.exit(run_command("python -m serving.batch_job", main))
