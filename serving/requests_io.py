"""The batch job's inputs and outputs in the user's formats: request tables in, recommendation records out.

Where it sits: files -> **requests_io** -> ``serving.batch_job`` (and any caller of
:class:`serving.Recommender`) -> **requests_io** -> files. Formats (docs/serving.md):

* requests: JSONL (one object a line), Parquet (a file or a directory of them),
  or the standard ``NAME.inter.json``; each request is ``user_id``, ``history``
  (item ids, oldest first) and optional ``allow_items`` / ``exclude_items``
  (item ids; absent or null: no constraint). Other keys and columns are refused
  (:func:`check_request_keys`: a misspelled ``alow_items`` was a request without its list),
  but for the index a pandas DataFrame writes beside its Parquet columns.
* a user list: one user id a line (``genrec recommend --users FILE``).
* item metadata: ``NAME.item.json``, ``{item id: {field: value, ...}}``, whose
  chosen fields go into the output beside each recommended item (null where
  an item lacks one).
* records: ``{"user", "items", "scores", <field>...}`` as JSONL lines or Parquet rows.

Ids are compared as strings everywhere (``genrec.datasets``). pyarrow is an
optional extra (``pip install -e ".[parquet]"``), imported only for Parquet.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import numpy as np

from genrec.console import UserError
from genrec.datasets import INDEX_SUFFIX, INTER_SUFFIX, InteractionData, load_sid_catalogue, unique_keys_hook
from genrec.run_files import check_same_catalogue, read_catalogue, read_run_info

if TYPE_CHECKING:
    from serving.recommender import Recommendations

__all__ = [
    "ItemFields",
    "MissingPyarrow",
    "OUTPUT_FORMATS",
    "REQUEST_KEYS",
    "RequestTable",
    "check_has_requests",
    "check_request_keys",
    "check_requests_catalogue",
    "check_table_catalogue",
    "encode_records",
    "find_item_file",
    "jsonl_has_request",
    "load_item_fields",
    "parse_item_fields",
    "parse_request",
    "parse_request_line",
    "parquet_num_rows",
    "parquet_request_columns",
    "read_records",
    "read_requests",
    "read_user_list",
    "record_line",
    "recommendation_records",
    "records_schema",
    "requests_digest",
    "workdir_item_file",
]

OutputFormat = Literal["jsonl", "parquet"]
OUTPUT_FORMATS: tuple[str, ...] = ("jsonl", "parquet")
ITEM_SUFFIX = ".item.json"
# Request keys (JSONL) and columns (Parquet).
USER_KEY, HISTORY_KEY, ALLOW_KEY, EXCLUDE_KEY = "user_id", "history", "allow_items", "exclude_items"
REQUEST_KEYS: tuple[str, ...] = (USER_KEY, HISTORY_KEY, ALLOW_KEY, EXCLUDE_KEY)
_REQUEST_KEY_SET = frozenset(REQUEST_KEYS)
# Output record keys: item fields may not take these names.
RECORD_KEYS = ("user", "items", "scores")
_MAX_LISTED = 5


class MissingPyarrow(UserError, ImportError):
    """Parquet was asked for and pyarrow is not installed: one line with the install command."""


def _pyarrow(what: str) -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or :class:`MissingPyarrow` naming ``what`` needed them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingPyarrow(f'{what} needs pyarrow: pip install -e ".[parquet]"') from None
    return pyarrow, pyarrow.parquet


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class RequestTable:
    """Requests for the batch job: one per user, item ids stored once.

    Attributes:
      user_ids: ``num_users`` user ids (strings), each once, in serving order.
      item_ids: ``str[num_ids]``, every item id the table mentions; the rows below index it.
      histories: ``num_users`` arrays ``int32[len]`` of rows into ``item_ids``, oldest first.
      allow_items: None (no request has one) or per request None or ``int32[n]``
        rows: only these items may be recommended.
      exclude_items: likewise: these items are never recommended.
      name: what the requests are, for messages and the manifest (a dataset name or a file name).
      catalogue_file: the ``NAME.index.rq-kmeans.json`` beside the ``NAME.inter.json`` the requests were
        read from: the catalogue their item ids belong to, which ``serving.batch_job.run_batch_job``
        checks is its recommender's (:func:`check_table_catalogue`); None: the requests name no catalogue
        (JSONL, Parquet, an ``.inter.json`` alone, a loaded dataset).
    """

    user_ids: list[str]
    item_ids: np.ndarray
    histories: list[np.ndarray]
    allow_items: list[np.ndarray | None] | None = None
    exclude_items: list[np.ndarray | None] | None = None
    name: str = ""
    catalogue_file: Path | None = None

    def __post_init__(self):
        for field, lists in ((ALLOW_KEY, self.allow_items), (EXCLUDE_KEY, self.exclude_items)):
            if lists is not None and len(lists) != len(self.histories):
                raise ValueError(f"{len(lists)} {field} lists for {len(self.histories)} requests")
        if len(self.user_ids) != len(self.histories):
            raise ValueError(f"{len(self.user_ids)} user ids but {len(self.histories)} histories")

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def has_item_lists(self) -> bool:
        """Whether any request carries an allow or exclude list."""
        return any(lists is not None and any(rows is not None for rows in lists)
                   for lists in (self.allow_items, self.exclude_items))

    def records(self) -> Iterator[dict[str, Any]]:
        """The requests as request rows (:func:`parse_request`'s form, item ids as strings), in order."""
        item_ids = np.asarray(self.item_ids).astype(str)

        def ids(lists: list[np.ndarray | None] | None, u: int) -> list[str] | None:
            return None if lists is None or lists[u] is None else item_ids[lists[u]].tolist()

        for u, user in enumerate(self.user_ids):
            yield {USER_KEY: user, HISTORY_KEY: item_ids[self.histories[u]].tolist(),
                   ALLOW_KEY: ids(self.allow_items, u), EXCLUDE_KEY: ids(self.exclude_items, u)}

    @classmethod
    def from_interactions(cls, data: InteractionData) -> "RequestTable":
        """Every user of a loaded dataset, their whole sequence as the history (what the job served before)."""
        return cls(user_ids=list(data.user_ids), item_ids=np.asarray(data.item_ids), histories=list(data.sequences),
                   name=data.name)

    def select_users(self, user_ids: Sequence[str], source: str = "the user list") -> "RequestTable":
        """The requests of ``user_ids``, in that order.

        Raises:
          ValueError: a user id is not in the table: one line naming the first and the count.
        """
        position = {user: i for i, user in enumerate(self.user_ids)}
        unknown = [user for user in user_ids if user not in position]
        if unknown:
            raise ValueError(f"{source}: {len(unknown)} of {len(user_ids)} user id(s) have no request in "
                             f"{self.name!r}, the first {unknown[0]!r}; remove them or recommend from an input "
                             f"that has them")
        rows = [position[user] for user in user_ids]

        def pick(lists: list | None) -> list | None:
            return None if lists is None else [lists[r] for r in rows]

        return dataclasses.replace(self, user_ids=list(user_ids), histories=pick(self.histories),
                                   allow_items=pick(self.allow_items), exclude_items=pick(self.exclude_items))


def requests_digest(requests: RequestTable) -> str:
    """``sha256:<hex>`` of the requests as served: user ids in order, the item id table, each
    history's length and rows, and each allow/exclude list (absent ones marked).

    A table without item lists digests as ``serving.batch_job.input_digest`` did
    before the lists existed, so a job's manifest stays valid across that change.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([str(user) for user in requests.user_ids]).encode())
    digest.update(json.dumps(np.asarray(requests.item_ids).astype(str).tolist()).encode())
    _update_with_lists(digest, requests.histories)
    for key, lists in ((ALLOW_KEY, requests.allow_items), (EXCLUDE_KEY, requests.exclude_items)):
        if lists is not None and any(rows is not None for rows in lists):
            digest.update(key.encode())
            present = np.fromiter((rows is not None for rows in lists), dtype=bool, count=len(lists))
            digest.update(present.tobytes())
            _update_with_lists(digest, [rows for rows in lists if rows is not None])
    return "sha256:" + digest.hexdigest()


def _update_with_lists(digest: Any, lists: Sequence[np.ndarray]) -> None:
    lengths = np.fromiter((len(rows) for rows in lists), dtype="<i8", count=len(lists))
    digest.update(lengths.tobytes())
    if len(lists):
        digest.update(np.concatenate([np.asarray(rows, dtype="<i8") for rows in lists]).tobytes())


@dataclasses.dataclass
class _IdColumn:
    """A list-of-item-ids column while reading: ids flattened, each row's length, null rows."""

    flat_ids: list[str] | np.ndarray
    lengths: np.ndarray  # int64[num_rows]
    is_null: np.ndarray  # bool[num_rows]


def _build_table(name: str, user_ids: list[str], columns: Mapping[str, _IdColumn | None]) -> RequestTable:
    """Interns the columns' ids into one sorted id table (the same table whatever the file's format)."""
    flat = [np.asarray(column.flat_ids, dtype=str) for column in columns.values() if column is not None]
    item_ids, rows = np.unique(np.concatenate(flat) if flat else np.zeros(0, str), return_inverse=True)
    rows = rows.reshape(-1).astype(np.int32)
    out: dict[str, list | None] = {}
    start = 0
    for key, column in columns.items():
        if column is None:
            out[key] = None
            continue
        stop = start + int(column.lengths.sum())
        pieces = np.split(rows[start:stop], np.cumsum(column.lengths)[:-1]) if len(column.lengths) else []
        out[key] = [None if null else piece for piece, null in zip(pieces, column.is_null)]
        start = stop
    return RequestTable(user_ids=user_ids, item_ids=item_ids, histories=out[HISTORY_KEY],
                        allow_items=out.get(ALLOW_KEY), exclude_items=out.get(EXCLUDE_KEY), name=name)


def _check_unique_users(path: Path, place: Callable[[int], str], user_ids: list[str]) -> None:
    """Refuses a user with two requests (the output holds one record per user), naming both places."""
    seen: dict[str, int] = {}
    for position, user in enumerate(user_ids):
        if user in seen:
            raise ValueError(f"{path}: user {user!r} has two requests ({place(seen[user])} and {place(position)}); "
                             "give each user one request")
        seen[user] = position


_STR_TYPE = frozenset({str})


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def check_request_keys(keys: Iterable[str], where: str, kind: Literal["key", "column"] = "key") -> None:
    """Refuses a request key (JSONL) or column (Parquet) other than :data:`REQUEST_KEYS`.

    A misspelled key was ignored: ``"alow_items"`` served its request from the whole catalogue. The one
    check of every reader: :func:`parse_request` (JSONL lines of the local job and the Beam workers,
    Parquet rows on Beam) and the local job's Parquet reader (the file's columns,
    :func:`parquet_request_columns`).

    Raises:
      ValueError: one line starting with ``where``, naming the unknown keys (and the nearest
        accepted one, for one) and the accepted keys.
    """
    unknown = [key for key in keys if key not in _REQUEST_KEY_SET]
    if not unknown:
        return
    close = difflib.get_close_matches(str(unknown[0]), REQUEST_KEYS, n=1) if len(unknown) == 1 else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{where}: unknown {kind}{'s' if len(unknown) > 1 else ''} "
                     f"{', '.join(repr(key) for key in unknown)}{hint}; a request takes the {kind}s {USER_KEY}, "
                     f"{HISTORY_KEY} (required), {ALLOW_KEY}, {EXCLUDE_KEY}")


