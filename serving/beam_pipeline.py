"""Batch recommendation on Apache Beam: the local batch job's requests and records, from any Beam runner.

Where it sits: checkpoint -> index -> decode -> **serve** (offline, distributed).
The same requests, flags and records as :mod:`serving.batch_job`, but read,
batched, decoded and written by a Beam pipeline, so a Beam runner (Dataflow,
Flink, Spark; by default the DirectRunner, with two threads so that one's host
work overlaps the other's decode) spreads the users over its workers::

    requests: dataset | NAME.inter.json   read here for the checks, then by each worker process (user ranges;
                                          it refuses a file that changed since: another digest)
              JSONL                       read by the workers in byte ranges of the files
              Parquet                     read by the workers, row group by row group
    --users FILE                          read here only; the ids travel with the job
      -> parse each row (serving.requests_io.parse_request, the local job's parser)
      -> rebatch: a few whole decode batches of requests per element
      -> RunInference(RecommenderModelHandler)   one Recommender per worker process, one id look-up per batch
      -> OUT/shard-SSSSS-of-NNNNN.{jsonl,parquet}  the local job's records (requests_io.recommendation_records;
                                                   Parquet in row groups of >= 64 MiB of a bundle's records)
      -> OUT/dead-letter-SSSSS-of-NNNNN.jsonl      {"request", "error"}: a row or request that failed

The readers, the parse and rebatch steps and the request batches are
:mod:`serving.beam_requests`; this module holds the inference (the model
handler, the records' writing) and the job that wires them together.

Requests travel as batches, one Beam element per few decode batches of
requests rather than one per request, from the reader to the writer: Beam's
costs per element (a hop between steps, a size sample, a write call) are then
paid per batch, not per request (docs/benchmarks.md, "Beam pipeline against
the local batch job").

A request is the local job's: ``{"user_id": id, "history": [item id, ...]}``
(oldest first), optionally with ``"allow_items"`` and ``"exclude_items"``
(docs/serving.md, "Inputs and outputs"). Without ``--requests`` every user of
the dataset is served with their whole sequence as history, exactly as the
local job builds it, so both write the same records (tests/test_beam_pipeline.py);
on a GPU, every user's items match only with ``--matmul-precision highest``, since a Beam batch
holds other users than the local job's (docs/serving.md, "Reproducibility on GPUs").

A row that does not parse, a request with an item missing from the catalogue
(without ``--skip-unknown``), a ``--users`` user without a request: each goes
to the dead-letter output with a one-line error; every other request
completes. Unlike the local job there is no manifest and no resume (a Beam
runner retries failed work itself, and its file sinks publish the output only
when the whole job succeeded), and file requests are not checked for a user
with two requests unless ``--users`` selects them. docs/serving.md ("Beam")
says how to run it on Dataflow, Flink or Spark with accelerator workers; only
the DirectRunner has been run.

Command line: the local job's flags, Beam's own options after ``--``::

    genrec recommend --runner beam --workdir W --out OUT [--requests FILE|PATTERN] [--users FILE]
        [--data DIR] [--item-fields title,...] [--output-format jsonl|parquet] [--top-k 10] ...
        [-- <Beam pipeline options>]
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared
from apache_beam.utils.windowed_value import WindowedValue

from constrained.decode import MatmulPrecision, check_matmul_precision
from genrec.console import UserError
from genrec.datasets import INTER_SUFFIX
from genrec.run_files import read_catalogue, read_run_info
from serving.beam_requests import (
    _BYTES_PER_ROW,
    _DEAD_LETTER,
    _LIST_KEYS,
    _METRICS_NAMESPACE,
    _BatchCoder,
    _dead_letter,
    _files_have_requests,
    _jsonl_ranges,
    _launcher_path,
    _parquet_row_batches,
    _ParseRequests,
    _read_jsonl_range,
    _ReadTableChunks,
    _Rebatch,
    _RequestBatch,
    _Requests,
    _RowBatch,
    _SelectUsers,
    _TableSource,
)
from serving.beam_requests import dataset_requests as dataset_requests  # public here as before the split
from serving.recommender import Recommender
from serving.requests_io import (
    ALLOW_KEY,
    EXCLUDE_KEY,
    HISTORY_KEY,
    USER_KEY,
    ItemFields,
    OutputFormat,
    check_has_requests,
    check_requests_catalogue,
    encode_records,
    load_item_fields,
    parse_item_fields,
    read_user_list,
    recommendation_records,
    record_line,
    records_schema,
    workdir_item_file,
)

__all__ = ["DIRECT_RUNNER_DEFAULTS", "BeamJobResult", "RecommendRequests", "RecommenderModelHandler", "ServedModel",
           "run_beam_job", "run_from_args"]

# The DirectRunner's settings unless the caller gives its own: two worker threads of this process, so one
# thread's host work (reading, parsing, writing records) overlaps the other's decode (JAX releases the GIL
# while the device computes); both share the process's one model (RecommenderModelHandler). Beam's own
# default is one thread (docs/benchmarks.md, "Beam vs the local job").
DIRECT_RUNNER_DEFAULTS = ("--direct_running_mode=multi_threading", "--direct_num_workers=2")
# Requests travel through the pipeline in lists of this many decode batches (a whole number, so each list
# decodes full batches): one Beam element per list, not per request, and still enough lists for the runner to
# spread over its workers (docs/benchmarks.md, "Beam pipeline against the local batch job").
_BATCHES_PER_CHUNK = 2
# Parquet output: row groups of at least this much Arrow data (uncompressed), as Beam's WriteToParquet buffers by
# default (row_group_buffer_size): WriteToParquetBatched writes each table it takes as one row group (_RowGroups).
_ROW_GROUP_BYTES = 64 << 20
# The local job's flags a Beam job cannot honour, and why (one line each).
_LOCAL_ONLY = {
    "max_shards": "--max-shards is the local job's (--runner local); a Beam job runs to the end",
    "users_per_shard": "--users-per-shard is the local job's (--runner local); the Beam runner picks the shards",
}


@dataclasses.dataclass(frozen=True)
class BeamJobResult:
    """What one :func:`run_beam_job` did.

    Attributes:
      out_dir: the output directory (a local path or a Beam file system URL).
      num_recommended: requests with a record in the ``shard-*`` files.
      num_dead_letter: rows and requests in the ``dead-letter-*`` files.
      seconds: wall time of the pipeline, from construction to its end.
    """

    out_dir: str
    num_recommended: int
    num_dead_letter: int
    seconds: float


# ---------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ServedModel:
    """What :meth:`RecommenderModelHandler.load_model` gives each worker process: the recommender, and the
    item fields written beside each recommended item (None without ``--item-fields``). A class, not a
    tuple: Beam's ``shared.Shared`` holds it by weak reference."""

    recommender: Recommender
    item_fields: ItemFields | None = None


