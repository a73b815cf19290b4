"""Raw interaction logs (CSV or Parquet) -> a dataset in the standard SID format.

Where it sits: a team's event log -> :func:`read_interactions` -> :func:`filter_log` (around
:func:`chronological_k_core`) -> :func:`write_interactions` -> ``NAME.inter.json``; with item
embeddings, :func:`write_sid_index` (``genrec.rqkmeans``) adds ``NAME.index.rq-kmeans.json`` and
``NAME.vocab.json`` for the items kept, so the directory loads with ``genrec.datasets.load_sid_dataset``
and trains with ``genrec train --set data.data_dir=DIR``.

What happens to the log (docs/data.md, "Bring your own data"):

* **Order.** Each user's events are sorted by timestamp; events with equal timestamps keep their
  order in the file (a stable sort), so a log written in event order stays in that order.
* **Duplicates** (``dedupe``): ``"consecutive"`` (default) collapses a run of the same item in a
  user's sequence into its first event: a reload or double click is not a new interaction, and
  would make "the item you just saw" a trivial next-item target; a later return to the item is
  kept (re-consumption is signal). ``"first"`` keeps only a user's first event per item (one
  interaction per user-item pair, like the review datasets); ``"none"`` keeps every event.
* **k-core** (``k_core``, default 5 as the published Amazon datasets): users and items with fewer
  than ``k`` kept interactions are dropped, repeatedly, until every remaining user and item has at
  least ``k``; consecutive repeats that a removal makes adjacent are collapsed along the way. The
  result is the unique largest sub-log with both properties.
* **Ids** are kept verbatim as strings (the format allows string ids), so the dataset's item and
  user ids are the log's and no mapping file is needed. Users appear in the order of their first
  event in the file.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from genrec.console import UserError, add_verbose_flag, run_command, setup_logging
from genrec.datasets import INDEX_SUFFIX, INTER_SUFFIX
from genrec.rqkmeans import (
    RQKMeansConfig,
    SemanticIDReport,
    _load_embeddings,
    add_sid_arguments,
    build_and_write_index,
    check_finite_embeddings,
    check_sid_arguments,
    check_unique_item_ids,
    read_item_ids_json,
    sid_config,
)
from genrec.vocab import write_json_atomic

__all__ = ["DEDUPE_RULES", "InteractionLog", "ConvertedLog", "read_interactions", "parse_timestamps",
           "chronological_k_core", "filter_log", "write_interactions", "load_item_embeddings", "check_embedded",
           "write_sid_index", "main"]

logger = logging.getLogger(__name__)

DEDUPE_RULES = ("consecutive", "first", "none")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
_MAX_LISTED = 5  # how many offending ids an error message lists
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, eq=False)
class InteractionLog:
    """Events as read from a file, in file order.

    Attributes:
      user_ids: ``str[num_events]``.
      item_ids: ``str[num_events]``.
      timestamps: ``int64[num_events]`` (integers, Parquet timestamps in their unit, ISO 8601 texts
        as microseconds since the epoch) or ``float64[num_events]`` (non-integer numbers).
      source: the file, for messages.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray
    source: str = ""

    @property
    def num_events(self) -> int:
        return int(len(self.timestamps))


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _iso_microseconds(text: str) -> int:
    """ISO 8601 date or date/time -> microseconds since 1970-01-01 UTC (a time without a zone is UTC)."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_timestamps(texts: Sequence[str], source: str, column: str,
                     where: Callable[[int], str] = lambda i: f"row {i + 1}") -> np.ndarray:
    """Timestamp texts -> ``int64[N]`` or ``float64[N]``, comparable within the column.

    A column holds numbers (e.g. Unix seconds; ``int64`` if every value is an integer, else
    ``float64``) or ISO 8601 dates/date-times (``int64`` microseconds since the epoch, UTC when no
    zone is given), decided by its first value. ``where(i)`` names data row ``i`` in messages.

    Raises:
      ValueError: a value of another kind, empty, or not finite; one line naming the file, the
        column and the row.
    """
    texts = np.asarray(texts, dtype=str)
    if texts.size == 0:
        return np.zeros(0, dtype=np.int64)

    def fail(row: int) -> ValueError:
        return ValueError(f"{source}: column {column!r}, {where(row)}: cannot parse {str(texts[row])!r} as a "
                          "timestamp; give numbers (e.g. Unix seconds) or ISO 8601 dates, one kind per column")

    if _is_number(str(texts[0])):
        try:
            return texts.astype(np.int64)
        except (ValueError, OverflowError):
            pass
        try:
            parsed = texts.astype(np.float64)
        except ValueError:
            raise fail(next(i for i, text in enumerate(texts.tolist()) if not _is_number(text))) from None
        not_finite = np.flatnonzero(~np.isfinite(parsed))
        if not_finite.size:
            raise fail(int(not_finite[0]))
        return parsed
    parsed = np.empty(texts.size, dtype=np.int64)
    for row, text in enumerate(texts.tolist()):
        try:
            parsed[row] = _iso_microseconds(text)
        except ValueError:
            raise fail(row) from None
    return parsed


def _check_ids(ids: np.ndarray, source: str, column: str, where: Callable[[int], str]) -> np.ndarray:
    empty = np.flatnonzero(np.char.str_len(ids) == 0) if ids.size else np.zeros(0, dtype=np.int64)
    if empty.size:
        raise ValueError(f"{source}: column {column!r}, {where(int(empty[0]))}: empty id; "
                         "fill it or remove the row")
    return ids


def _column_positions(source: str, header: Sequence[str], columns: Sequence[str], option_of: dict[str, str]
                      ) -> list[int]:
    positions = []
    for column in columns:
        matches = [i for i, name in enumerate(header) if name == column]
        if not matches:
            raise ValueError(f"{source}: no column {column!r} (columns: {', '.join(map(repr, header))}); "
                             f"pass {option_of[column]} with one of them")
        if len(matches) > 1:
            raise ValueError(f"{source}: column {column!r} appears {len(matches)} times in the header; rename one")
        positions.append(matches[0])
    return positions


def _read_csv(path: Path, columns: Sequence[str], option_of: dict[str, str], delimiter: str
              ) -> tuple[list[list[str]], Callable[[int], str]]:
    """Columns of a CSV file as lists of texts, and the namer of data row ``i`` (with its line)."""
    lines: list[int] = []
    with path.open("r", newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: empty file; expected a header row naming the columns")
            positions = _column_positions(str(path), header, columns, option_of)
            width = max(positions) + 1
            values: list[list[str]] = [[] for _ in columns]
            for record in reader:
                if not record:  # a blank line
                    continue
                if len(record) < width:
                    raise ValueError(f"{path}: row {len(lines) + 1} (line {reader.line_num}) has {len(record)} "
                                     f"fields, the header {len(header)}; check the delimiter (--delimiter) or "
                                     "the row's quoting")
                for out, position in zip(values, positions):
                    out.append(record[position])
                lines.append(reader.line_num)
        except csv.Error as error:
            raise ValueError(f"{path}: line {reader.line_num}: malformed CSV ({error})") from None
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text ({error.reason}); save it as UTF-8") from None
    return values, lambda i: f"row {i + 1} (line {lines[i]})"


def _read_parquet(path: Path, columns: Sequence[str], option_of: dict[str, str], time_col: str
                  ) -> tuple[dict[str, np.ndarray], Callable[[int], str]]:
    """Columns of a Parquet file: ids as ``str[N]``, the time column parsed; ``where`` names a row."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{path}: reading Parquet needs pyarrow; pip install -e '.[parquet]'") from None
    try:
        schema = pq.read_schema(path)
    except pa.ArrowException as error:
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    _column_positions(str(path), schema.names, columns, option_of)
    table = pq.read_table(path, columns=list(dict.fromkeys(columns)))

    def where(i: int) -> str:
        return f"row {i + 1}"

    out: dict[str, np.ndarray] = {}
    for column in dict.fromkeys(columns):
        values = table.column(column)
        if values.null_count:
            first = int(np.flatnonzero(np.asarray(pc.is_null(values)))[0])
            raise ValueError(f"{path}: column {column!r}, {where(first)}: missing value; fill it or remove the row")
        kind = values.type
        if column != time_col:
            out[column] = np.asarray(values.cast(pa.string()).to_pylist(), dtype=str)
        elif pa.types.is_timestamp(kind) or pa.types.is_duration(kind):
            out[column] = np.asarray(values.cast(pa.int64())).astype(np.int64)
        elif pa.types.is_date(kind):
            out[column] = np.asarray(values.cast(pa.timestamp("s")).cast(pa.int64())).astype(np.int64)
        elif pa.types.is_integer(kind):
            out[column] = np.asarray(values).astype(np.int64)
        elif pa.types.is_floating(kind):
            parsed = np.asarray(values).astype(np.float64)
            not_finite = np.flatnonzero(~np.isfinite(parsed))
            if not_finite.size:
                raise ValueError(f"{path}: column {column!r}, {where(int(not_finite[0]))}: timestamp "
                                 f"{parsed[not_finite[0]]} is not finite; fix or remove the row")
            out[column] = parsed
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            out[column] = parse_timestamps(values.to_pylist(), str(path), column, where)
        else:
            raise ValueError(f"{path}: column {column!r} has type {kind}, not a timestamp; give integers, "
                             "floats, timestamps, dates or ISO 8601 texts")
    return out, where