def parquet_request_columns(schema: Any) -> list[str]:
    """The columns of a Parquet schema (``pyarrow.Schema``) that are request data: all but the index a pandas
    DataFrame's ``to_parquet`` writes beside its columns (``__index_level_0__`` after a filter: row labels,
    not a request field); an index named as a request column (``user_id``) stays."""
    index = {name for name in (schema.pandas_metadata or {}).get("index_columns", ()) if isinstance(name, str)}
    return [name for name in schema.names if name not in index - _REQUEST_KEY_SET]


def parse_request(request: Any, where: str) -> dict[str, Any]:
    """One request (a decoded JSONL object or a Parquet row as a dict), checked and normalised.

    The one parser of a request row: the local job's JSONL reader and the Beam
    pipeline (serving/beam_pipeline.py) both call it, so both accept and refuse the same rows.

    Args:
      request: ``{"user_id": id, "history": [item id, ...], "allow_items": [...] | None,
        "exclude_items": [...] | None}``; another key is refused (:func:`check_request_keys`).
      where: what to name in an error (``"requests.jsonl: line 3"``).

    Returns:
      ``{"user_id": str, "history": [str, ...], "allow_items": [str, ...] | None,
      "exclude_items": [str, ...] | None}`` (ids as strings; None: no such list).

    Raises:
      ValueError: one line starting with ``where``: not an object, a missing
        ``user_id`` or ``history``, an unknown key, an id or list of the wrong type.
    """
    if not isinstance(request, Mapping):
        raise ValueError(f"{where}: expected an object {{\"{USER_KEY}\": ..., \"{HISTORY_KEY}\": [item "
                         f"ids]}}, got {type(request).__name__}")
    for key in (USER_KEY, HISTORY_KEY):
        if key not in request:
            raise ValueError(f"{where}: no {key!r}; every request needs {USER_KEY!r} and {HISTORY_KEY!r} "
                             "(a list of item ids, oldest first)")
    if not _REQUEST_KEY_SET.issuperset(request):
        check_request_keys(request, where)
    if not _is_id(request[USER_KEY]):
        raise ValueError(f"{where}: {USER_KEY!r} is {request[USER_KEY]!r}; give a string or an integer")
    parsed: dict[str, Any] = {USER_KEY: str(request[USER_KEY])}
    for key in (HISTORY_KEY, ALLOW_KEY, EXCLUDE_KEY):
        value = request.get(key)
        if value is None and key != HISTORY_KEY:
            parsed[key] = None
            continue
        if isinstance(value, list) and set(map(type, value)) <= _STR_TYPE:  # all strings: checked at C speed
            parsed[key] = list(value)
            continue
        if not isinstance(value, list) or not all(_is_id(item) for item in value):
            got = ("null" if value is None else type(value).__name__) if not isinstance(value, list) else (
                "a list holding " + next(repr(item) for item in value if not _is_id(item)))
            raise ValueError(f"{where}: {key!r} is {got}; give a list of item ids (strings or integers)")
        parsed[key] = [str(item) for item in value]
    return parsed


