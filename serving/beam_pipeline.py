"""Batch recommendation on Apache Beam: the local batch job's records, from any Beam runner.

Where it sits: checkpoint -> index -> decode -> **serve** (offline, distributed).
The same requests and the same records as :mod:`serving.batch_job`, but read,
batched, decoded and written by a Beam pipeline, so a Beam runner (Dataflow,
Flink, Spark; the DirectRunner by default) spreads the users over its workers::

    requests (inter.json | JSONL | Parquet)
      -> RunInference(RecommenderModelHandler)   one Recommender per worker process
      -> OUT/shard-SSSSS-of-NNNNN.{jsonl,parquet}  {"user", "items", "scores"}, as the local job
      -> OUT/dead-letter-SSSSS-of-NNNNN.jsonl      {"request", "error"}: a request that failed

A request is a record ``{"user": id, "history": [item id, ...]}`` (oldest
first), optionally with ``"allow_items": [item id, ...]`` (recommend only
these) and ``"exclude_items": [item id, ...]`` (never these). With the
standard dataset (``--data DIR`` or the workdir's own, no ``--requests``) every
user's whole sequence is the history, exactly as the local job builds it, so
both give the same records (tests/test_beam_pipeline.py).

A request that fails (an unknown history item without ``--skip-unknown``, a
malformed line, an item list the installed Recommender cannot apply) goes to
the dead-letter output with a one-line error; every other request completes.
Unlike the local job there is no manifest and no resume: a Beam runner retries
failed work itself, and its file sinks publish the output only when the whole
job succeeded. docs/serving.md ("Beam") says how to run it on Dataflow, Flink
or Spark with accelerator workers; only the DirectRunner has been run.

Command line::

    genrec recommend --runner beam --workdir W --out OUT [--data DIR] [--top-k 10] ...
        [-- [--requests 'PATTERN'] [--output-format jsonl|parquet] [<Beam pipeline options>]]
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from genrec.console import UserError
from genrec.run_files import VOCAB_FILE, load_workdir_data, read_run_info
from genrec.vocab import SIDVocabulary
from serving.recommender import Recommender

__all__ = ["BeamJobResult", "RecommendRequests", "RecommenderModelHandler", "run_beam_job", "run_from_args"]

OutputFormat = Literal["jsonl", "parquet"]
_METRICS_NAMESPACE = "genrec"
_DEAD_LETTER = "dead_letter"
# Whether this genrec's Recommender.recommend takes per-request item lists (issue 23, section 2).
_HAS_ITEM_LISTS = {"allow_items", "exclude_items"} <= set(inspect.signature(Recommender.recommend).parameters)


@dataclasses.dataclass(frozen=True)
class BeamJobResult:
    """What one :func:`run_beam_job` did.

    Attributes:
      out_dir: the output directory (a local path or a Beam file system URL).
      num_recommended: requests with a record in the ``shard-*`` files.
      num_dead_letter: requests in the ``dead-letter-*`` files.
      seconds: wall time of the pipeline, from construction to its end.
    """

    out_dir: str
    num_recommended: int
    num_dead_letter: int
    seconds: float


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


def _item_list(request: Mapping[str, Any], field: str) -> list[Any] | None:
    """``request[field]`` as a list of item ids, None when absent; ValueError when it is not a list."""
    value = request.get(field)
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{field} is {value!r}, not a list of item ids")
    return list(value)


def _check_request(request: Any, recommender: Recommender, on_unknown: str) -> None:
    """Raises ValueError with one line if the request cannot be served; cheap (no decode)."""
    if not isinstance(request, Mapping) or request.get("user") is None:
        raise ValueError(f"expected a record with a 'user' and a 'history', got {request!r}")
    history = _item_list(request, "history") or []
    lists = [field for field in ("allow_items", "exclude_items") if _item_list(request, field) is not None]
    if lists and not _HAS_ITEM_LISTS:
        raise ValueError(f"{' and '.join(lists)} need Recommender.recommend(allow_items=..., exclude_items=...), "
                         "which this genrec lacks; update genrec or drop the lists")
    if on_unknown == "error" and history:
        rows = recommender.lookup_rows(history)
        if (rows < 0).any():
            unknown = history[int((rows < 0).argmax())]
            raise ValueError(f"history item {unknown!r} is not in the model's catalogue of {recommender.num_items} "
                             "items; pass --skip-unknown (on_unknown='skip') to drop unknown items")


def _dead_letter(request: Any, error: BaseException | str) -> dict[str, Any]:
    """``{"request": ..., "error": "one line"}``: a request that failed and why."""
    if isinstance(error, BaseException):
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        error = f"{type(error).__name__}: {text}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return {"request": request, "error": " ".join(lines)}


def dataset_requests(workdir: str | Path, data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The local job's requests: every user of the dataset with their whole sequence as history.

    ``data_dir`` as in ``genrec recommend --data`` (default: the dataset the
    workdir's model was trained on), loaded with the same function and checks
    as :func:`serving.batch_job.main` (every user, cold start included). Read on
    the launching machine: for millions of users write JSONL or Parquet
    requests, which the workers read in parallel.
    """
    vocab = SIDVocabulary.load(Path(workdir) / VOCAB_FILE)
    data = load_workdir_data(workdir, data_dir, vocab, min_interactions=0)
    item_ids = [str(item) for item in data.item_ids.tolist()]
    return [{"user": user, "history": [item_ids[row] for row in sequence.tolist()]}
            for user, sequence in zip(data.user_ids, data.sequences)]


