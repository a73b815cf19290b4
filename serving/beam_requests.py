"""The Beam job's requests: what the workers read, and the batches they travel in to ``RunInference``.

Where it sits: requests -> **read, parse, rebatch** -> decode -> records; :mod:`serving.beam_pipeline`
builds the pipeline from these steps and runs the model on their output. Here: the request batches
(:class:`_RequestBatch`, one Beam element per few decode batches, and their coder), the readers of JSONL
byte ranges, Parquet row groups and the launcher's request table (the dataset or ``NAME.inter.json``,
re-read and checked by each worker process), and the parse, rebatch and ``--users`` selection steps.
A module of its own so the reading side, which knows nothing of the model, reads apart from the
inference and the job (docs/serving.md, "Beam").
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.utils import shared
from apache_beam.utils.windowed_value import WindowedValue

from genrec.datasets import INTER_SUFFIX
from genrec.run_files import VOCAB_FILE, load_run_data, load_workdir_data, read_run_info
from genrec.vocab import SIDVocabulary
from serving.recommender import Recommender
from serving.requests_io import (
    ALLOW_KEY,
    EXCLUDE_KEY,
    HISTORY_KEY,
    USER_KEY,
    RequestTable,
    jsonl_has_request,
    parquet_num_rows,
    parquet_request_columns,
    parse_request,
    parse_request_line,
    read_requests,
    requests_digest,
)

__all__ = ["dataset_requests"]

# Beam metrics' namespace and the dead-letter output's tag, here and in serving.beam_pipeline.
_METRICS_NAMESPACE = "genrec"
_DEAD_LETTER = "dead_letter"
# JSONL requests are read by the workers in byte ranges of this size (more, so that there are at most
# _MAX_RANGES ranges): enough ranges that even one file is read by every worker thread.
_RANGE_BYTES = 1 << 20
_MAX_RANGES = 10_000
# What one request (or record) weighs in Beam's size metrics (_BatchCoder, get_num_bytes): a typical request's
# JSONL line, an estimate instead of encoding each element.
_BYTES_PER_ROW = 200
# The item lists of a request, in the order their rows are looked up and their unknown ids reported.
_LIST_KEYS = (HISTORY_KEY, ALLOW_KEY, EXCLUDE_KEY)


def _dead_letter(request: Any, error: BaseException | str) -> dict[str, Any]:
    """``{"request": ..., "error": "one line"}``: a row or request that failed and why."""
    if isinstance(error, BaseException):
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        error = f"{type(error).__name__}: {text}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return {"request": request, "error": " ".join(lines)}


def dataset_requests(workdir: str | Path, data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The local job's default requests: every user of the dataset, whole sequence as history.

    ``data_dir`` as in ``genrec recommend --data`` (default: the dataset the
    workdir's model was trained on), loaded with the same function and checks
    as :func:`serving.batch_job.main` (every user, cold start included); rows
    in :func:`serving.requests_io.parse_request`'s form. Read on the launching
    machine: for millions of users write JSONL or Parquet requests, which the
    workers read in parallel.
    """
    return list(_dataset_table(workdir, data_dir).records())


def _dataset_table(workdir: str | Path, data_dir: str | Path | None) -> RequestTable:
    vocab = SIDVocabulary.load(Path(workdir) / VOCAB_FILE)
    return read_requests(data=load_workdir_data(workdir, data_dir, vocab, min_interactions=0))