def parse_request_line(line: str, where: str) -> dict[str, Any]:
    """One JSONL line as a request (:func:`parse_request`); ValueError naming ``where`` if it is not JSON."""
    try:
        request = json.loads(line)
        if isinstance(request, dict) and line.count(":") > len(request):
            # A key given twice (json keeps the last) leaves fewer keys than colons; so do colons inside
            # strings: only such lines pay for the checking parse (it doubles the parse time).
            request = json.loads(line, object_pairs_hook=unique_keys_hook(where))
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: malformed JSON ({e.msg}, column {e.colno}); one request object a line") from None
    return parse_request(request, where)


def _read_jsonl(path: Path) -> RequestTable:
    user_ids: list[str] = []
    # Per list key: (item ids flattened, each request's length, whether the request has no such list).
    lists: dict[str, tuple[list[str], list[int], list[bool]]] = {
        key: ([], [], []) for key in (HISTORY_KEY, ALLOW_KEY, EXCLUDE_KEY)}
    line_of_request: list[str] = []
    with path.open("r", encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            request = parse_request_line(line, f"{path}: line {line_number}")
            user_ids.append(request[USER_KEY])
            line_of_request.append(f"line {line_number}")  # blank lines make lines and requests differ
            for key, (flat, lengths, nulls) in lists.items():
                items = request[key]
                flat.extend(items or ())
                lengths.append(len(items or ()))
                nulls.append(items is None)
    _check_unique_users(path, line_of_request.__getitem__, user_ids)
    columns = {key: (_IdColumn(flat, np.asarray(lengths, np.int64), np.asarray(nulls, bool))
                     if key == HISTORY_KEY or not all(nulls) else None)
               for key, (flat, lengths, nulls) in lists.items()}
    return _build_table(path.name, user_ids, columns)


def _parquet_id_column(pa: Any, path: Path, table: Any, key: str) -> _IdColumn | None:
    """A list column of item ids (strings or integers) from a pyarrow table; None when absent."""
    if key not in table.column_names:
        return None
    column = table.column(key).combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise ValueError(f"{path}: column {key!r} is {column.type}, expected a list of item ids "
                         "(list<string> or list<int64>)")
    value_type = column.type.value_type
    if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type) or pa.types.is_integer(value_type)):
        raise ValueError(f"{path}: column {key!r} holds {value_type}, expected item ids as strings or integers")
    is_null = column.is_null().to_numpy(zero_copy_only=False)
    if key == HISTORY_KEY and is_null.any():
        raise ValueError(f"{path}: row {int(np.argmax(is_null))} (counting from 0) has a null {key!r}; "
                         "every request needs a list of item ids (an empty list for a cold-start user)")
    values = column.flatten()  # the non-null rows' items, in row order
    lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    if values.null_count:
        first_null = int(np.argmax(values.is_null().to_numpy(zero_copy_only=False)))
        bad_row = int(np.searchsorted(np.cumsum(lengths), first_null, side="right"))
        raise ValueError(f"{path}: row {bad_row} (counting from 0): {key!r} holds a null item id; remove it")
    return _IdColumn(values.cast(pa.string()).to_numpy(zero_copy_only=False), lengths, is_null)