class _ParseJsonLines(beam.DoFn):
    """JSONL lines -> request dicts; a line that is not JSON goes to the dead-letter output."""

    def __init__(self):
        self._failed = Metrics.counter(_METRICS_NAMESPACE, "dead_letter")

    def process(self, line: str) -> Iterator[Any]:
        if not line.strip():
            return
        try:
            request = json.loads(line)
        except json.JSONDecodeError as error:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(_DEAD_LETTER, _dead_letter(line, f"not a JSON line ({error})"))
            return
        yield request


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------


class RecommenderModelHandler(ModelHandler[dict, PredictionResult, Recommender]):
    """Beam's RunInference handler for genrec: request dicts in, record or error per request out.

    Model sharing: :meth:`load_model` builds ``Recommender.from_workdir`` once
    per worker *process*; RunInference keeps it in ``apache_beam.utils.shared``
    (its default when :meth:`share_model_across_processes` is False), so every
    thread of the process serves from that one copy and its compiled decode.
    We do not share across processes (``multi_process_shared``): that would
    proxy every batch, requests and results pickled, through a model server
    process, and JAX already takes the whole accelerator per process; run one
    SDK process per accelerator instead (docs/serving.md, "Beam").

    Batching: :meth:`batch_elements_kwargs` asks Beam for batches of exactly
    the recommender's ``batch_size`` (smaller only at a bundle's end; the
    Recommender pads those), so every decode call has the compiled shape.

    Failures: one bad request never fails its batch. Each request is checked
    first (record shape, unknown history items, item lists this Recommender
    cannot apply); the rest are decoded together, and if that call still
    raises, one at a time, so only the failing request becomes an error.
    (RunInference's ``with_exception_handling()`` would dead-letter the whole
    batch instead.) Each :class:`PredictionResult`'s ``inference`` is either
    ``{"record": {...}}`` or ``{"error": "one line"}``.

    Args:
      workdir: the training workdir, a path every worker can read.
      which: ``"best"`` or ``"latest"`` checkpoint.
      top_k, num_beams, batch_size: as in ``genrec recommend``.
      exclude_seen: never recommend an item of the request's history.
      skip_unknown: drop unknown history items instead of failing the request.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        which: Literal["best", "latest"] = "best",
        top_k: int = 10,
        num_beams: int = 20,
        batch_size: int = 256,
        exclude_seen: bool = False,
        skip_unknown: bool = False,
    ):
        super().__init__()
        if top_k > num_beams:
            raise ValueError(f"top_k={top_k} exceeds num_beams={num_beams}; raise num_beams or lower top_k")
        self._workdir = str(workdir)
        self._which = which
        self._top_k = int(top_k)
        self._num_beams = int(num_beams)
        self._batch_size = int(batch_size)
        self._exclude_seen = bool(exclude_seen)
        self._on_unknown = "skip" if skip_unknown else "error"

    def load_model(self) -> Recommender:
        return Recommender.from_workdir(self._workdir, self._which, num_beams=self._num_beams,
                                        batch_size=self._batch_size)

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}

    def share_model_across_processes(self) -> bool:
        return False  # one copy per process, shared by its threads (class docstring says why)

    def get_metrics_namespace(self) -> str:
        return _METRICS_NAMESPACE

    def run_inference(
        self, batch: Sequence[dict], model: Recommender, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        outcomes: list[dict[str, Any] | None] = [None] * len(batch)
        servable = []
        for i, request in enumerate(batch):
            try:
                _check_request(request, model, self._on_unknown)
                servable.append(i)
            except ValueError as error:
                outcomes[i] = {"error": _dead_letter(request, error)["error"]}
        # One decode call per kind of filter: a request without an allow list must not get an empty one.
        groups = [[i for i in servable if _item_list(batch[i], "allow_items") is not None],
                  [i for i in servable if _item_list(batch[i], "allow_items") is None]]
        for group in filter(None, groups):
            try:
                records = self._recommend(model, [batch[i] for i in group])
            except Exception:  # noqa: BLE001 - some request of the group is bad: find it, serve the rest
                records = []
                for i in group:
                    try:
                        records.append(self._recommend(model, [batch[i]])[0])
                    except Exception as error:  # noqa: BLE001 - this one request is what failed
                        records.append({"error": _dead_letter(batch[i], error)["error"]})
            for i, record in zip(group, records):
                outcomes[i] = record
        return [PredictionResult(request, outcome) for request, outcome in zip(batch, outcomes)]

    def _recommend(self, model: Recommender, requests: list[dict]) -> list[dict[str, Any]]:
        """``{"record": {"user", "items", "scores"}}`` per request: one ``Recommender.recommend`` call."""
        lists: dict[str, Any] = {}
        for field in ("allow_items", "exclude_items"):
            values = [_item_list(request, field) for request in requests]
            if any(value is not None for value in values):
                lists[field] = [value or [] for value in values]
        recs = model.recommend([_item_list(request, "history") or [] for request in requests], top_k=self._top_k,
                               exclude_seen=self._exclude_seen, on_unknown=self._on_unknown, **lists)
        records = []
        for i, request in enumerate(requests):
            keep = recs.valid[i]
            # The local job's record, byte for byte (serving/batch_job.py).
            records.append({"record": {
                "user": str(request["user"]),
                "items": [str(item) for item in recs.item_ids[i][keep].tolist()],
                "scores": [round(float(score), 6) for score in recs.scores[i][keep]],
            }})
        return records


class _SplitOutcomes(beam.DoFn):
    """PredictionResults -> records (main output) and dead letters (tagged), counted in Beam metrics."""

    def __init__(self):
        self._recommended = Metrics.counter(_METRICS_NAMESPACE, "recommended")
        self._failed = Metrics.counter(_METRICS_NAMESPACE, "dead_letter")

    def process(self, result: PredictionResult) -> Iterator[Any]:
        if "record" in result.inference:
            self._recommended.inc()
            yield result.inference["record"]
        else:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(_DEAD_LETTER, _dead_letter(result.example, result.inference["error"]))


class RecommendRequests(beam.PTransform):
    """Request dicts -> ``{"records": PCollection[dict], "dead_letter": PCollection[dict]}``.

    For composing your own pipeline: ``requests | RecommendRequests(handler)``
    with a :class:`RecommenderModelHandler`.
    """

    def __init__(self, handler: RecommenderModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, requests):
        outcomes = (requests
                    | "RunInference" >> RunInference(self._handler)
                    | "Split" >> beam.ParDo(_SplitOutcomes()).with_outputs(_DEAD_LETTER, main="records"))
        return {"records": outcomes.records, "dead_letter": outcomes[_DEAD_LETTER]}


# ---------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------


def _requests_format(pattern: str, requests_format: str | None) -> str:
    if requests_format is not None:
        return requests_format
    suffix = pattern.lower().rsplit(".", 1)[-1] if "." in pattern.rsplit("/", 1)[-1] else ""
    if suffix in ("parquet", "pq"):
        return "parquet"
    if suffix in ("jsonl", "json", "ndjson"):
        return "jsonl"
    raise UserError(f"--requests {pattern}: cannot tell JSONL from Parquet by its suffix; "
                    "pass --requests-format jsonl or parquet")


def _check_output_dir(out: str) -> None:
    """Refuses an output directory that holds files: a Beam job starts afresh (no manifest, no resume)."""
    if FileSystems.exists(out) and FileSystems.match([FileSystems.join(out, "*")])[0].metadata_list:
        raise UserError(f"{out}: the output directory is not empty (a Beam job writes its shards afresh, it does "
                        "not resume); use another --out or delete this one")


def _records_schema():
    import pyarrow as pa

    return pa.schema([("user", pa.string()), ("items", pa.list_(pa.string())), ("scores", pa.list_(pa.float64()))])


def run_beam_job(
    workdir: str | Path,
    out: str | Path,
    *,
    requests: str | None = None,
    requests_format: Literal["jsonl", "parquet"] | None = None,
    data: str | Path | None = None,
    which: Literal["best", "latest"] = "best",
    top_k: int = 10,
    num_beams: int = 20,
    batch_size: int = 256,
    exclude_seen: bool = False,
    skip_unknown: bool = False,
    output_format: OutputFormat = "jsonl",
    pipeline_options: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> BeamJobResult:
    """Runs the Beam pipeline (module docstring) to the end and returns what it wrote.

    Args:
      workdir: training workdir; read here (its run files, and the dataset
        without ``requests``) and by every worker (the model).
      out: output directory (local or a Beam file system URL); must be empty.
      requests: a file pattern of JSONL or Parquet requests (``gs://b/req-*.parquet``);
        None: every user of the dataset, as the local job.
      requests_format: ``"jsonl"`` or ``"parquet"``; default: from the pattern's suffix.
      data: dataset directory when ``requests`` is None (default: the workdir's).
      which, top_k, num_beams, batch_size, exclude_seen, skip_unknown: as
        :class:`RecommenderModelHandler` and ``genrec recommend``.
      output_format: ``"jsonl"`` (the local job's lines) or ``"parquet"``
        (columns ``user``, ``items``, ``scores``).
      pipeline_options: Beam pipeline options (``--runner=DataflowRunner``, ...);
        none: the DirectRunner.
      log: where the summary line goes.

    Raises:
      UserError: a non-empty output directory, or a requests pattern that matches
        no file or whose format cannot be told from its suffix.
      FileNotFoundError / ValueError: not a workdir, or a bad dataset (one line).
    """
    if output_format not in ("jsonl", "parquet"):
        raise ValueError(f"output_format={output_format!r}; use 'jsonl' or 'parquet'")
    read_run_info(workdir)  # fail here, in one line, rather than on every worker
    out = str(out)
    _check_output_dir(out)
    handler = RecommenderModelHandler(workdir, which=which, top_k=top_k, num_beams=num_beams, batch_size=batch_size,
                                      exclude_seen=exclude_seen, skip_unknown=skip_unknown)
    source = None if requests is None else _requests_format(requests, requests_format)
    if requests is not None and not FileSystems.match([requests])[0].metadata_list:
        raise UserError(f"--requests {requests}: no file matches; give a JSONL or Parquet file or a glob of them")
    start = time.perf_counter()
    pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_options)))
    bad_lines = []
    if source is None:
        request_pcoll = pipeline | "Dataset" >> beam.Create(dataset_requests(workdir, data))
    elif source == "parquet":
        request_pcoll = pipeline | "ReadParquet" >> beam.io.ReadFromParquet(requests)
    else:
        parsed = (pipeline
                  | "ReadJsonl" >> beam.io.ReadFromText(requests)
                  | "Parse" >> beam.ParDo(_ParseJsonLines()).with_outputs(_DEAD_LETTER, main="requests"))
        request_pcoll, bad_lines = parsed.requests, [parsed[_DEAD_LETTER]]
    outputs = request_pcoll | "Recommend" >> RecommendRequests(handler)
    shards = FileSystems.join(out, "shard")
    if output_format == "parquet":
        _ = outputs["records"] | "WriteParquet" >> beam.io.WriteToParquet(
            shards, _records_schema(), file_name_suffix=".parquet")
    else:
        _ = (outputs["records"] | "RecordLines" >> beam.Map(json.dumps)
             | "WriteJsonl" >> beam.io.WriteToText(shards, file_name_suffix=".jsonl"))
    _ = ((outputs["dead_letter"], *bad_lines) | "AllDeadLetters" >> beam.Flatten()
         | "DeadLetterLines" >> beam.Map(json.dumps, default=str)
         | "WriteDeadLetters" >> beam.io.WriteToText(FileSystems.join(out, "dead-letter"), file_name_suffix=".jsonl"))
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - start

    counters: dict[str, int] = {}  # summed over steps: malformed lines and failed requests are both dead letters
    for counter in result.metrics().query(MetricsFilter().with_namespace(_METRICS_NAMESPACE))["counters"]:
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + counter.committed
    recommended, failed = int(counters.get("recommended", 0)), int(counters.get("dead_letter", 0))
    log(f"done: {recommended} users in {seconds:.1f} s ({recommended / max(seconds, 1e-9):.0f} users/s) in "
        f"{shards}-*.{output_format}; {failed} failed request(s) in {FileSystems.join(out, 'dead-letter')}-*.jsonl")
    return BeamJobResult(out_dir=out, num_recommended=recommended, num_dead_letter=failed, seconds=seconds)


def _beam_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrec recommend --runner beam ... --", add_help=False)
    parser.add_argument("--requests", default=None,
                        help="file pattern of JSONL or Parquet requests; default: every user of the dataset")
    parser.add_argument("--requests-format", choices=("jsonl", "parquet"), default=None,
                        help="default: from the pattern's suffix")
    parser.add_argument("--output-format", choices=("jsonl", "parquet"), default="jsonl")
    return parser


def run_from_args(args: argparse.Namespace, pipeline_options: Sequence[str]) -> int:
    """``genrec recommend --runner beam``: the batch job's parsed options and what follows ``--``.

    After ``--``: ``--requests PATTERN``, ``--requests-format``, ``--output-format``
    (this module's), then any Beam pipeline option (``--runner=FlinkRunner``, ...).
    ``--users-per-shard`` does not apply (the runner picks the shards).

    Returns:
      0 when every request has a record, 1 when some went to the dead-letter output.
    """
    ours, beam_options = _beam_parser().parse_known_args(list(pipeline_options))
    if args.max_shards is not None:
        raise UserError("--max-shards is the local job's (--runner local); a Beam job runs to the end")
    if ours.requests is not None and args.data is not None:
        raise UserError("--data (a dataset's users) and --requests (request files) both given; pass one")
    result = run_beam_job(
        args.workdir, args.out, requests=ours.requests, requests_format=ours.requests_format, data=args.data,
        which=args.which, top_k=args.top_k, num_beams=args.num_beams, batch_size=args.batch_size,
        exclude_seen=args.exclude_seen, skip_unknown=args.skip_unknown, output_format=ours.output_format,
        pipeline_options=beam_options, log=lambda line: print(line, flush=True),
    )
    return 0 if result.num_dead_letter == 0 else 1