def read_interactions(path: str | Path, user_col: str, item_col: str, time_col: str, *,
                      delimiter: str | None = None) -> InteractionLog:
    """Reads the user, item and time columns of a CSV (``.csv``, ``.tsv``, ``.txt``; a header row
    names the columns) or Parquet (``.parquet``, ``.pq``; needs pyarrow) file.

    Args:
      delimiter: CSV field separator; default tab for ``.tsv``, else comma.

    Raises:
      ValueError: an unknown file kind, a missing column, a short row, an empty id or an unparsable
        timestamp; one line naming the file, the column and the row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    columns = [user_col, item_col, time_col]
    option_of = {user_col: "--user-col", item_col: "--item-col", time_col: "--time-col"}
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        texts, where = _read_csv(path, columns, option_of, delimiter or ("\t" if suffix == ".tsv" else ","))
        user_ids, item_ids = np.asarray(texts[0], dtype=str), np.asarray(texts[1], dtype=str)
        timestamps = parse_timestamps(texts[2], str(path), time_col, where)
    elif suffix in PARQUET_SUFFIXES:
        by_column, where = _read_parquet(path, columns, option_of, time_col)
        user_ids, item_ids, timestamps = by_column[user_col], by_column[item_col], by_column[time_col]
    else:
        raise ValueError(f"{path}: unknown file kind {suffix!r}; give a .csv, .tsv or .parquet file")
    _check_ids(user_ids, str(path), user_col, where)
    _check_ids(item_ids, str(path), item_col, where)
    return InteractionLog(user_ids=user_ids, item_ids=item_ids, timestamps=timestamps, source=str(path))


# ---------------------------------------------------------------------------
# Ordering, duplicates, k-core
# ---------------------------------------------------------------------------


def chronological_k_core(user_codes: np.ndarray, item_codes: np.ndarray, timestamps: np.ndarray, *,
                         k_core: int = 5, dedupe: str = "consecutive") -> np.ndarray:
    """The events kept, as indices into the inputs: grouped by user (ascending code), chronological
    within a user (equal timestamps in input order), after ``dedupe`` and the iterative k-core filter.

    Args:
      user_codes: ``int[N]``, a user's number (its position in the output order).
      item_codes: ``int[N]``.
      timestamps: ``int[N]`` or ``float[N]``.
      k_core: every kept user and item has at least this many kept events (<= 1: no filter).
      dedupe: ``"consecutive"``, ``"first"`` or ``"none"`` (module docstring).

    Returns:
      ``int64[num_kept]`` event indices.
    """
    if dedupe not in DEDUPE_RULES:
        raise ValueError(f"dedupe={dedupe!r}; choose one of {', '.join(DEDUPE_RULES)}")
    user_codes, item_codes = np.asarray(user_codes, np.int64), np.asarray(item_codes, np.int64)
    num_events = len(user_codes)
    if num_events == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(num_events), np.asarray(timestamps), user_codes))  # stable on ties
    sorted_users, sorted_items = user_codes[order], item_codes[order]
    kept = np.arange(num_events)  # positions in `order`
    if dedupe == "first":
        pair = sorted_users * (int(sorted_items.max()) + 1) + sorted_items
        kept = np.sort(np.unique(pair, return_index=True)[1])
    num_users, num_items = int(user_codes.max()) + 1, int(item_codes.max()) + 1
    while kept.size:
        users, items = sorted_users[kept], sorted_items[kept]
        keep = np.ones(kept.size, dtype=bool)
        if dedupe == "consecutive":
            keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
        user_counts = np.bincount(users[keep], minlength=num_users)
        item_counts = np.bincount(items[keep], minlength=num_items)
        keep &= (user_counts[users] >= k_core) & (item_counts[items] >= k_core)
        if keep.all():
            break
        kept = kept[keep]
    return order[kept].astype(np.int64)


def _codes_in_first_appearance_order(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``str[N]`` -> ``(codes int64[N], distinct ids str[M])``; code ``c`` is the ``c``-th id to appear."""
    distinct, first_index, inverse = np.unique(ids, return_index=True, return_inverse=True)
    appearance = np.argsort(first_index, kind="stable")
    rank = np.empty(len(distinct), dtype=np.int64)
    rank[appearance] = np.arange(len(distinct))
    return rank[inverse.reshape(-1)], distinct[appearance]


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertedLog:
    """What :func:`filter_log` kept.

    Attributes:
      user_ids: kept users, in the order of their first event in the log.
      sequences: each kept user's item ids, chronological.
      item_ids: kept items, in the order of their first kept event.
      num_events, num_log_users, num_log_items: the log before filtering.
    """

    user_ids: list[str]
    sequences: list[list[str]]
    item_ids: list[str]
    num_events: int
    num_log_users: int
    num_log_items: int

    @property
    def num_interactions(self) -> int:
        return sum(len(sequence) for sequence in self.sequences)

    def summary(self) -> str:
        return (f"{len(self.user_ids):,} users, {len(self.item_ids):,} items, {self.num_interactions:,} interactions "
                f"(of {self.num_events:,} events, {self.num_log_users:,} users, {self.num_log_items:,} items)")