def _unreadable_parquet(where: str | Path, error: BaseException) -> ValueError:
    return ValueError(f"{where}: not a readable Parquet file ({error}); write it with pyarrow, Spark or pandas")


def _read_parquet(path: Path) -> RequestTable:
    pa, pq = _pyarrow(f"{path}: reading Parquet")
    try:
        schema = pq.read_schema(path) if path.is_file() else pq.ParquetDataset(path).schema
        schema_names, data_columns = schema.names, parquet_request_columns(schema)
        wanted = [key for key in (USER_KEY, HISTORY_KEY, ALLOW_KEY, EXCLUDE_KEY) if key in schema_names]
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowInvalid, OSError) as e:
        raise _unreadable_parquet(path, e) from None
    for key in (USER_KEY, HISTORY_KEY):
        if key not in table.column_names:
            raise ValueError(f"{path}: no column {key!r} (columns: {', '.join(schema_names)}); every request needs "
                             f"{USER_KEY!r} and {HISTORY_KEY!r} (a list of item ids, oldest first)")
    check_request_keys(data_columns, str(path), "column")
    users = table.column(USER_KEY).combine_chunks()
    if not (pa.types.is_string(users.type) or pa.types.is_large_string(users.type) or pa.types.is_integer(users.type)):
        raise ValueError(f"{path}: column {USER_KEY!r} is {users.type}; give user ids as strings or integers")
    if users.null_count:
        row = int(np.argmax(users.is_null().to_numpy(zero_copy_only=False)))
        raise ValueError(f"{path}: row {row} (counting from 0) has a null {USER_KEY!r}; give every request a user id")
    user_ids = [str(user) for user in users.cast(pa.string()).to_pylist()]
    _check_unique_users(path, lambda row: f"row {row}", user_ids)
    columns = {key: _parquet_id_column(pa, path, table, key) for key in (HISTORY_KEY, ALLOW_KEY, EXCLUDE_KEY)}
    return _build_table(path.name, user_ids, columns)