class _RequestBatch:
    """One Beam element of requests (parsed and checked), a whole number of decode batches of them: what goes
    through ``RunInference`` (:class:`_RequestListHandler`). Beam's per-element costs (a hop between steps,
    a size sample) are then paid once per batch, not once per request.

    Attributes:
      user_ids: the requests' users, in order.
    """

    user_ids: list[str]

    def __len__(self) -> int:
        return len(self.user_ids)

    def request(self, i: int) -> dict[str, Any]:
        """Request ``i`` as :func:`serving.requests_io.parse_request` gives it (what a dead letter shows)."""
        raise NotImplementedError

    def catalogue_rows(self, recommender: Recommender) -> tuple[dict[str, list[np.ndarray | None]], np.ndarray]:
        """``(rows, has_unknown)``: per key of :data:`_LIST_KEYS`, each request's catalogue rows ``int32[n]``
        (-1: unknown id; None: no such list), and ``bool[len(self)]`` whether a request has an unknown id."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, eq=False)
class _Requests(_RequestBatch):
    """Requests as :func:`serving.requests_io.parse_request`'s dicts (from JSONL or Parquet rows)."""

    requests: list[dict[str, Any]]

    @property
    def user_ids(self) -> list[str]:
        return [request[USER_KEY] for request in self.requests]

    def __len__(self) -> int:
        return len(self.requests)

    def request(self, i: int) -> dict[str, Any]:
        return self.requests[i]

    def catalogue_rows(self, recommender: Recommender) -> tuple[dict[str, list[np.ndarray | None]], np.ndarray]:
        return _batch_rows(self.requests, recommender)


def _batch_rows(batch: Sequence[Mapping[str, Any]], recommender: Recommender
                ) -> tuple[dict[str, list[np.ndarray | None]], np.ndarray]:
    """``(rows, has_unknown)``: per key of :data:`_LIST_KEYS`, each request's catalogue rows ``int32[n]``
    (-1: unknown id; None: no such list), and ``bool[len(batch)]`` whether a request has an unknown id.
    One :meth:`Recommender.lookup_rows` for the whole batch, not one per request and list."""
    lists = {key: [request.get(key) for request in batch] for key in _LIST_KEYS}
    flat = recommender.lookup_rows([item for key in _LIST_KEYS for items in lists[key] if items for item in items])
    lengths = [len(items) if items else 0 for key in _LIST_KEYS for items in lists[key]]
    has_unknown = np.zeros(len(batch), bool)
    owners = np.repeat(np.tile(np.arange(len(batch)), len(_LIST_KEYS)), lengths)  # the request of each id
    has_unknown[owners[flat < 0]] = True
    rows: dict[str, list[np.ndarray | None]] = {}
    start = 0
    for key in _LIST_KEYS:
        rows[key] = []
        for items in lists[key]:
            rows[key].append(None if items is None else flat[start:start + len(items)])
            start += len(items or ())
    return rows, has_unknown


@dataclasses.dataclass(frozen=True, eq=False)
class _RequestChunk(_RequestBatch):
    """Some users' requests from a request table (the dataset, ``NAME.inter.json``), in flat arrays: item ids
    stay rows into the chunk's few distinct ids, looked up in the catalogue once per chunk
    (:meth:`catalogue_rows`), not once per request and id.

    Attributes:
      user_ids: the chunk's users, in order.
      item_ids: ``str[n]``, the item ids the chunk uses.
      lists: per request key (history, allow_items, exclude_items), ``(rows, lengths)``: ``int32[total]``
        rows into ``item_ids``, all requests' lists one after the other, and ``int64[num_users]`` each
        request's list length, ``-1`` for a request without that list; None when no request has one.
    """

    user_ids: list[str]
    item_ids: np.ndarray
    lists: dict[str, tuple[np.ndarray, np.ndarray] | None]

    def request(self, i: int) -> dict[str, Any]:
        request: dict[str, Any] = {USER_KEY: self.user_ids[i]}
        for key in _LIST_KEYS:
            request[key] = None
            if self.lists[key] is not None and self.lists[key][1][i] >= 0:
                rows, lengths = self.lists[key]
                start = int(np.maximum(lengths[:i], 0).sum())
                request[key] = self.item_ids[rows[start:start + lengths[i]]].tolist()
        return request

    def catalogue_rows(self, recommender: Recommender) -> tuple[dict[str, list[np.ndarray | None]], np.ndarray]:
        found = recommender.lookup_rows(self.item_ids.tolist())  # catalogue row of each of the chunk's ids
        has_unknown = np.zeros(len(self), bool)
        rows: dict[str, list[np.ndarray | None]] = {}
        for key in _LIST_KEYS:
            if self.lists[key] is None:
                rows[key] = [None] * len(self)
                continue
            chunk_rows, lengths = self.lists[key]
            sizes = np.maximum(lengths, 0)
            mapped = found[chunk_rows]
            has_unknown[np.repeat(np.arange(len(self)), sizes)[mapped < 0]] = True
            ends = np.cumsum(sizes).tolist()
            rows[key] = [None if length < 0 else mapped[end - length:end]
                         for length, end in zip(lengths.tolist(), ends)]
        return rows, has_unknown

    def records(self) -> Iterator[dict[str, Any]]:
        """The requests as :func:`serving.requests_io.parse_request` gives them, in order."""
        columns = {}
        for key in _LIST_KEYS:
            if self.lists[key] is None:
                columns[key] = [None] * len(self.user_ids)
                continue
            rows, lengths = self.lists[key]
            ids = self.item_ids[rows].tolist()  # one conversion for the chunk, then slices of it
            ends = np.cumsum(np.maximum(lengths, 0)).tolist()
            columns[key] = [None if length < 0 else ids[end - length:end]
                            for length, end in zip(lengths.tolist(), ends)]
        for user, history, allow, exclude in zip(self.user_ids, *(columns[key] for key in _LIST_KEYS)):
            yield {USER_KEY: user, HISTORY_KEY: history, ALLOW_KEY: allow, EXCLUDE_KEY: exclude}