def filter_log(log: InteractionLog, *, k_core: int = 5, dedupe: str = "consecutive") -> ConvertedLog:
    """Orders, dedupes and k-core filters ``log`` (module docstring) into per-user item sequences.

    Raises:
      ValueError: nothing is left after filtering (the message names the file and ``k_core``).
    """
    user_codes, distinct_users = _codes_in_first_appearance_order(log.user_ids)
    distinct_items, item_codes = np.unique(log.item_ids, return_inverse=True)
    kept = chronological_k_core(user_codes, item_codes.reshape(-1), log.timestamps, k_core=k_core, dedupe=dedupe)
    if kept.size == 0:
        raise ValueError(f"{log.source}: no interactions left after the {k_core}-core filter (of {log.num_events} "
                         f"events, {len(distinct_users)} users, {len(distinct_items)} items); lower --k-core")
    kept_users, kept_items = user_codes[kept], log.item_ids[kept].tolist()
    starts = np.flatnonzero(np.r_[True, kept_users[1:] != kept_users[:-1]])
    ends = np.r_[starts[1:], kept.size]
    return ConvertedLog(user_ids=distinct_users[kept_users[starts]].tolist(),
                        sequences=[kept_items[start:end] for start, end in zip(starts.tolist(), ends.tolist())],
                        item_ids=list(dict.fromkeys(kept_items)), num_events=log.num_events,
                        num_log_users=len(distinct_users), num_log_items=len(distinct_items))