def _unknown_item_error(request: Mapping[str, Any], rows: Mapping[str, list[np.ndarray | None]], i: int,
                        num_items: int) -> str | None:
    """The one-line error of request ``i`` of a batch when one of its items is not in the catalogue (the
    first unknown id of its history, then of its lists), else None."""
    for key in _LIST_KEYS:
        found = rows[key][i]
        if found is not None and (found < 0).any():
            unknown = request[key][int((found < 0).argmax())]
            return (f"ValueError: {key} item {unknown!r} is not in the model's catalogue of {num_items} items; "
                    "pass --skip-unknown to drop unknown items")
    return None


class RecommenderModelHandler(ModelHandler[dict, PredictionResult, ServedModel]):
    """Beam's RunInference handler for genrec: parsed requests in, record or error per request out.

    Model sharing: :meth:`load_model` builds ``Recommender.from_workdir`` (and
    the item fields) once per worker *process*; RunInference keeps it in
    ``apache_beam.utils.shared`` (its default when
    :meth:`share_model_across_processes` is False), so every thread of the
    process serves from that one copy and its compiled decode. We do not share
    across processes (``multi_process_shared``): that would proxy every batch,
    requests and results pickled, through a model server process, and JAX
    already takes the whole accelerator per process; run one SDK process per
    accelerator instead (docs/serving.md, "Beam").

    Batching: :meth:`batch_elements_kwargs` asks Beam for batches of exactly
    the recommender's ``batch_size`` (smaller only at a bundle's end; the
    Recommender pads those), so every decode call has the compiled shape.
    :class:`RecommendRequests` batches the requests itself, before
    ``RunInference`` (a few whole decode batches per element: the module
    docstring says why), and runs this handler on each such batch.

    Failures: one bad request never fails its batch. Each request's items are
    looked up first (without ``skip_unknown``); the rest are decoded together,
    and if that call still raises, again in parts (whole decode batches, then
    thirds) down to the requests that fail alone, so only a failing request
    becomes an error, at a few decode calls rather than one per request
    (RunInference's ``with_exception_handling()`` would dead-letter the whole
    batch instead). Each :class:`PredictionResult`'s
    ``inference`` is either ``{"record": {...}}`` or ``{"error": "one line"}``.

    Args:
      workdir: the training workdir, a path every worker can read.
      which: ``"best"`` or ``"latest"`` checkpoint.
      top_k, num_beams, batch_size, devices: as in ``genrec recommend``.
      matmul_precision: the decode's float32 matmul precision (:class:`Recommender`);
        ``"highest"`` gives each request the items the local job gives it on a GPU,
        whatever else Beam batches with it (docs/serving.md, "Reproducibility on GPUs").
      exclude_seen: never recommend an item of the request's history.
      skip_unknown: drop unknown history and list items instead of failing the request.
      item_file, item_fields: ``NAME.item.json`` and the fields of it written
        beside each recommended item (``--item-fields``); a path every worker can read.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        which: Literal["best", "latest"] = "best",
        top_k: int = 10,
        num_beams: int = 20,
        batch_size: int = 256,
        devices: int | None = None,
        matmul_precision: MatmulPrecision = "default",
        exclude_seen: bool = False,
        skip_unknown: bool = False,
        item_file: str | Path | None = None,
        item_fields: Sequence[str] = (),
    ):
        super().__init__()
        if top_k > num_beams:
            raise ValueError(f"top_k={top_k} exceeds num_beams={num_beams}; raise num_beams or lower top_k")
        if bool(item_fields) != (item_file is not None):
            raise ValueError("item_fields and item_file go together; give both or neither")
        check_matmul_precision(matmul_precision)  # on the launcher, not on every worker
        self._workdir = str(workdir)
        self._which = which
        self._top_k = int(top_k)
        self._num_beams = int(num_beams)
        self._batch_size = int(batch_size)
        self._devices = devices
        self._matmul_precision = matmul_precision
        self._exclude_seen = bool(exclude_seen)
        self._skip_unknown = bool(skip_unknown)
        self._item_file = None if item_file is None else str(item_file)
        self._item_fields = tuple(item_fields)

    def load_model(self) -> ServedModel:
        recommender = Recommender.from_workdir(self._workdir, self._which, num_beams=self._num_beams,
                                               batch_size=self._batch_size, devices=self._devices,
                                               matmul_precision=self._matmul_precision)
        fields = None
        if self._item_fields:
            fields = load_item_fields(self._item_file, self._item_fields, recommender.item_ids)
        return ServedModel(recommender, fields)

    @property
    def batch_size(self) -> int:
        """Requests per decode call (the recommender's ``batch_size``)."""
        return self._batch_size

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}

    def share_model_across_processes(self) -> bool:
        return False  # one copy per process, shared by its threads (class docstring says why)

    def get_metrics_namespace(self) -> str:
        return _METRICS_NAMESPACE

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        """An estimate for Beam's metrics, from the batch's length (Beam's default pickles the whole batch for
        it, a cost per request as large as the rest of the step's host work)."""
        return _BYTES_PER_ROW * len(batch)

    def run_inference(
        self, batch: Sequence[dict], model: ServedModel, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        outcomes = self._outcomes(_Requests(list(batch)), model)
        return [PredictionResult(request, outcome) for request, outcome in zip(batch, outcomes)]

    def _outcomes(self, batch: _RequestBatch, model: ServedModel) -> list[dict[str, Any]]:
        """Each request's ``{"record": {...}}`` or ``{"error": "one line"}``, in order (class docstring)."""
        recommender, item_fields = model.recommender.snapshot(), model.item_fields  # one catalogue for the batch
        rows, has_unknown = batch.catalogue_rows(recommender)
        outcomes: list[dict[str, Any] | None] = [None] * len(batch)
        servable = list(range(len(batch)))
        if not self._skip_unknown and has_unknown.any():
            for i in np.flatnonzero(has_unknown).tolist():
                outcomes[i] = {"error": _unknown_item_error(batch.request(i), rows, i, recommender.num_items)}
            servable = np.flatnonzero(~has_unknown).tolist()
        if servable:
            for i, outcome in zip(servable, self._serve(recommender, item_fields, batch, rows, servable)):
                outcomes[i] = outcome
        return outcomes

    def _serve(self, recommender: Recommender, item_fields: ItemFields | None, batch: _RequestBatch,
               rows: Mapping[str, list[np.ndarray | None]], which: list[int]) -> list[dict[str, Any]]:
        """Requests ``which``' outcomes: one :meth:`_recommend` call for all of them; if it raises, the same on
        parts of them, down to the requests that fail alone (each an ``{"error"}``).

        The parts are whole decode batches first, then thirds: every call costs at least one padded decode
        batch, however few requests it holds, so one bad request among two decode batches of 256 costs at
        most 19 calls (20 padded decodes) instead of 512; thirds, since ``k`` parts a level over ``log_k(n)``
        levels is fewest calls at ``k = 3``."""
        try:
            return self._recommend(recommender, item_fields, batch.user_ids, rows, which)
        except Exception as error:  # noqa: BLE001 - some request of these is bad: find it, serve the rest
            if len(which) == 1:
                return [{"error": _dead_letter(batch.request(which[0]), error)["error"]}]
        size = self._batch_size if len(which) > self._batch_size else -(-len(which) // 3)
        return [outcome for start in range(0, len(which), size)
                for outcome in self._serve(recommender, item_fields, batch, rows, which[start:start + size])]

    def _recommend(self, recommender: Recommender, item_fields: ItemFields | None, user_ids: Sequence[str],
                   rows: Mapping[str, list[np.ndarray | None]], which: list[int]) -> list[dict[str, Any]]:
        """``{"record": {...}}`` per request ``which`` of the batch: one ``Recommender.recommend_rows`` call on
        the rows :meth:`_RequestBatch.catalogue_rows` looked up (-1, an unknown id, is dropped from a history
        and matches no item in a list: ``recommend``'s ``on_unknown="skip"``), the local job's records."""
        lists = {name: [rows[key][i] for i in which] for name, key in (("allow_rows", ALLOW_KEY),
                                                                        ("exclude_rows", EXCLUDE_KEY))}
        recs = recommender.recommend_rows(
            [rows[HISTORY_KEY][i] for i in which], top_k=self._top_k, exclude_seen=self._exclude_seen,
            **{name: values for name, values in lists.items() if any(value is not None for value in values)})
        records = recommendation_records([user_ids[i] for i in which], recs, item_fields)
        return [{"record": record} for record in records]


@dataclasses.dataclass(frozen=True, eq=False)
class _Outcomes:
    """What ``RunInference`` gives for one :class:`_RequestBatch`: the records of the requests that were
    served, and a dead letter (:func:`_dead_letter`) for each that failed."""

    records: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.records) + len(self.dead_letters)


class _RequestListHandler(ModelHandler[_RequestBatch, _Outcomes, ServedModel]):
    """RunInference on :class:`_RequestBatch` elements, one per call: :class:`RecommenderModelHandler` (its
    model, its outcome per request) for elements that each hold a few decode batches of requests already.

    One Beam element per batch of requests, not per request: RunInference (no ``BatchElements``), the step
    after it and the writer then cost per batch, not per request."""

    def __init__(self, handler: RecommenderModelHandler):
        super().__init__()
        self._handler = handler

    def load_model(self) -> ServedModel:
        return self._handler.load_model()

    def should_skip_batching(self) -> bool:
        return True  # each element is a whole number of decode batches (_Rebatch)

    def share_model_across_processes(self) -> bool:
        return self._handler.share_model_across_processes()

    def get_metrics_namespace(self) -> str:
        return self._handler.get_metrics_namespace()

    def get_num_bytes(self, batch: _RequestBatch) -> int:
        return _BYTES_PER_ROW * len(batch)

    def run_inference(self, batch: _RequestBatch, model: ServedModel,
                      inference_args: dict[str, Any] | None = None) -> list[_Outcomes]:
        records, dead_letters = [], []
        for i, outcome in enumerate(self._handler._outcomes(batch, model)):
            if "record" in outcome:
                records.append(outcome["record"])
            else:
                dead_letters.append(_dead_letter(batch.request(i), outcome["error"]))
        return [_Outcomes(records, dead_letters)]


class _SplitOutcomes(beam.DoFn):
    """:class:`_Outcomes` -> their records (main output: ``encode_batch(records)``, one element, or one
    element per record without it) and dead letters (tagged), counted in Beam metrics."""

    def __init__(self, encode_batch: Callable[[list[dict[str, Any]]], Any] | None = None):
        self._encode_batch = encode_batch
        self._recommended = Metrics.counter(_METRICS_NAMESPACE, "recommended")
        self._failed = Metrics.counter(_METRICS_NAMESPACE, "dead_letter")

    def process(self, result: _Outcomes) -> Iterator[Any]:
        for dead_letter in result.dead_letters:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(_DEAD_LETTER, dead_letter)
        if not result.records:
            return
        self._recommended.inc(len(result.records))
        if self._encode_batch is None:
            yield from result.records
        else:
            yield self._encode_batch(result.records)


def _jsonl_text(records: list[dict[str, Any]]) -> str:
    """The records' JSONL lines as one string (``WriteToText`` adds the last newline): the same bytes as
    one element per line."""
    return "\n".join(map(record_line, records))


@dataclasses.dataclass(frozen=True)
class _ArrowTable:
    """Records -> a ``pyarrow.Table`` of ``schema`` (:func:`serving.requests_io.records_schema`), the
    element ``WriteToParquetBatched`` writes."""

    schema: Any

    def __call__(self, records: list[dict[str, Any]]) -> Any:
        import pyarrow as pa  # the Parquet output's optional extra; checked by encode_records on the launcher

        return pa.Table.from_pylist(records, schema=self.schema)


class _RowGroups(beam.DoFn):
    """Arrow tables (one per list of records, :class:`_ArrowTable`) -> tables of at least ``min_bytes`` (a
    bundle's last one per window smaller), concatenated in order. ``WriteToParquetBatched`` writes each table
    it takes as one row group, and a list's ``2 x batch_size`` records alone would make row groups of a few
    hundred rows: many small reads, and metadata per group, for whoever reads the output."""

    def __init__(self, min_bytes: int):
        self._min_bytes = min_bytes
        self._pending: dict[Any, list[Any]] = {}
        self._pending_bytes: dict[Any, int] = {}

    def start_bundle(self) -> None:
        self._pending, self._pending_bytes = {}, {}

    def process(self, table: Any, window=beam.DoFn.WindowParam) -> Iterator[Any]:
        pending = self._pending.setdefault(window, [])
        pending.append(table)
        self._pending_bytes[window] = self._pending_bytes.get(window, 0) + table.nbytes
        if self._pending_bytes[window] >= self._min_bytes:
            yield _concat_tables(pending)
            pending.clear()
            self._pending_bytes[window] = 0

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for window, pending in self._pending.items():
            if pending:
                yield WindowedValue(_concat_tables(pending), window.max_timestamp(), [window])
        self._pending, self._pending_bytes = {}, {}


def _concat_tables(tables: list[Any]) -> Any:
    import pyarrow as pa  # the Parquet output's optional extra; checked by encode_records on the launcher

    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


class RecommendRequests(beam.PTransform):
    """Request rows -> ``{"records": PCollection, "dead_letter": PCollection[dict]}``.

    The input holds request rows (dicts with ``user_id``, ``history``, optional
    ``allow_items`` / ``exclude_items``) or ``(file name, line)`` pairs of JSONL
    (``ReadFromTextWithFilename``); each is parsed with the local job's parser.
    For composing your own pipeline: ``rows | RecommendRequests(handler)`` with
    a :class:`RecommenderModelHandler`. The requests then travel in lists of a
    few decode batches (one Beam element per list, not per request) through
    ``RunInference`` to the records.

    Args:
      handler: the model handler.
      where: what names a dict row in its parse error (a file pattern).
      users: serve only these users' requests (``--users``); a listed user
        without a request, or with several, is dead-lettered.
      encode_batch: applied to each list of records (a few decode batches'
        worth; e.g. all their JSONL lines as one string): the ``records``
        output then holds what it returns, one element per list, which a
        batched writer takes at a fraction of the per-record cost. Without it,
        ``records`` holds one dict per record. (Renamed from ``encode``, which
        was applied to each record: a caller of ``encode=f`` now leaves it out
        and maps the records, ``outputs["records"] | beam.Map(f)``, or takes
        whole lists with ``encode_batch``.)
    """

    def __init__(self, handler: RecommenderModelHandler, where: str = "the requests",
                 users: Sequence[str] | None = None,
                 encode_batch: Callable[[list[dict[str, Any]]], Any] | None = None):
        super().__init__()
        self._handler = handler
        self._where = where
        self._users = None if users is None else list(users)
        self._encode_batch = encode_batch

    def expand(self, rows):
        parsed = rows | "Parse" >> beam.ParDo(_ParseRequests(self._where)).with_output_types(
            _RequestBatch).with_outputs(_DEAD_LETTER, main="requests")
        requests, dead = parsed.requests, [parsed[_DEAD_LETTER]]
        if self._users is not None:  # a join by user: one element per request up to the selection
            listed = rows.pipeline | "ListedUsers" >> beam.Create([(user, True) for user in self._users])
            selected = ({"request": requests | "ByUser" >> beam.FlatMap(
                            lambda batch: [(request[USER_KEY], request) for request in batch.requests]),
                         "listed": listed}
                        | "JoinUsers" >> beam.CoGroupByKey()
                        | "SelectUsers" >> beam.ParDo(_SelectUsers(self._where)).with_output_types(
                            _Requests).with_outputs(_DEAD_LETTER, main="requests"))
            requests = selected.requests
            dead.append(selected[_DEAD_LETTER])
        outcomes = (requests
                    | "Rebatch" >> beam.ParDo(_Rebatch(_BATCHES_PER_CHUNK * self._handler.batch_size)
                                             ).with_output_types(_RequestBatch)
                    | "RunInference" >> RunInference(_RequestListHandler(self._handler)).with_output_types(_Outcomes)
                    | "Split" >> beam.ParDo(_SplitOutcomes(self._encode_batch)).with_outputs(
                        _DEAD_LETTER, main="records"))
        dead.append(outcomes[_DEAD_LETTER])
        return {"records": outcomes.records, "dead_letter": tuple(dead) | "AllDeadLetters" >> beam.Flatten()}


# ---------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------


def _request_source(requests: str) -> tuple[Literal["inter", "parquet", "jsonl"], str]:
    """``(kind, file pattern)`` of ``--requests``: by suffix, as :func:`serving.requests_io.read_requests`
    (a directory of Parquet files too), and also a glob or a Beam file system URL."""
    name = requests.rstrip("/").rsplit("/", 1)[-1].lower()
    if name.endswith(INTER_SUFFIX):
        return "inter", requests
    if name.endswith((".parquet", ".pq")):
        return "parquet", requests
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl", requests
    parts = FileSystems.join(requests, "*.parquet")
    if FileSystems.match([parts])[0].metadata_list:
        return "parquet", parts
    raise UserError(f"--requests {requests}: unknown request format; give .jsonl or .parquet files (a glob of "
                    f"them), a directory of .parquet files, or a NAME{INTER_SUFFIX}")


def _with_direct_defaults(pipeline_options: Sequence[str]) -> list[str]:
    """``pipeline_options`` plus :data:`DIRECT_RUNNER_DEFAULTS` where they set neither of its options (other
    runners ignore them)."""
    given = {option.split("=", 1)[0] for option in pipeline_options}
    if given & {"--direct_running_mode", "--direct_num_workers"}:
        return list(pipeline_options)
    return [*pipeline_options, *DIRECT_RUNNER_DEFAULTS]


def _check_option_spelling(pipeline_options: Sequence[str]) -> None:
    """Refuses a pipeline option Beam does not know that is close to one it knows (``--runer``): Beam drops
    unknown options with one log line, so a misspelled ``--runner`` ran the job on the launching machine,
    exit 0. Other unknown options pass, as Beam passes them (a runner's plugin may read them)."""
    options = PipelineOptions(list(pipeline_options))
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # its "Discarding unparseable args" line: refused or said by Beam later
    try:
        known = set(options.get_all_options())
        unknown = set(options.get_all_options(retain_unknown_options=True)) - known
    finally:
        beam_log.setLevel(level)
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if close:
            raise UserError(f"Beam does not know the pipeline option --{name} (did you mean --{close[0]}?); it "
                            "would drop it and run the job without it")


def _check_output_dir(out: str) -> None:
    """Refuses an output directory that holds files: a Beam job starts afresh (no manifest, no resume)."""
    if FileSystems.exists(out) and FileSystems.match([FileSystems.join(out, "*")])[0].metadata_list:
        raise UserError(f"{out}: the output directory is not empty (a Beam job writes its shards afresh, it does "
                        "not resume); use another --out or delete this one")


def run_beam_job(
    workdir: str | Path,
    out: str | Path,
    *,
    requests: str | None = None,
    users: str | Path | Sequence[str] | None = None,
    data: str | Path | None = None,
    item_fields: Sequence[str] = (),
    which: Literal["best", "latest"] = "best",
    top_k: int = 10,
    num_beams: int = 20,
    batch_size: int = 256,
    devices: int | None = None,
    matmul_precision: MatmulPrecision = "default",
    exclude_seen: bool = False,
    skip_unknown: bool = False,
    output_format: OutputFormat = "jsonl",
    pipeline_options: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> BeamJobResult:
    """Runs the Beam pipeline (module docstring) to the end and returns what it wrote.

    Args:
      workdir: training workdir; read here (its run files) and by every worker
        process (the model, and without ``requests`` its run info and vocabulary
        to load the dataset).
      out: output directory (local or a Beam file system URL); must be empty.
      requests: as ``genrec recommend --requests``: ``.jsonl`` or ``.parquet``
        files (also a glob such as ``gs://b/req-*.parquet``; only matched here,
        read by the workers), a directory of Parquet files, or
        ``NAME.inter.json`` (read here for the checks, and again by every
        worker process); None: every user of the dataset, as the local job
        (read here and by every worker process, as ``NAME.inter.json``).
      users: a user list file (``--users``, read here only) or the user ids:
        serve only these. The ids travel with the job (no worker reads the file).
      data: dataset directory (``--data``): its users without ``requests`` (read
        here and by every worker process), and its ``NAME.item.json`` for
        ``item_fields`` (default: the workdir's dataset).
      item_fields: fields of ``NAME.item.json`` written beside each item (``--item-fields``).
      which, top_k, num_beams, batch_size, devices, matmul_precision, exclude_seen, skip_unknown:
        as :class:`RecommenderModelHandler` and ``genrec recommend``.
      output_format: ``"jsonl"`` or ``"parquet"``, the local job's records and
        schema (:func:`serving.requests_io.records_schema`).
      pipeline_options: Beam pipeline options (``--runner=DataflowRunner``, ...);
        none: the DirectRunner, with two worker threads unless
        ``--direct_running_mode`` or ``--direct_num_workers`` say otherwise
        (:data:`DIRECT_RUNNER_DEFAULTS`).
      log: where the summary line goes.

    A local path is made absolute here (``Path.resolve()``), and a worker reads
    it at that path: the workdir, the item file, the request files and, for the
    dataset's or a ``NAME.inter.json``'s users, those files too, must be
    readable there on every worker (docs/serving.md, "What workers need"). A
    worker refuses a dataset or ``NAME.inter.json`` that is not the one read
    here (its users and digest differ: the file changed while the job ran).

    Raises:
      UserError: a non-empty output directory, a requests pattern that matches no
        file or has an unknown format, a user list naming users without a request
        (requests read here), or Parquet without pyarrow.
      FileNotFoundError / ValueError: not a workdir, a bad dataset, request
        file (read here), user list or item metadata file (one line).
    """
    read_run_info(workdir)  # fail here, in one line, rather than on every worker
    _check_option_spelling(pipeline_options)
    out = str(out)
    _check_output_dir(out)
    # The user's files first, as the local job: a mistake in them is reported before any worker starts.
    user_ids = read_user_list(users) if isinstance(users, (str, Path)) else None if users is None else list(users)
    kind, pattern = _request_source(requests) if requests is not None else ("dataset", None)
    if pattern is not None and not FileSystems.match([pattern])[0].metadata_list:
        raise UserError(f"--requests {requests}: no file matches; give a JSONL or Parquet file or a glob of them")
    if pattern is not None:  # the workers match or open it: from the launcher's directory, not theirs
        pattern = _launcher_path(pattern)
    if kind in ("jsonl", "parquet"):  # refused as the local job refuses it, from the first bytes or footers
        check_has_requests(requests, _files_have_requests(kind, pattern))
    table = None
    if kind == "inter":  # beside its index: checked to be the model's catalogue, as --data is
        check_requests_catalogue(requests, workdir)
    if kind in ("dataset", "inter"):  # read here, as the local job reads them, and again by each worker process
        shared_table = shared.Shared()
        table_source = _TableSource.on_launcher(workdir, data, requests if kind == "inter" else None, user_ids,
                                                str(users) if isinstance(users, (str, Path)) else "users")
        # Held until the end: this process's workers (the DirectRunner's) take this copy instead of a new read.
        loaded = shared_table.acquire(table_source.read, tag=table_source)
        table = loaded.table
    fields, item_file = None, None
    if item_fields:
        item_file = _launcher_path(workdir_item_file(workdir, data, table.name if kind == "dataset" and data else None))
        fields = load_item_fields(item_file, item_fields, read_catalogue(workdir)[1])
    encode_records(output_format, fields)  # the format, pyarrow and the fields' Parquet types
    handler = RecommenderModelHandler(
        _launcher_path(workdir), which=which, top_k=top_k, num_beams=num_beams, batch_size=batch_size, devices=devices,
        matmul_precision=matmul_precision, exclude_seen=exclude_seen, skip_unknown=skip_unknown, item_file=item_file,
        item_fields=tuple(item_fields))

    start = time.perf_counter()
    pipeline = beam.Pipeline(options=PipelineOptions(_with_direct_defaults(pipeline_options)))
    # Every source gives a few large elements: chunks of the requests read here, or what each worker reads.
    if table is not None:
        users_per_chunk = _BATCHES_PER_CHUNK * batch_size
        rows = (pipeline | "UserRanges" >> beam.Create([(first, min(first + users_per_chunk, table.num_users))
                                                       for first in range(0, table.num_users, users_per_chunk)])
                | "ReadRequests" >> beam.ParDo(_ReadTableChunks(
                    table_source, shared_table, users_per_chunk, (table.num_users, loaded.digest))
                    ).with_output_types(_RequestBatch))
    elif kind == "parquet":
        rows = (pipeline | "ReadParquet" >> beam.io.ReadFromParquetBatched(pattern)
                | "ParquetRows" >> beam.FlatMap(_parquet_row_batches, str(requests), _BATCHES_PER_CHUNK * batch_size
                                                ).with_output_types(_RowBatch))
    else:
        rows = (pipeline | "JsonlRanges" >> beam.Create(_jsonl_ranges(pattern))
                | "ReadJsonl" >> beam.FlatMap(_read_jsonl_range).with_output_types(_RowBatch))
    shards = FileSystems.join(out, "shard")
    schema = records_schema(fields) if output_format == "parquet" else None
    outputs = rows | "Recommend" >> RecommendRequests(
        handler, where=str(requests or table.name), users=user_ids if table is None else None,
        encode_batch=_ArrowTable(schema) if output_format == "parquet" else _jsonl_text)
    if output_format == "parquet":
        _ = (outputs["records"] | "RowGroups" >> beam.ParDo(_RowGroups(_ROW_GROUP_BYTES))
             | "WriteParquet" >> beam.io.WriteToParquetBatched(shards, schema, file_name_suffix=".parquet"))
    else:  # each element a list's lines, joined
        _ = outputs["records"] | "WriteJsonl" >> beam.io.WriteToText(shards, file_name_suffix=".jsonl")
    _ = (outputs["dead_letter"] | "DeadLetterLines" >> beam.Map(json.dumps, default=str)
         | "WriteDeadLetters" >> beam.io.WriteToText(FileSystems.join(out, "dead-letter"), file_name_suffix=".jsonl"))
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - start

    counters: dict[str, int] = {}  # summed over steps: bad rows and failed requests are both dead letters
    for counter in result.metrics().query(MetricsFilter().with_namespace(_METRICS_NAMESPACE))["counters"]:
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + counter.committed
    recommended, failed = int(counters.get("recommended", 0)), int(counters.get("dead_letter", 0))
    log(f"done: {recommended} users in {seconds:.1f} s ({recommended / max(seconds, 1e-9):.0f} users/s) in "
        f"{shards}-*.{output_format}; {failed} failed request(s) in {FileSystems.join(out, 'dead-letter')}-*.jsonl")
    return BeamJobResult(out_dir=out, num_recommended=recommended, num_dead_letter=failed, seconds=seconds)


def _check_pipeline_options(pipeline_options: Sequence[str], args: argparse.Namespace) -> None:
    """Refuses one of ``genrec recommend``'s own flags after ``--``, where only Beam's options go
    (``--runner`` is both: before ``--`` genrec's runner, after it Beam's)."""
    job_options = {"--" + name.replace("_", "-") for name in vars(args)} - {"--runner"}
    for option in pipeline_options:
        name = option.split("=", 1)[0]
        if name == "--requests-format":
            raise UserError("--requests-format is gone: --requests (before --) takes the format from the file's "
                            f"suffix (.jsonl, .parquet, NAME{INTER_SUFFIX})")
        if name in job_options:
            raise UserError(f"{name} is a genrec recommend flag: put it before --, where the local job takes it "
                            "(only Beam's pipeline options go after --)")


def run_from_args(args: argparse.Namespace, pipeline_options: Sequence[str]) -> int:
    """``genrec recommend --runner beam``: the batch job's parsed flags and Beam's options (after ``--``).

    The batch job's flags are refused after ``--``; a flag of the local job
    that a Beam job cannot honour is one line (``--max-shards``,
    ``--users-per-shard``).

    Returns:
      0 when every request has a record, 1 when some went to the dead-letter output.
    """
    _check_pipeline_options(pipeline_options, args)
    for flag, message in _LOCAL_ONLY.items():
        if getattr(args, flag) is not None:
            raise UserError(message)
    result = run_beam_job(
        args.workdir, args.out, requests=args.requests, users=args.users, data=args.data,
        item_fields=parse_item_fields(args.item_fields) if args.item_fields is not None else (),
        which=args.which, top_k=args.top_k, num_beams=args.num_beams, batch_size=args.batch_size,
        devices=args.devices, matmul_precision=args.matmul_precision, exclude_seen=args.exclude_seen,
        skip_unknown=args.skip_unknown, output_format=args.output_format, pipeline_options=list(pipeline_options),
        log=lambda line: print(line, flush=True),
    )
    return 0 if result.num_dead_letter == 0 else 1


# serving.beam_requests registers its batch elements the same way.
beam.coders.registry.register_coder(_Outcomes, _BatchCoder)