def _table_chunks(table: RequestTable, users_per_chunk: int, users: range | None = None) -> list[_RequestChunk]:
    """``table`` (its ``users``, default all) cut into :class:`_RequestChunk` of ``users_per_chunk`` users, each
    with only the ids it uses."""
    columns = dict(zip(_LIST_KEYS, (table.histories, table.allow_items, table.exclude_items)))
    item_ids = np.asarray(table.item_ids)  # only the ids a chunk uses are made strings (a worker calls this per range)
    chunks = []
    every = range(table.num_users) if users is None else users
    for first in range(every.start, every.stop, users_per_chunk):
        chunk_users = range(first, min(first + users_per_chunk, every.stop))
        lists = {key: None if column is None else [column[u] for u in chunk_users]
                 for key, column in columns.items()}
        present = [rows for column in lists.values() if column is not None for rows in column if rows is not None]
        flat = np.concatenate(present).astype(np.int64) if present else np.zeros(0, np.int64)
        used, new_rows = np.unique(flat, return_inverse=True)
        new_rows = new_rows.reshape(-1).astype(np.int32)
        packed: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        start = 0
        for key, column in lists.items():
            if column is None:
                packed[key] = None
                continue
            lengths = np.array([-1 if rows is None else len(rows) for rows in column], np.int64)
            total = int(np.maximum(lengths, 0).sum())
            packed[key] = (new_rows[start:start + total], lengths)
            start += total
        chunks.append(_RequestChunk(user_ids=list(table.user_ids[first:chunk_users.stop]),
                                    item_ids=item_ids[used].astype(str), lists=packed))
    return chunks


class _BatchCoder(beam.coders.Coder):
    """The coder of the pipeline's batch elements (:class:`_RowBatch`, :class:`_RequestBatch`, and
    :mod:`serving.beam_pipeline`'s ``_Outcomes``): pickle where an element crosses a step boundary, and a size
    estimate from the element's length, not from encoding it. A Beam worker samples the size of the first
    elements of every step's output (about 10, then ~7 per doubling) by encoding them; with a few hundred
    large elements that sampled most of them, a pickle of a thousand requests each time
    (docs/benchmarks.md, "Beam pipeline against the local batch job")."""

    def encode(self, element: Any) -> bytes:
        return pickle.dumps(element, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, element: Any) -> int:
        return _BYTES_PER_ROW * len(element)


@dataclasses.dataclass(frozen=True, eq=False)
class _RowBatch:
    """Request rows a worker read, not parsed yet: JSONL lines (``str``; ``bytes`` for a line that is not
    UTF-8) or Parquet rows (``dict``), and what names them in a parse error (the file or pattern): one element
    for many rows, as :class:`_RequestBatch`."""

    where: str
    rows: list[str | bytes] | list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.rows)


@dataclasses.dataclass(frozen=True)
class _ByteRange:
    """Bytes ``[start, end)`` of a JSONL file: its worker serves each line that *starts* in the range."""

    path: str
    start: int
    end: int