def write_interactions(converted: ConvertedLog, out_dir: str | Path, name: str) -> Path:
    """Writes ``NAME.inter.json`` (``{user id: [item id, ...]}``, users in ``converted`` order) atomically."""
    return write_json_atomic(Path(out_dir) / f"{name}{INTER_SUFFIX}",
                             dict(zip(converted.user_ids, converted.sequences)))


def load_item_embeddings(embeddings_path: str | Path, ids_path: str | Path) -> tuple[np.ndarray, list[str]]:
    """``float[N, D]`` embeddings (``.npy``) and their ``N`` item ids, in row order: a JSON list
    (``.json``) or one id a line (any other suffix).

    Raises:
      ValueError: not an array, a count mismatch, an id given twice, an id that is not a string or an integer
        (JSON), not UTF-8; one line naming the file. A text file's byte order mark is skipped; a JSON file's is
        refused (as ``genrec build-sids`` refuses it).
    """
    embeddings = _load_embeddings(str(embeddings_path))
    ids_path = Path(ids_path)
    values = None
    if ids_path.suffix.lower() == ".json":
        item_ids, values = read_item_ids_json(ids_path)
    else:
        try:  # utf-8-sig: a byte order mark (Windows editors write one) is not part of the first id
            item_ids = ids_path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"{ids_path}: not UTF-8 text ({error.reason}); save it as UTF-8") from None
        while item_ids and not item_ids[-1].strip():
            item_ids.pop()
        item_ids = [item.strip() for item in item_ids]
    if embeddings.ndim != 2 or len(item_ids) != len(embeddings):
        raise ValueError(f"{ids_path} lists {len(item_ids)} ids but {embeddings_path} has shape {embeddings.shape}; "
                         "give one id per embedding row, in row order")
    check_unique_item_ids(item_ids, ids_path, values)
    return embeddings, item_ids


