"""Offline batch recommendation: top-k items for every user of a dataset, in resumable shards.

Where it sits: checkpoint -> index -> decode -> **serve** (offline). Users are
taken in input order and cut into shards of ``users_per_shard``; shard ``s``
is written to ``OUT/shard-{s:05d}.jsonl`` (or ``.parquet``), one record per user::

    {"user": "A1B2", "items": ["item7", "item3", ...], "scores": [-1.23, -2.5, ...]}

(best first; only valid slots, so a record can hold fewer than ``top_k`` items
when a filter leaves few; with item fields, one list per field beside
``items``). The input is a dataset (each user's history is their whole
interaction sequence: the job recommends what comes *after* everything in the
data) or a request table (JSONL, Parquet: user, history, optional allow and
exclude item lists; ``serving.requests_io``), optionally cut to a list of users.

Crash safety: a shard goes to a temporary file in ``OUT`` that is fsynced and
``os.replace``-d into place, then ``OUT/manifest.json`` (also written
atomically) records it as complete, with its size and SHA-256. A job killed at
any moment leaves only complete shards and a manifest that lists a subset of
them; running the same command again verifies the listed shards (a missing,
truncated or altered one is written again), skips the good ones and produces
exactly the files an uninterrupted run would have.

Identity: the manifest binds the job to the model (checkpoint, step and a
digest of its weights: :attr:`Recommender.model_identity`), to the input (a
digest of the user ids, their histories and item lists: :func:`input_digest`;
and of the item fields' values) and to the settings (users per shard,
``top_k``, filters, catalogue, checkpoint, output format, matmul precision). A rerun
after the workdir was retrained, with changed histories, or with other
settings is refused with one line saying what changed, rather than mixing two
jobs' outputs (docs/serving.md).

Command line (also ``genrec recommend``)::

    python -m serving.batch_job --workdir runs/demo --out runs/demo/recs [--data DIR] [--requests FILE]
        [--users FILE] [--item-fields title,...] [--output-format jsonl|parquet]
        [--matmul-precision default|high|highest] [--runner local|beam] [-- <Beam pipeline options>]

``--runner beam`` runs the same requests, flags and records on Apache Beam
(:mod:`serving.beam_pipeline`); only Beam's own options go after ``--``.
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

from constrained.decode import MATMUL_PRECISIONS
from genrec.atomic_files import atomic_open, write_json_atomic
from genrec.console import UserError, int_at_least, run_command
from genrec.datasets import MIN_INTERACTIONS, InteractionData
from genrec.locks import DirectoryLock
from genrec.progress import progress_bar
from genrec.run_files import catalogue_fingerprint, load_workdir_data
from serving.recommender import Recommender
from serving.requests_io import (
    OUTPUT_FORMATS,
    ItemFields,
    OutputFormat,
    RequestTable,
    check_requests_catalogue,
    check_table_catalogue,
    encode_records,
    load_item_fields,
    parse_item_fields,
    read_requests,
    read_user_list,
    recommendation_records,
    requests_digest,
    workdir_item_file,
)

__all__ = ["BatchJobResult", "input_digest", "main", "run_batch_job", "shard_path"]

MANIFEST_FILE = "manifest.json"
_MANIFEST_KIND = "genrec.batch_job"
# 2: the model's and the input's identity, and each shard's size and SHA-256 (version 1 had neither).
MANIFEST_FORMAT_VERSION = 2
_REFUSAL_FIX = "use another output directory or delete this one"
DEFAULT_USERS_PER_SHARD = 1000


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


def shard_path(out_dir: str | Path, shard: int, output_format: OutputFormat = "jsonl") -> Path:
    """``OUT/shard-00007.jsonl`` (or ``.parquet``)."""
    return Path(out_dir) / f"shard-{shard:05d}.{output_format}"


def input_digest(data: InteractionData | RequestTable) -> str:
    """``sha256:<hex>`` of the users and their requests as the job serves them.

    Covers the user ids in order and each user's history as item ids (the
    item id table, each history's length and its item rows), and the allow and
    exclude lists where there are any (:func:`serving.requests_io.requests_digest`),
    so an input whose users, histories or lists changed gets another digest,
    whatever its name.
    """
    return requests_digest(data if isinstance(data, RequestTable) else RequestTable.from_interactions(data))


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
    requests_keys = ("dataset", "num_users", "sha256")
    if any(there.get(key) != data_input.get(key) for key in requests_keys):
        raise ValueError(
            f"{manifest_path}: this directory holds a job over input {_short(there['sha256'])} "
            f"({there['num_users']} users of dataset {there['dataset']!r}); the input now is "
            f"{_short(data_input['sha256'])} ({data_input['num_users']} users of dataset "
            f"{data_input['dataset']!r}): its users or their histories changed (or their item lists); {_REFUSAL_FIX}"
        )
    if there != data_input and "item_fields" in there and "item_fields" in data_input:
        # The same requests and fields (else the settings differ, below): the fields' values changed.
        before, now = (_short(values["item_fields"]) for values in (there, data_input))
        raise ValueError(f"{manifest_path}: this directory holds a job whose item fields had values {before}; "
                         f"now {now}: the item metadata file changed; {_REFUSAL_FIX}")
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
    data: InteractionData | RequestTable,
    out_dir: str | Path,
    *,
    top_k: int = 10,
    users_per_shard: int = DEFAULT_USERS_PER_SHARD,
    exclude_seen: bool = False,
    skip_unknown: bool = False,
    max_shards: int | None = None,
    output_format: OutputFormat = "jsonl",
    item_fields: ItemFields | None = None,
    job_info: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> BatchJobResult:
    """Writes top-``top_k`` recommendations of every user of ``data`` (format: module docstring).

    Args:
      recommender: the model and catalogue.
      data: the users: a dataset, or requests (``serving.requests_io.read_requests``)
        whose allow/exclude item lists go to :meth:`Recommender.recommend`; their
        item ids are looked up in the recommender's catalogue. Requests read from a
        ``NAME.inter.json`` beside its index are first checked to be of the recommender's
        catalogue (``serving.requests_io.check_table_catalogue``), as the CLI checks them.
      out_dir: output directory (created); resumes the job found there.
      top_k: items per user (``<= recommender.num_beams``).
      users_per_shard: users per shard file.
      exclude_seen: never recommend an item of the user's history.
      skip_unknown: drop history and list items missing from the catalogue instead of failing.
      max_shards: write at most this many shards in this invocation, then
        return (``finished=False`` if shards remain); for time-boxed runs and
        for testing resumption.
      output_format: ``"jsonl"`` or ``"parquet"`` shards (``serving.requests_io.encode_records``).
      item_fields: metadata (``serving.requests_io.load_item_fields``, aligned
        with the recommender's catalogue) written beside each recommended item.
      job_info: extra settings recorded in the manifest and checked on resume
        (e.g. the checkpoint it ran).
      log: where progress lines go.

    Raises:
      ValueError: the output directory holds a job of another model
        (:attr:`Recommender.model_identity`), another input
        (:func:`input_digest`, item fields' values) or other settings, or of an
        older manifest format; requests of another catalogue (nothing is
        written); or unknown items without ``skip_unknown``.
      MissingPyarrow: Parquet output without pyarrow.
    """
    if users_per_shard < 1:
        raise ValueError(f"users_per_shard={users_per_shard} must be >= 1")
    encode = encode_records(output_format, item_fields)  # checks pyarrow and the field types before any work
    out_dir = Path(out_dir)
    if isinstance(data, RequestTable) and data.catalogue_file is not None:  # checked before the directory exists
        recommender = recommender.snapshot()  # the catalogue checked is the one the job serves
        check_table_catalogue(data, recommender.sid_codes, recommender.item_ids)
    # One job per output directory: two would overwrite each other's shards and manifest.
    # The lock creates the directory; otherwise it is the first thing the job does.
    with DirectoryLock(out_dir, "genrec recommend"):
        # Temporary files of a killed run (a shard or the manifest before its rename): only this job,
        # which holds the lock, writes them, so every one there is stale.
        for stale in [*out_dir.glob(".shard-*.tmp"), *out_dir.glob(f".{MANIFEST_FILE}.*.tmp")]:
            stale.unlink(missing_ok=True)
        # One catalogue for the whole job (rows, shards, manifest), whatever update_catalogue does meanwhile.
        recommender = recommender.snapshot()
        requests = data if isinstance(data, RequestTable) else RequestTable.from_interactions(data)
        if item_fields is not None and any(len(v) != recommender.num_items for v in item_fields.values.values()):
            raise ValueError(f"item_fields has values for another catalogue than the recommender's "
                             f"{recommender.num_items} items; load them with the recommender's item_ids")
        num_users = requests.num_users
        num_shards = -(-num_users // users_per_shard)
        settings = {
            "dataset": requests.name,
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
        data_input = {"dataset": requests.name, "num_users": num_users, "sha256": input_digest(requests)}
        # Recorded only when used, so that a job started before these options existed still resumes.
        if output_format != "jsonl":
            settings["output_format"] = output_format
        if recommender.matmul_precision != "default":  # on a GPU it changes some users' items
            settings["matmul_precision"] = recommender.matmul_precision
        if item_fields is not None:
            settings["item_fields"] = list(item_fields.names)
            data_input["item_fields"] = item_fields.digest
        model = recommender.model_identity
        manifest_path = out_dir / MANIFEST_FILE
        manifest = _read_manifest(manifest_path)
        # Shard file name -> {"bytes", "sha256"} of each complete shard.
        shard_files: dict[str, dict[str, Any]] = {}
        completed: set[int] = set()
        if manifest is not None:
            _check_identity(manifest_path, manifest, model, data_input, settings)
            for shard in sorted(manifest["completed"]):
                path = shard_path(out_dir, shard, output_format)
                fault = _shard_fault(path, manifest["shards"].get(path.name))
                if fault is None:
                    completed.add(shard)
                    shard_files[path.name] = manifest["shards"][path.name]
                else:
                    log(f"{path.name} is {fault}; writing it again")
        _check_no_stray_shards(out_dir, num_shards if manifest is not None else 0, output_format)

        # Request item row -> recommender row, once for the whole table.
        rec_row_of_data_row = recommender.lookup_rows(requests.item_ids.tolist())
        if not skip_unknown:
            _check_known_items(requests, rec_row_of_data_row)

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
            recs = _recommend_shard(recommender, requests, rec_row_of_data_row, range(first, last), top_k,
                                    exclude_seen)
            records = recommendation_records(requests.user_ids[first:last], recs, item_fields)
            # Shard first, then the manifest that records it (with the bytes' checksum).
            payload = encode(records)
            path = shard_path(out_dir, shard, output_format)
            with atomic_open(path, "wb") as f:
                f.write(payload)
            shard_files[path.name] = _file_record(payload)
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
            cold = sum(len(history) < MIN_INTERACTIONS for history in requests.histories)
            log(f"done: {num_users} users ({cold} with fewer than {MIN_INTERACTIONS} interactions, "
                f"served from what they have) in {num_shards} shards under {out_dir}")
        else:
            log(f"stopped after {written} shards; {num_shards - len(completed)} remain, "
                "rerun the same command to resume")
        return BatchJobResult(out_dir=out_dir, num_shards=num_shards, shards_written=written,
                              shards_skipped=skipped, finished=finished)


def _check_no_stray_shards(out_dir: Path, num_shards: int, output_format: OutputFormat) -> None:
    """Refuses shard files in ``out_dir`` that are not this job's: the job would write its own beside them
    and ``shard-*`` would hold two jobs' records (duplicate users). Its own are ``shard_path(s)`` for its
    ``num_shards`` (0 without a manifest: the job writes its manifest before any shard, so a shard there
    without one is another job's)."""
    own = {shard_path(out_dir, shard, output_format).name for shard in range(num_shards)}
    stray = sorted(path.name for path in out_dir.glob("shard-*") if path.name not in own)
    if stray:
        shown = ", ".join(stray[:3]) + (f" and {len(stray) - 3} more" if len(stray) > 3 else "")
        whose = "no manifest.json lists them" if not num_shards else f"this job has {num_shards} shards"
        raise ValueError(f"{out_dir}: holds {len(stray)} shard file(s) of another job ({shown}; {whose}), which "
                         f"would be left beside this job's; {_REFUSAL_FIX}")


def _check_known_items(requests: RequestTable, rec_row_of_data_row: np.ndarray) -> None:
    """Refuses request items missing from the catalogue (the histories' first, then the lists'), naming a few."""
    unknown = np.flatnonzero(rec_row_of_data_row < 0)
    if not unknown.size:
        return
    for what, lists in (("the histories", requests.histories),
                        ("the allow_items lists", requests.allow_items),
                        ("the exclude_items lists", requests.exclude_items)):
        used = np.zeros(len(requests.item_ids), bool)
        for rows in lists or ():
            if rows is not None:
                used[rows] = True
        unknown_used = unknown[used[unknown]]
        if unknown_used.size:
            shown = ", ".join(repr(str(requests.item_ids[r])) for r in unknown_used[:5])
            raise ValueError(
                f"{unknown_used.size} item(s) of {what} in {requests.name!r} are not in the "
                f"model's catalogue, e.g. {shown}; pass skip_unknown=True (--skip-unknown) to drop them"
            )


def _recommend_shard(recommender: Recommender, requests: RequestTable, rec_row_of_data_row: np.ndarray,
                     users: range, top_k: int, exclude_seen: bool) -> Any:
    """The :class:`Recommendations` of one shard's users (unknown items already refused, or kept as -1).

    One ``Recommender.recommend_rows`` call, as the Beam runner makes it: an unknown item (-1, under
    ``skip_unknown``) is dropped from a history and matches no item in a list, so an allow list of only
    unknown ids allows nothing (``recommend``'s ``on_unknown="skip"``), never the whole catalogue."""
    histories = [rec_row_of_data_row[requests.histories[u]] for u in users]

    def row_lists(lists: list[np.ndarray | None] | None) -> list[np.ndarray | None] | None:
        if lists is None or all(lists[u] is None for u in users):
            return None
        return [None if lists[u] is None else rec_row_of_data_row[lists[u]] for u in users]

    return recommender.recommend_rows(histories, top_k=top_k, exclude_seen=exclude_seen,
                                      allow_rows=row_lists(requests.allow_items),
                                      exclude_rows=row_lists(requests.exclude_items))


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def build_parser(prog: str = "python -m serving.batch_job") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Recommend top-k items for every user of a dataset (or of a request file) with a trained "
        "model; writes resumable JSONL or Parquet shards (rerun the same command to resume an interrupted job). "
        "Formats: docs/serving.md.",
    )
    parser.add_argument("--workdir", required=True, help="training workdir (genrec train / genrec demo)")
    parser.add_argument("--out", required=True,
                        help="output directory for shard-NNNNN.jsonl (or .parquet) + manifest.json")
    parser.add_argument("--data", default=None,
                        help="dataset directory (docs/data.md): its users are served unless --requests is given, "
                        "and --item-fields reads its NAME.item.json; default: the dataset the model was trained on")
    parser.add_argument("--requests", default=None, metavar="FILE",
                        help="serve these requests instead of the dataset's users: .jsonl (one object a line: "
                        "user_id, history, optional allow_items, exclude_items), .parquet (same columns; a file "
                        "or a directory), or NAME.inter.json; with --runner beam also a glob or a Beam file "
                        "system URL (gs://b/requests-*.parquet)")
    parser.add_argument("--users", default=None, metavar="FILE",
                        help="recommend only for these users (one user id a line, served in that order)")
    parser.add_argument("--item-fields", default=None, metavar="FIELD,...",
                        help="copy these fields of NAME.item.json into the output beside each recommended item "
                        "(one list per field, null where an item lacks it), e.g. title,brand")
    parser.add_argument("--output-format", choices=OUTPUT_FORMATS, default="jsonl",
                        help="shard format (default jsonl; parquet needs pyarrow)")
    parser.add_argument("--which", choices=("best", "latest"), default="best", help="checkpoint to load")
    parser.add_argument("--top-k", type=int_at_least(1), default=10, help="items per user (default 10)")
    parser.add_argument("--num-beams", type=int_at_least(1), default=20, help="beam width, >= top-k (default 20)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=256,
                        help="users per decode call (default 256; rounded up to a multiple of --devices)")
    parser.add_argument("--devices", type=int_at_least(1), default=None, metavar="N",
                        help="local devices each decode call is split over (default: all; 1 = one device)")
    parser.add_argument("--users-per-shard", type=int_at_least(1), default=None,
                        help=f"users per output file (default {DEFAULT_USERS_PER_SHARD}; local runner only)")
    parser.add_argument("--exclude-seen", action="store_true", help="never recommend an item the user has seen")
    parser.add_argument("--skip-unknown", action="store_true",
                        help="drop history and list items missing from the model's catalogue instead of failing")
    parser.add_argument("--max-shards", type=int_at_least(0), default=None,
                        help="write at most this many shards, then stop (resume later; local runner only)")
    parser.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, default="default",
                        help="float32 matmul precision of the decode: default (fastest: TF32 on GPUs, bfloat16 on "
                        "TPUs; a user's items can change with the other users of its batch), high, or highest "
                        "(full float32: the same items whatever the batch, e.g. to compare with --runner beam or "
                        "another --batch-size); the same on CPUs (docs/serving.md)")
    parser.add_argument("--runner", choices=("local", "beam"), default="local",
                        help="local: this resumable job (default); beam: the Apache Beam pipeline "
                        "(serving/beam_pipeline.py, docs/serving.md)")
    parser.add_argument("pipeline_options", nargs="*", metavar="-- OPTION",
                        help="with --runner beam, after --: Beam's own pipeline options (--runner=DataflowRunner, "
                        "...; default: the DirectRunner); every flag above goes before --")
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
    # The user's files first: a mistake in them is reported before the model is loaded and compiled.
    field_names = parse_item_fields(args.item_fields) if args.item_fields is not None else None
    if args.output_format == "parquet":
        encode_records("parquet")  # pyarrow is there
    requests = read_requests(args.requests) if args.requests else None
    if args.requests:  # a NAME.inter.json beside its index: checked to be the model's catalogue, as --data is
        check_requests_catalogue(args.requests, args.workdir)
    users = read_user_list(args.users) if args.users else None
    if requests is not None and users is not None:
        requests, users = requests.select_users(users, source=args.users), None
    recommender = Recommender.from_workdir(args.workdir, args.which, num_beams=args.num_beams,
                                           batch_size=args.batch_size, devices=args.devices,
                                           matmul_precision=args.matmul_precision)
    dataset_name = None
    if requests is None:
        # Every user of the input is served: the 3-interaction minimum is leave-one-out's, not serving's.
        data = load_workdir_data(args.workdir, args.data, recommender.vocab, min_interactions=0)
        requests, dataset_name = read_requests(data=data), data.name
    if users is not None:
        requests = requests.select_users(users, source=args.users)
    item_fields = None
    if field_names is not None:
        item_file = workdir_item_file(args.workdir, args.data, dataset_name if args.data else None)
        item_fields = load_item_fields(item_file, field_names, recommender.item_ids)
    result = run_batch_job(
        recommender, requests, args.out, top_k=args.top_k,
        users_per_shard=DEFAULT_USERS_PER_SHARD if args.users_per_shard is None else args.users_per_shard,
        exclude_seen=args.exclude_seen, skip_unknown=args.skip_unknown, max_shards=args.max_shards,
        output_format=args.output_format, item_fields=item_fields,
        job_info={"workdir": str(Path(args.workdir).resolve()), "checkpoint": args.which},
        log=lambda line: print(line, flush=True),
    )
    return 0 if result.finished or args.max_shards is not None else 1


if __name__ == "__main__":
    sys.exit(run_command("python -m serving.batch_job", main))