def _read_inter_json(path: Path) -> RequestTable:
    """``NAME.inter.json`` as requests: every user, the whole sequence as the history."""
    try:
        inter = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys_hook(path, "user id"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(inter, dict):
        raise ValueError(f"{path}: expected a JSON object {{user id: [item ids]}}")
    flat: list[str] = []
    lengths = []
    for user, items in inter.items():
        if not isinstance(items, list) or not all(_is_id(item) for item in items):
            raise ValueError(f"{path}: user {user!r}: expected a list of item ids, got {items!r}"[:300])
        flat.extend(str(item) for item in items)
        lengths.append(len(items))
    history = _IdColumn(flat, np.asarray(lengths, np.int64), np.zeros(len(lengths), bool))
    table = _build_table(path.name[: -len(INTER_SUFFIX)], [str(user) for user in inter], {HISTORY_KEY: history})
    return dataclasses.replace(table, catalogue_file=_catalogue_file(path))


def read_requests(path: str | Path | None = None, *, data: InteractionData | None = None) -> RequestTable:
    """The requests of a file, or of a loaded dataset.

    Args:
      path: ``*.jsonl`` (one request object a line), ``*.parquet`` (or a directory
        of Parquet files), or ``NAME.inter.json`` (every user, whole sequence as history;
        beside its ``NAME.index.rq-kmeans.json``, the table's ``catalogue_file``, which
        ``serving.batch_job.run_batch_job`` checks is its recommender's catalogue).
      data: instead of ``path``: a loaded dataset (what ``genrec recommend`` serves by default).

    Raises:
      ValueError: a malformed request, naming the file and the line (JSONL) or
        row (Parquet, counting from 0) and the fix; a user with two requests; a file without requests.
      MissingPyarrow: a Parquet path without pyarrow installed.
    """
    if (path is None) == (data is None):
        raise ValueError("read_requests takes a path or data=, not both or neither")
    if data is not None:
        return RequestTable.from_interactions(data)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: request file not found")
    if path.name.endswith(INTER_SUFFIX):
        table = _read_inter_json(path)
    elif path.suffix in (".parquet", ".pq") or (path.is_dir() and any(path.glob("*.parquet"))):
        table = _read_parquet(path)
    elif path.suffix in (".jsonl", ".ndjson"):
        table = _read_jsonl(path)
    else:
        raise ValueError(f"{path}: unknown request format; give a .jsonl or .parquet file, a directory of .parquet "
                         f"files, or a NAME{INTER_SUFFIX}")
    check_has_requests(path, table.num_users > 0)
    return table


def check_has_requests(path: str | Path, has_requests: bool) -> None:
    """Refuses a request file (or files) without a request, naming ``path``: a job over it would "succeed"
    with no output, and it is most likely the wrong file.

    The one refusal of both runners: :func:`read_requests` (the local job, the Beam launcher's
    ``NAME.inter.json``) and the Beam launcher's JSONL and Parquet files, which it does not read whole
    (:func:`jsonl_has_request`, :func:`parquet_num_rows`).

    Raises:
      ValueError: ``has_requests`` is false.
    """
    if not has_requests:
        raise ValueError(f"{path}: no requests in the file; give at least one request (a user_id and a history)")


_PROBE_BYTES = 1 << 16


def jsonl_has_request(f: BinaryIO) -> bool:
    """Whether a JSONL file (open in binary mode) has a line that is not blank, the readers' request lines;
    read only up to the first such line's first byte (the whole file only when it is blank)."""
    while chunk := f.read(_PROBE_BYTES):
        if chunk.strip():
            return True
    return False


def parquet_num_rows(source: str | Path | BinaryIO, where: str | Path) -> int:
    """The rows of one Parquet file (a path, or a seekable binary file object), from its footer alone.

    Raises:
      ValueError: not a Parquet file, named ``where``, in :func:`read_requests`' words.
      MissingPyarrow: without pyarrow.
    """
    pa, pq = _pyarrow(f"{where}: reading Parquet")
    try:
        return int(pq.ParquetFile(source).metadata.num_rows)
    except (pa.ArrowInvalid, OSError) as e:
        raise _unreadable_parquet(where, e) from None


def _catalogue_file(path: Path) -> Path | None:
    """The ``NAME.index.rq-kmeans.json`` beside a ``NAME.inter.json`` request file, or None (another format,
    or no index beside it)."""
    if not path.name.endswith(INTER_SUFFIX):
        return None
    index = path.parent / f"{path.name[: -len(INTER_SUFFIX)]}{INDEX_SUFFIX}"
    return index if index.is_file() else None


def _check_catalogue_file(index: Path, sid_codes: np.ndarray, item_ids: np.ndarray, model: str | Path) -> None:
    catalogue = load_sid_catalogue(index.parent, index.name[: -len(INDEX_SUFFIX)])
    check_same_catalogue(catalogue, item_ids, sid_codes, model)  # type: ignore[arg-type]


def check_requests_catalogue(path: str | Path, workdir: str | Path) -> None:
    """Refuses a ``NAME.inter.json`` request file of another catalogue than the workdir's model, as ``--data``
    refuses its dataset (:func:`genrec.run_files.check_same_catalogue`), before the model is loaded.

    Numeric item ids of two catalogues overlap, so another catalogue's histories would be served as unrelated
    items of this one (``--skip-unknown`` dropping the rest). The check needs the file's catalogue: its
    sibling ``NAME.index.rq-kmeans.json``; other request files (and an ``.inter.json`` alone) carry no
    catalogue and are not checked. A table read from such a file is checked again by
    ``serving.batch_job.run_batch_job`` (:func:`check_table_catalogue`), with the same words.

    Raises:
      ValueError: one line giving the counts, example ids and the fix.
    """
    index = _catalogue_file(Path(path))
    if index is not None:
        sid_codes, item_ids = read_catalogue(workdir)
        _check_catalogue_file(index, sid_codes, item_ids, workdir)


def check_table_catalogue(requests: RequestTable, sid_codes: np.ndarray, item_ids: Sequence[Any] | np.ndarray,
                          model: str = "the recommender") -> None:
    """Refuses requests read from a ``NAME.inter.json`` of another catalogue than the model's (``sid_codes``,
    ``item_ids``: a recommender's), as :func:`check_requests_catalogue` refuses the file for a workdir.

    ``serving.batch_job.run_batch_job`` calls it, so ``read_requests("X.inter.json")`` followed by a job is
    checked as the CLI is. Requests that name no catalogue (``requests.catalogue_file`` None) pass.

    Args:
      model: what names the model's catalogue in the message.

    Raises:
      ValueError: one line giving the counts, example ids and the fix.
    """
    if requests.catalogue_file is not None:
        _check_catalogue_file(Path(requests.catalogue_file), np.asarray(sid_codes), np.asarray(item_ids), model)


def read_user_list(path: str | Path) -> list[str]:
    """User ids of a file, one a line (blank lines skipped), each once.

    Raises:
      ValueError: an empty list or a repeated id, naming the file and lines.
    """
    path = Path(path)
    user_ids: list[str] = []
    line_of: dict[str, int] = {}
    with path.open("r", encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            user = line.strip()
            if not user:
                continue
            if user in line_of:
                raise ValueError(f"{path}: user {user!r} is listed twice (lines {line_of[user]} and {line_number}); "
                                 "list each user once")
            line_of[user] = line_number
            user_ids.append(user)
    if not user_ids:
        raise ValueError(f"{path}: no user ids; give one user id a line")
    return user_ids


# ---------------------------------------------------------------------------
# Item metadata
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ItemFields:
    """Metadata fields carried into the output beside each recommended item.

    Attributes:
      names: the fields, in output order.
      values: ``{name: [value or None per catalogue row]}``, aligned with the recommender's ``item_ids``.
      source: the file they came from (for messages).
    """

    names: tuple[str, ...]
    values: dict[str, list[Any]]
    source: str = ""

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the names and every value: a job resumed with other metadata is refused."""
        payload = json.dumps([[name, self.values[name]] for name in self.names], sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()

    def for_rows(self, rows: np.ndarray) -> dict[str, list[Any]]:
        """``{name: [value per row]}`` for catalogue rows (the recommended items of one request)."""
        return {name: [self.values[name][row] for row in rows.tolist()] for name in self.names}


def parse_item_fields(spec: str) -> list[str]:
    """``--item-fields title,brand`` -> ``["title", "brand"]``; UserError when it names none."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise UserError(f"--item-fields {spec!r} names no field; give e.g. --item-fields title,brand")
    return names


def workdir_item_file(workdir: str | Path, data_dir: str | Path | None, dataset_name: str | None = None) -> Path:
    """``NAME.item.json`` of ``--data`` (``data_dir``) or of the directory of the dataset the workdir trained on."""
    if data_dir is None:
        run_data = read_run_info(workdir).data
        if run_data.get("data_dir") is None:
            raise UserError("--item-fields reads NAME.item.json from a dataset directory, but the model was trained "
                            "on the built-in synthetic data: pass --data DIR")
        data_dir, dataset_name = run_data["data_dir"], dataset_name or run_data.get("name")
    return find_item_file(data_dir, dataset_name)


def find_item_file(data_dir: str | Path, name: str | None = None) -> Path:
    """``DATA_DIR/NAME.item.json``; ``name`` inferred when the directory holds exactly one ``*.item.json``."""
    data_dir = Path(data_dir)
    if name is None:
        found = sorted(data_dir.glob(f"*{ITEM_SUFFIX}"))
        if len(found) != 1:
            listed = ", ".join(p.name for p in found) or "none"
            raise ValueError(f"{data_dir}: --item-fields needs one NAME{ITEM_SUFFIX}, found {len(found)} ({listed})")
        return found[0]
    path = data_dir / f"{name}{ITEM_SUFFIX}"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: item metadata file not found; --item-fields reads fields from "
                                f"NAME{ITEM_SUFFIX} ({{item id: {{field: value}}}}) beside the dataset")
    return path


def load_item_fields(path: str | Path, names: Sequence[str], item_ids: Sequence[Any] | np.ndarray) -> ItemFields:
    """``names`` of each catalogue item from ``NAME.item.json`` (``{item id: {field: value, ...}}``).

    An item missing from the file, or lacking a field, gets None (null in the output).

    Raises:
      ValueError: a name that is an output key (``user``, ``items``, ``scores``) or
        given twice; a field no item has (a typo would otherwise give all nulls);
        a file that is not an object of objects. Each names the file and the fix.
    """
    path = Path(path)
    names = tuple(names)
    for name in names:
        if name in RECORD_KEYS or not name:
            raise ValueError(f"--item-fields: {name!r} cannot be an item field (the output's keys are "
                             f"{', '.join(RECORD_KEYS)}); choose other fields of {path.name}")
        if names.count(name) > 1:
            raise ValueError(f"--item-fields: {name!r} is given twice; give each field once")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys_hook(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: expected a JSON object {{item id: {{field: value, ...}}}}")
    for item, fields in metadata.items():
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: item {item!r}: expected an object {{field: value, ...}}, "
                             f"got {type(fields).__name__}")
    present = {field for fields in metadata.values() for field in fields}
    for name in names:
        if name not in present:
            known = ", ".join(sorted(present)[:10]) or "none"
            raise ValueError(f"{path}: no item has the field {name!r} (fields there: {known}); "
                             "check --item-fields")
    entries = [metadata.get(str(item_id), {}) for item_id in np.asarray(item_ids).tolist()]
    values = {name: [entry.get(name) for entry in entries] for name in names}
    return ItemFields(names=names, values=values, source=str(path))


# ---------------------------------------------------------------------------
# Output records
# ---------------------------------------------------------------------------


def recommendation_records(user_ids: Sequence[str], recs: "Recommendations",
                           item_fields: ItemFields | None = None) -> list[dict[str, Any]]:
    """The output record of each request: ``{"user", "items", "scores", <field>...}``, valid slots only.

    The one record layout of the local job and the Beam pipeline: ``recs`` is
    :meth:`serving.Recommender.recommend`'s result for ``user_ids``, in order;
    scores are rounded to 6 decimals, item ids written as strings.
    """
    # One conversion to Python objects per batch (not per request), the same values: float32 -> float is exact.
    item_ids, scores, valid = recs.item_ids.tolist(), recs.scores.tolist(), recs.valid.tolist()
    records = []
    for i, user in enumerate(user_ids):
        keep = valid[i]
        record = {
            "user": str(user),
            "items": [str(item) for item, ok in zip(item_ids[i], keep) if ok],
            "scores": [round(score, 6) for score, ok in zip(scores[i], keep) if ok],
        }
        if item_fields is not None:
            record.update(item_fields.for_rows(recs.item_rows[i][recs.valid[i]]))
        records.append(record)
    return records


def record_line(record: dict[str, Any]) -> str:
    """One record as its JSONL line, without the newline."""
    return json.dumps(record)


def records_schema(item_fields: ItemFields | None = None) -> Any:
    """The Parquet schema of the records: ``user`` (string), ``items`` (list<string>),
    ``scores`` (list<double>) and one list column per item field, each field's type
    inferred over the whole catalogue, so every shard of a job has this one schema.

    Raises:
      MissingPyarrow: without pyarrow.
      ValueError: an item field mixes value types Parquet cannot hold in one column.
    """
    pa, _ = _pyarrow("--output-format parquet")
    columns = [pa.field("user", pa.string()), pa.field("items", pa.list_(pa.string())),
               pa.field("scores", pa.list_(pa.float64()))]
    for name in item_fields.names if item_fields else ():
        try:
            value_type = pa.array(item_fields.values[name]).type
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"{item_fields.source}: field {name!r} mixes value types ({e}); Parquet holds one type "
                             "a column: make them agree or use --output-format jsonl") from None
        columns.append(pa.field(name, pa.list_(pa.string() if pa.types.is_null(value_type) else value_type)))
    return pa.schema(columns)


def encode_records(output_format: OutputFormat, item_fields: ItemFields | None = None
                   ) -> Callable[[list[dict[str, Any]]], bytes]:
    """The encoder of one shard's records (:func:`recommendation_records`) as file bytes.

    JSONL: one :func:`record_line` a line. Parquet: one table of
    :func:`records_schema`. Building the Parquet encoder checks pyarrow and the
    field types before any work is done.

    Raises:
      MissingPyarrow: Parquet without pyarrow.
      ValueError: an item field mixes value types Parquet cannot hold in one column.
    """
    if output_format == "jsonl":
        return lambda records: "".join(record_line(record) + "\n" for record in records).encode("utf-8")
    if output_format != "parquet":
        raise ValueError(f"output format {output_format!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    schema = records_schema(item_fields)
    pa, pq = _pyarrow("--output-format parquet")

    def encode(records: list[dict[str, Any]]) -> bytes:
        table = pa.Table.from_pylist(records, schema=schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()

    return encode


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of one output shard (``.jsonl`` or ``.parquet``), as written."""
    path = Path(path)
    if path.suffix == ".parquet":
        _, pq = _pyarrow(f"{path}: reading Parquet")
        return pq.read_table(path).to_pylist()
    with path.open("r", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