def _jsonl_ranges(pattern: str) -> list[_ByteRange]:
    """The byte ranges the workers read ``pattern``'s JSONL files in (from the file sizes alone: the
    launcher reads no line), so even one large file is read by many workers."""
    files = sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda metadata: metadata.path)
    step = max(_RANGE_BYTES, -(-sum(metadata.size_in_bytes for metadata in files) // _MAX_RANGES))
    return [_ByteRange(metadata.path, start, min(start + step, metadata.size_in_bytes))
            for metadata in files for start in range(0, metadata.size_in_bytes, step)]


def _read_jsonl_range(byte_range: _ByteRange) -> Iterator[_RowBatch]:
    """The lines that start in ``byte_range``, as one :class:`_RowBatch` (a range is about a MiB); a line that
    is not UTF-8 as its bytes, which the parser dead-letters alone.

    A line that crosses the range's end is read to its end here; the next range skips it (it reads from
    the byte before its start and drops everything up to the first newline)."""
    path, start, end = byte_range.path, byte_range.start, byte_range.end
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.seek(max(start - 1, 0))
        block = f.read(end - max(start - 1, 0))
        if block and not block.endswith(b"\n"):
            block += f.readline()
    if start > 0:  # the previous range's last line (or, when byte start - 1 is a newline, nothing)
        first = block.find(b"\n")
        block = b"" if first < 0 else block[first + 1:]
    try:
        lines: list[str | bytes] = block.decode("utf-8").split("\n")
    except UnicodeDecodeError:  # decode line by line: a line that is not UTF-8 stays bytes (a dead letter)
        lines = [_utf8_or_bytes(line) for line in block.split(b"\n")]
    lines = [line.removesuffix("\r" if isinstance(line, str) else b"\r") for line in lines]
    yield _RowBatch(path, [line for line in lines if line.strip()])


def _files_have_requests(kind: str, pattern: str) -> bool:
    """Whether ``pattern``'s files (``kind`` ``"jsonl"`` or ``"parquet"``) hold a request, as the workers would
    read them: a JSONL line that is not blank, a Parquet row. The launcher reads only up to the first file
    that has one: its first bytes (JSONL) or its footer (Parquet), never the requests themselves."""
    for metadata in sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda metadata: metadata.path):
        if kind == "jsonl" and metadata.size_in_bytes == 0:
            continue
        with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            if jsonl_has_request(f) if kind == "jsonl" else parquet_num_rows(f, metadata.path) > 0:
                return True
    return False


def _utf8_or_bytes(line: bytes) -> str | bytes:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line


def _parquet_row_batches(table: Any, where: str, rows_per_batch: int) -> Iterator[_RowBatch]:
    """A Parquet row group (``pyarrow.Table``) as :class:`_RowBatch` of at most ``rows_per_batch`` rows,
    so a row group of millions of rows never becomes millions of dicts at once. The columns are those the
    local job reads or refuses (:func:`serving.requests_io.parquet_request_columns`: not a pandas index)."""
    columns = parquet_request_columns(table.schema)
    if columns != table.column_names:
        table = table.select(columns)
    for part in table.to_batches(max_chunksize=rows_per_batch):
        yield _RowBatch(where, part.to_pylist())


def _launcher_path(path: str | Path) -> str:
    """``path`` made absolute on the launcher, where the user gave it (a worker's working directory is not
    the launcher's); a Beam file system URL (``gs://...``) as it is."""
    text = str(path)
    return text if FileSystems.get_scheme(text) else str(Path(text).resolve())


@dataclasses.dataclass(frozen=True)
class _TableSource:
    """Requests read into a table (the dataset, or ``NAME.inter.json``): what the launcher reads for its
    checks, and each worker process reads again, once for its threads (:class:`_ReadTableChunks`). Not
    the requests themselves: ``beam.Create`` of them would pickle and bz2-compress every request into the
    job's graph on the launcher (docs/benchmarks.md, "Beam pipeline against the local batch job").

    Every path is absolute (:func:`_launcher_path`), so a worker reads the files the launcher read, and
    ``--users`` travels as its ids: a worker never reads the user list file.

    Attributes:
      workdir: the training workdir.
      data: ``--data``; None: the dataset the run trained on.
      run_data_dir: without ``data``, the run's dataset directory (its ``config.json`` may give it relative
        to where training ran; resolved on the launcher); None: the run's synthetic dataset (no file).
      requests: a ``NAME.inter.json``; None: the dataset's users.
      users: serve only these users (``--users``, read on the launcher), in this order; None: every user.
      users_from: what names the user list in an error (its file).
    """

    workdir: str
    data: str | None = None
    run_data_dir: str | None = None
    requests: str | None = None
    users: tuple[str, ...] | None = None
    users_from: str = "users"

    @classmethod
    def on_launcher(cls, workdir: str | Path, data: str | Path | None, requests: str | None,
                    users: Sequence[str] | None, users_from: str = "users") -> "_TableSource":
        """The source of the launcher's arguments: paths resolved here, the user ids as given."""
        run_data_dir = None
        if requests is None and data is None:
            run_data_dir = read_run_info(workdir).data.get("data_dir")
        return cls(workdir=_launcher_path(workdir), data=None if data is None else _launcher_path(data),
                   run_data_dir=None if run_data_dir is None else _launcher_path(run_data_dir),
                   requests=None if requests is None else _launcher_path(requests),
                   users=None if users is None else tuple(users), users_from=users_from)

    def read(self) -> "_LoadedTable":
        """The table, as the local job reads it (one-line errors: a bad file, a listed user without a request),
        and its digest."""
        if self.requests is not None:
            table = read_requests(self.requests)
        elif self.data is not None:
            table = _dataset_table(self.workdir, self.data)
        else:  # load_workdir_data without --data, from the launcher's resolved directory
            run_data = {**read_run_info(self.workdir).data, "data_dir": self.run_data_dir}
            table = read_requests(data=load_run_data(run_data, min_interactions=0))
        if self.users is not None:
            table = table.select_users(list(self.users), source=self.users_from)
        return _LoadedTable(table, requests_digest(table))

    def file_name(self, table: RequestTable) -> str:
        """The file ``table`` was read from (what names it in an error)."""
        if self.requests is not None:
            return self.requests
        directory = self.data or self.run_data_dir
        if directory is None:
            return f"the synthetic dataset of {self.workdir}"
        return str(Path(directory) / f"{table.name}{INTER_SUFFIX}")


@dataclasses.dataclass(frozen=True, eq=False)
class _LoadedTable:
    """A process's copy of a :class:`_TableSource`'s table and its :func:`serving.requests_io.requests_digest`
    (computed once per process). A class, not a tuple: Beam's ``shared.Shared`` holds it by weak reference."""

    table: RequestTable
    digest: str


class _ReadTableChunks(beam.DoFn):
    """``(first, stop)`` users of a :class:`_TableSource`'s table -> their requests, in :class:`_RequestChunk`
    of ``users_per_chunk``. The table is read once per process (``shared``, the launcher's own copy on the
    DirectRunner) and held by each thread's DoFn.

    The user ranges are positions in the launcher's table, so a worker refuses a table that is not the
    launcher's (``expected``: its number of users and digest): the file changed after the job started, and
    its positions would serve other users or other histories."""

    def __init__(self, source: _TableSource, table: shared.Shared, users_per_chunk: int,
                 expected: tuple[int, str]):
        self._source = source
        self._shared_table = table
        self._users_per_chunk = users_per_chunk
        self._expected = tuple(expected)
        self._table: RequestTable | None = None

    def setup(self) -> None:
        loaded = self._shared_table.acquire(self._source.read, tag=self._source)
        if (loaded.table.num_users, loaded.digest) != self._expected:
            num_users, digest = self._expected
            raise ValueError(f"{self._source.file_name(loaded.table)}: changed since the job started (this worker "
                             f"read {loaded.table.num_users} users, {loaded.digest}; the launcher {num_users}, "
                             f"{digest}); leave the requests unchanged while a job runs, and run it again")
        self._table = loaded.table

    def process(self, users: tuple[int, int]) -> Iterator[_RequestChunk]:
        yield from _table_chunks(self._table, self._users_per_chunk, range(*users))


class _ParseRequests(beam.DoFn):
    """Rows -> :class:`_RequestBatch` of parsed requests (:func:`serving.requests_io.parse_request`, the local
    job's parser); a row that does not parse goes to the dead-letter output.

    Takes a :class:`_RowBatch` (one :class:`_Requests` out) or a :class:`_RequestChunk` (passed on); or,
    composed by a user, one request row per element (a dict, or a ``(file name, line)`` pair as
    ``ReadFromTextWithFilename`` gives), a :class:`_Requests` of one request out."""

    def __init__(self, where: str):
        self._where = where
        self._failed = Metrics.counter(_METRICS_NAMESPACE, "dead_letter")

    def process(self, element: Any) -> Iterator[Any]:
        if isinstance(element, _RequestChunk):  # read and checked by the local job's readers already
            yield element
            return
        if isinstance(element, _RowBatch):
            where, rows = element.where, element.rows
        elif isinstance(element, tuple):  # ReadFromTextWithFilename: (file name, line)
            where, rows = element[0], [element[1]] if element[1].strip() else []
        else:
            where, rows = self._where, [element]
        requests = []
        for row in rows:
            try:
                if isinstance(row, bytes):  # a JSONL line _read_jsonl_range could not decode: this raises
                    row.decode("utf-8")
                requests.append(parse_request_line(row, where) if isinstance(row, str) else parse_request(row, where))
            except UnicodeDecodeError as error:  # the line as text, U+FFFD for its bad bytes
                self._failed.inc()
                yield beam.pvalue.TaggedOutput(_DEAD_LETTER, _dead_letter(row.decode("utf-8", "replace"), (
                    f"ValueError: {where}: the line is not UTF-8 ({error.reason} at byte offset {error.start} of "
                    "the line); write the requests as UTF-8")))
            except ValueError as error:
                self._failed.inc()
                yield beam.pvalue.TaggedOutput(_DEAD_LETTER, _dead_letter(row, error))
        if requests:
            yield _Requests(requests)


class _Rebatch(beam.DoFn):
    """:class:`_RequestBatch` -> :class:`_RequestBatch` of exactly ``size`` requests (a bundle's last one per
    window shorter), so that each decodes in full batches whatever sizes the readers produced. One of that
    size already (a table's chunk) passes as it is."""

    def __init__(self, size: int):
        self._size = size
        self._pending: dict[Any, list[dict[str, Any]]] = {}

    def start_bundle(self) -> None:
        self._pending = {}

    def process(self, batch: _RequestBatch, window=beam.DoFn.WindowParam) -> Iterator[_RequestBatch]:
        pending = self._pending.setdefault(window, [])
        if not pending and len(batch) == self._size:
            yield batch
            return
        pending.extend(batch.requests if isinstance(batch, _Requests) else batch.records())
        while len(pending) >= self._size:
            yield _Requests(pending[:self._size])
            del pending[:self._size]

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for window, pending in self._pending.items():
            if pending:
                yield WindowedValue(_Requests(pending), window.max_timestamp(), [window])
        self._pending = {}


class _SelectUsers(beam.DoFn):
    """``(user id, {"request": [...], "listed": [...]})`` -> the request of each listed user (as
    :class:`_Requests` of one); a listed user with no request, or with several, is
    dead-lettered (the local job refuses both before it starts)."""

    def __init__(self, source: str):
        self._source = source
        self._failed = Metrics.counter(_METRICS_NAMESPACE, "dead_letter")

    def process(self, element: tuple[str, Mapping[str, list]]) -> Iterator[Any]:
        user, grouped = element
        requests = list(grouped["request"])
        if not list(grouped["listed"]):
            return
        if len(requests) == 1:
            yield _Requests(requests)  # as _ParseRequests gives
            return
        if not requests:
            error = f"--users lists user {user!r}, who has no request in {self._source}; remove it from the list"
            requests = [{USER_KEY: user}]
        else:
            error = f"user {user!r} has {len(requests)} requests in {self._source}; give each user one request"
        for request in requests:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(_DEAD_LETTER, _dead_letter(request, error))


# Batch elements cross step boundaries with _BatchCoder (serving.beam_pipeline registers its _Outcomes too).
for _batch_type in (_RowBatch, _RequestBatch):
    beam.coders.registry.register_coder(_batch_type, _BatchCoder)