def check_embedded(item_ids: Sequence[str], embedding_ids: Sequence[str], source: str) -> None:
    """Raises a one-line ValueError naming ``source`` and the first items of ``item_ids`` without an embedding."""
    embedded = set(embedding_ids)
    missing = [item for item in item_ids if item not in embedded]
    if missing:
        listed = ", ".join(map(repr, missing[:_MAX_LISTED]))
        raise ValueError(f"{source}: {len(missing)} of the {len(item_ids)} kept items have no embedding, e.g. "
                         f"{listed}; add their rows, or remove their events from the log")


def indexed_rows(item_ids: Sequence[str], embedding_ids: Sequence[str], index_all_items: bool = False) -> np.ndarray:
    """The embedding rows :func:`write_sid_index` indexes, ascending: those of ``item_ids``, or every row."""
    if index_all_items:
        return np.arange(len(embedding_ids))
    row_of = {item: row for row, item in enumerate(embedding_ids)}
    return np.sort(np.array([row_of[item] for item in item_ids], dtype=np.int64))


def write_sid_index(out_dir: str | Path, name: str, item_ids: Sequence[str], embeddings: np.ndarray,
                    embedding_ids: Sequence[str], config: RQKMeansConfig, *, source: str = "the embedding ids",
                    index_all_items: bool = False) -> tuple[list[Path], SemanticIDReport]:
    """SIDs (``genrec.rqkmeans``) for ``item_ids`` from their rows of ``embeddings``; writes
    ``NAME.index.rq-kmeans.json`` and ``NAME.vocab.json`` as ``genrec build-sids`` does.

    Items are indexed in embedding-row order; with ``index_all_items`` every embedded item is (the
    extra ones are retrieval candidates nobody interacted with; the same files as ``genrec build-sids``
    on the whole embedding file).

    Returns:
      ``(paths written, genrec.rqkmeans.SemanticIDReport)``.

    Raises:
      ValueError: an item of ``item_ids`` has no embedding (the message names the ids file and items).
    """
    check_embedded(item_ids, embedding_ids, source)
    rows = indexed_rows(item_ids, embedding_ids, index_all_items)
    return build_and_write_index(Path(out_dir) / f"{name}{INDEX_SUFFIX}", [embedding_ids[r] for r in rows.tolist()],
                                 np.asarray(embeddings)[rows], config)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _default_name(path: str) -> str:
    return Path(path).stem or "dataset"


def build_parser(prog: str = "python -m genrec.convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Raw interaction log (CSV or Parquet) -> NAME.inter.json in the standard dataset format: "
        "each user's events in time order (ties keep file order), duplicates handled, k-core filtered, ids "
        "kept as they are. With item embeddings it also builds the SIDs (as genrec build-sids). docs/data.md, "
        "'Bring your own data'.",
    )
    parser.add_argument("--interactions", required=True, metavar="FILE",
                        help=".csv/.tsv (header row) or .parquet (needs pyarrow) event log")
    parser.add_argument("--user-col", required=True, help="column of user ids")
    parser.add_argument("--item-col", required=True, help="column of item ids")
    parser.add_argument("--time-col", required=True,
                        help="column of timestamps: numbers (e.g. Unix seconds), ISO 8601 texts, or Parquet "
                        "timestamps/dates")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument("--name", default=None, help="dataset name (file stem; default: the log's file stem)")
    parser.add_argument("--k-core", type=int, default=5,
                        help="keep only users and items with at least K interactions, iterated to a fixed point "
                        "(default 5, as the published Amazon datasets; 1 = no filter)")
    parser.add_argument("--dedupe", choices=DEDUPE_RULES, default="consecutive",
                        help="consecutive (default): collapse a run of the same item in a user's sequence into its "
                        "first event; first: keep a user's first event per item only; none: keep every event")
    parser.add_argument("--delimiter", default=None, help="CSV field separator (default: tab for .tsv, else comma)")
    sids = parser.add_argument_group("SIDs (with --item-embeddings; the options of genrec build-sids)")
    sids.add_argument("--item-embeddings", default=None, metavar="E.npy", help="float [num_items, dim] embeddings")
    sids.add_argument("--embedding-ids", default=None, metavar="IDS",
                      help="the embeddings' item ids in row order: a .json list or a text file, one id a line")
    sids.add_argument("--index-all-items", action="store_true",
                      help="SIDs for every embedded item, not only those kept by the filter (the rest are "
                      "retrieval candidates nobody interacted with)")
    add_sid_arguments(sids)
    add_verbose_flag(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m genrec.convert") -> int:
    """CLI: event log -> standard dataset directory; prints one line: what was written and what to run next."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if (args.item_embeddings is None) != (args.embedding_ids is None):
        parser.error("--item-embeddings and --embedding-ids go together")
    name = args.name or _default_name(args.interactions)
    out_dir = Path(args.out)
    index_path = out_dir / f"{name}{INDEX_SUFFIX}"

    def run() -> int:
        if args.k_core < 1:
            raise UserError(f"--k-core {args.k_core} must be >= 1 (1 = no filter)")
        embedded = None
        if args.item_embeddings:  # read before the log: a wrong path fails at once
            check_sid_arguments(args)
            embedded = load_item_embeddings(args.item_embeddings, args.embedding_ids)
        log = read_interactions(args.interactions, args.user_col, args.item_col, args.time_col,
                                delimiter=args.delimiter)
        result = filter_log(log, k_core=args.k_core, dedupe=args.dedupe)
        if embedded is not None:  # before writing anything: a failed command leaves no half dataset
            check_embedded(result.item_ids, embedded[1], args.embedding_ids)
            rows = indexed_rows(result.item_ids, embedded[1], args.index_all_items)
            check_finite_embeddings(embedded[0][rows], args.item_embeddings, [embedded[1][r] for r in rows.tolist()],
                                    rows)
        written = [write_interactions(result, out_dir, name)]
        if embedded is not None:
            paths, report = write_sid_index(out_dir, name, result.item_ids, *embedded, sid_config(args),
                                            source=args.embedding_ids, index_all_items=args.index_all_items)
            written += paths
            logger.info("SID report: %s", json.dumps(report.to_json()))
            data_set = f"--set data.data_dir={out_dir}"
            if len(list(out_dir.glob(f"*{INTER_SUFFIX}"))) > 1:
                data_set += f" --set data.name={name}"
            next_step = f"next: genrec train --config tpu_configs/cpu_smoke.py {data_set} --workdir runs/{name}"
        else:
            stale = " (the existing index there was left as is)" if index_path.exists() else ""
            next_step = (f"next: SIDs for its items: genrec build-sids --embeddings E.npy --item-ids IDS.json "
                         f"--out {index_path}{stale}, or rerun with --item-embeddings E.npy --embedding-ids IDS")
        print(f"wrote {', '.join(str(p) for p in written)}: {result.summary()}, {args.dedupe} dedupe, "
              f"{args.k_core}-core; {next_step}")
        return 0

    return run_command(prog, run, outputs=[out_dir], verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
