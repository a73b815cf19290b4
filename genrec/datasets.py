"""Loading and writing SID recommendation datasets in the standard on-disk format.

Where it sits: files on disk -> :func:`load_sid_dataset` -> :class:`InteractionData`
-> ``genrec.split`` (leave-one-out examples) -> ``genrec.batching`` (token batches).

A dataset directory holds, for a dataset ``NAME``:

* ``NAME.inter.json``: ``{user id: [item id, ...]}``, each list in chronological order.
* ``NAME.index.rq-kmeans.json``: ``{item id: ["<a_32>", "<b_18>", ...]}``, one semantic
  ID per item; letter = level (a, b, c, ...), number = code within that level.
* ``NAME.vocab.json`` (optional): a :class:`~genrec.vocab.SIDVocabulary` that fixes the
  codebook sizes; without it each level's size is its largest code + 1.

Ids may be JSON strings or integers; they are compared as strings. Items get dense
row numbers in index-file order; everything downstream works with rows. An id
given twice in one file is an error (JSON readers would keep the last silently).
:func:`load_sid_catalogue` reads the items and their SIDs alone, without the
interactions (what ``genrec build-index`` needs).

Duplicate SIDs (two items sharing one code tuple) are only *reported* here
(:func:`find_duplicate_sids`); the constrained index decides how to resolve them.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genrec.vocab import SIDVocabulary, format_sid_tokens, parse_sid_tokens, write_json_atomic

logger = logging.getLogger(__name__)

INTER_SUFFIX = ".inter.json"
INDEX_SUFFIX = ".index.rq-kmeans.json"
VOCAB_SUFFIX = ".vocab.json"

# Leave-one-out needs a test item, a validation item and at least one history item.
MIN_INTERACTIONS = 3

_MAX_LISTED = 5  # how many offending ids an error message lists


@dataclass(frozen=True, eq=False)
class InteractionData:
    """A loaded dataset: items with their SIDs, and each user's item sequence.

    Attributes:
      item_ids: ``str[num_items]``, original item id of each item row.
      sid_codes: ``int32[num_items, num_levels]``, SID codes of each item row.
      vocab: token layout for these codes.
      user_ids: ``num_users`` original user ids, in file order.
      sequences: ``num_users`` arrays ``int32[seq_len]`` of item rows, chronological.
      name: dataset name (file stem).
    """

    item_ids: np.ndarray
    sid_codes: np.ndarray
    vocab: SIDVocabulary
    user_ids: list[str]
    sequences: list[np.ndarray]
    name: str = ""

    def __post_init__(self):
        if self.sid_codes.ndim != 2 or self.sid_codes.shape[0] != len(self.item_ids):
            raise ValueError(
                f"sid_codes shape {self.sid_codes.shape} does not match {len(self.item_ids)} items"
            )
        if self.sid_codes.shape[1] != self.vocab.num_levels:
            raise ValueError(
                f"sid_codes have {self.sid_codes.shape[1]} levels, vocab has {self.vocab.num_levels}"
            )
        if len(self.user_ids) != len(self.sequences):
            raise ValueError(f"{len(self.user_ids)} user ids but {len(self.sequences)} sequences")

    @property
    def num_items(self) -> int:
        return int(self.sid_codes.shape[0])

    @property
    def num_levels(self) -> int:
        return int(self.sid_codes.shape[1])

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


def find_duplicate_sids(sid_codes: np.ndarray) -> list[np.ndarray]:
    """Groups of item rows that share one SID.

    Args:
      sid_codes: ``int[num_items, num_levels]``.

    Returns:
      One ``int64`` array of rows (ascending) per SID held by two or more items,
      groups ordered by their first row. Empty when all SIDs are unique.
    """
    sid_codes = np.asarray(sid_codes)
    if sid_codes.ndim != 2:
        raise ValueError(f"sid_codes must be [num_items, num_levels], got shape {sid_codes.shape}")
    if sid_codes.shape[0] == 0:
        return []
    _, group_of_row, group_sizes = np.unique(
        sid_codes, axis=0, return_inverse=True, return_counts=True
    )
    group_of_row = group_of_row.reshape(-1)
    shared = group_sizes[group_of_row] > 1
    rows = np.flatnonzero(shared)
    if rows.size == 0:
        return []
    # Stable sort by group keeps rows ascending inside each group.
    rows = rows[np.argsort(group_of_row[rows], kind="stable")]
    boundaries = np.flatnonzero(np.diff(group_of_row[rows])) + 1
    groups = np.split(rows, boundaries)
    groups.sort(key=lambda g: g[0])
    return groups


def unique_keys_hook(where: str | Path, key_kind: str = "key") -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """An ``object_pairs_hook`` for ``json.load``/``loads`` that refuses a key given twice in one object,
    naming ``where`` and the key (``json`` alone keeps the last silently: a user's interactions, an item's
    SID or a request's allow list lost)."""
    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):  # rare: look for the first repeated key only then
            seen: set[str] = set()
            for repeated, _ in pairs:
                if repeated in seen:
                    break
                seen.add(repeated)
            count = sum(key == repeated for key, _ in pairs)
            raise ValueError(f"{where}: {key_kind} {repeated!r} appears {count} times in one JSON object; "
                             "give each once (JSON readers keep only the last)")
        return obj
    return unique_keys


def _read_json(path: Path, key_kind: str = "key") -> Any:
    """The JSON value of ``path``; a key given twice in one object is an error naming it
    (:func:`unique_keys_hook`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")

    try:
        with path.open("r", encoding="utf-8") as f, _gc_paused():
            return json.load(f, object_pairs_hook=unique_keys_hook(path, key_kind))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection inside: parsing a large file makes millions of containers and no cycles,
    and the collections they trigger were 45% of the parse (a 100 MB interaction file: 4.2 s, 2.4 s without;
    the repeated-key check costs 4% of that, docs/reliability.md)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def dataset_names(data_dir: str | Path, suffix: str = INTER_SUFFIX) -> list[str]:
    """The names of the datasets in ``data_dir``: the stems of its ``*<suffix>`` files, sorted."""
    return sorted(p.name[: -len(suffix)] for p in Path(data_dir).glob(f"*{suffix}"))


def _infer_name(data_dir: Path, suffix: str = INTER_SUFFIX) -> str:
    candidates = dataset_names(data_dir, suffix)
    if len(candidates) != 1:
        found = ", ".join(candidates) if candidates else "none"
        raise ValueError(
            f"{data_dir}: cannot infer the dataset name, found {len(candidates)} '*{suffix}' "
            f"files ({found}); pass name=NAME (genrec train/demo: --set data.name=NAME)"
        )
    return candidates[0]


def _parse_index(index_path: Path, index_json: Any) -> tuple[np.ndarray, np.ndarray]:
    """``{item id: [token str]}`` -> ``(item_ids str[N], sid_codes int32[N, L])``."""
    if not isinstance(index_json, dict) or not index_json:
        raise ValueError(f"{index_path}: expected a non-empty JSON object {{item id: [SID tokens]}}")
    item_ids = []
    codes = []
    num_levels = None
    for item_id, tokens in index_json.items():
        try:
            item_codes = parse_sid_tokens(tokens)
        except ValueError as e:
            raise ValueError(f"{index_path}: item {item_id!r}: {e}") from None
        if num_levels is None:
            num_levels, first_item = len(item_codes), item_id
        elif len(item_codes) != num_levels:
            raise ValueError(
                f"{index_path}: item {item_id!r} has a SID of {len(item_codes)} levels but item "
                f"{first_item!r} has {num_levels}; all SIDs must have the same length"
            )
        item_ids.append(str(item_id))
        codes.append(item_codes)
    sid_codes = np.asarray(codes, dtype=np.int64)
    if sid_codes.max() > np.iinfo(np.int32).max:
        raise ValueError(f"{index_path}: SID code {int(sid_codes.max())} does not fit in int32")
    return np.asarray(item_ids), sid_codes.astype(np.int32)


@dataclass(frozen=True, eq=False)
class SIDCatalogue:
    """A dataset's items and their SIDs, without its interactions (what an index is built from).

    Attributes:
      item_ids: ``str[num_items]``, original item id of each item row (index-file order).
      sid_codes: ``int32[num_items, num_levels]``, SID codes of each item row.
      vocab: token layout for these codes.
      name: dataset name (file stem).
    """

    item_ids: np.ndarray
    sid_codes: np.ndarray
    vocab: SIDVocabulary
    name: str

    @property
    def num_items(self) -> int:
        return int(self.sid_codes.shape[0])


def load_sid_catalogue(
    data_dir: str | Path, name: str | None = None, *, vocab: SIDVocabulary | None = None
) -> SIDCatalogue:
    """Loads only ``NAME.index.rq-kmeans.json`` (and ``NAME.vocab.json``) from ``data_dir``.

    ``genrec build-index`` needs no interactions: a 200 MB interaction file
    parsed for nothing took 2.6 GB. ``name`` is inferred when the directory
    holds exactly one ``*.index.rq-kmeans.json``; ``vocab`` as in
    :func:`load_sid_dataset`.

    Raises:
      ValueError: malformed JSON, a repeated item id, malformed SID tokens, SIDs
        of different lengths, codes that do not fit the vocabulary; the message
        names the file and the item.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: dataset directory not found")
    if name is None:
        name = _infer_name(data_dir, INDEX_SUFFIX)
    index_path = data_dir / f"{name}{INDEX_SUFFIX}"
    vocab_path = data_dir / f"{name}{VOCAB_SUFFIX}"
    item_ids, sid_codes = _parse_index(index_path, _read_json(index_path, "item id"))

    vocab_source = "the given vocab" if vocab is not None else "the codebook bound"
    if vocab is None and vocab_path.is_file():
        vocab, vocab_source = SIDVocabulary.load(vocab_path), str(vocab_path)
    if vocab is not None and vocab.num_levels != sid_codes.shape[1]:
        raise ValueError(
            f"{index_path}: SIDs have {sid_codes.shape[1]} levels but {vocab_source} has "
            f"{vocab.num_levels}"
        )
    try:
        vocab = SIDVocabulary.from_codes(
            sid_codes, None if vocab is None else vocab.codebook_sizes
        )
    except ValueError as e:
        raise ValueError(f"{index_path}: codes do not fit {vocab_source}: {e}") from None
    return SIDCatalogue(item_ids=item_ids, sid_codes=sid_codes, vocab=vocab, name=name)


def load_sid_dataset(
    data_dir: str | Path,
    name: str | None = None,
    *,
    vocab: SIDVocabulary | None = None,
    min_interactions: int = MIN_INTERACTIONS,
) -> InteractionData:
    """Loads ``NAME.inter.json`` and ``NAME.index.rq-kmeans.json`` from ``data_dir``.

    Args:
      data_dir: directory holding the dataset files.
      name: dataset name (file stem); inferred when the directory holds exactly
        one ``*.inter.json``.
      vocab: vocabulary to use (e.g. the one saved with a checkpoint); codes are
        checked to fit it. Otherwise ``NAME.vocab.json`` if present, else each
        level's largest code + 1.
      min_interactions: users with fewer interactions are skipped (count logged).

    Raises:
      ValueError: malformed JSON, a key given twice in one file, malformed SID
        tokens, SIDs of different lengths, or interactions with items missing
        from the index; the message names the file and the offending items.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: dataset directory not found")
    if name is None:
        name = _infer_name(data_dir)
    inter_path = data_dir / f"{name}{INTER_SUFFIX}"
    catalogue = load_sid_catalogue(data_dir, name, vocab=vocab)
    item_ids, sid_codes, vocab = catalogue.item_ids, catalogue.sid_codes, catalogue.vocab
    index_path = data_dir / f"{name}{INDEX_SUFFIX}"
    row_of_item = {item_id: row for row, item_id in enumerate(item_ids.tolist())}

    inter_json = _read_json(inter_path, "user id")
    if not isinstance(inter_json, dict):
        raise ValueError(f"{inter_path}: expected a JSON object {{user id: [item ids]}}")
    user_ids: list[str] = []
    sequences: list[np.ndarray] = []
    missing: dict[str, str] = {}  # item id -> first user that has it
    num_short = 0
    for user_id, items in inter_json.items():
        if not isinstance(items, list):
            raise ValueError(f"{inter_path}: user {user_id!r}: expected a list of item ids, got {items!r}")
        rows = []
        for item in items:
            row = row_of_item.get(str(item))
            if row is None:
                missing.setdefault(str(item), user_id)
                row = -1
            rows.append(row)
        if len(rows) < min_interactions:
            num_short += 1
            continue
        user_ids.append(str(user_id))
        sequences.append(np.asarray(rows, dtype=np.int32))

    if missing:
        listed = ", ".join(f"{item!r} (user {user!r})" for item, user in list(missing.items())[:_MAX_LISTED])
        raise ValueError(
            f"{inter_path}: {len(missing)} item id(s) are not in {index_path.name}, e.g. {listed}; "
            f"regenerate the index for these items or drop them from the interactions"
        )
    if num_short:
        logger.info(
            "%s: skipped %d of %d users with fewer than %d interactions",
            inter_path, num_short, len(inter_json), min_interactions,
        )
    if not sequences:
        raise ValueError(f"{inter_path}: no user has at least {min_interactions} interactions")

    duplicates = find_duplicate_sids(sid_codes)
    if duplicates:
        num_shared = sum(len(g) for g in duplicates)
        first = ", ".join(repr(str(item_ids[r])) for r in duplicates[0][:5])
        more = f", ... ({len(duplicates[0])} in all)" if len(duplicates[0]) > 5 else ""
        logger.warning(
            "%s: %d SIDs are shared by %d items (%.1f%% of the catalogue): a shared SID is one candidate, "
            "serving shows one of its items and evaluation counts a hit for any of them, so metrics overstate "
            "item accuracy by up to that share (docs/serving.md, \"Collision policy\"; genrec build-sids gives "
            "unique SIDs). First: items %s%s",
            index_path, len(duplicates), num_shared, 100.0 * num_shared / len(item_ids), first, more,
        )
    logger.info(
        "loaded %s: %d users, %d items, %d interactions, %d SID levels, vocab size %d",
        name, len(sequences), len(item_ids), sum(len(s) for s in sequences),
        vocab.num_levels, vocab.vocab_size,
    )
    return InteractionData(
        item_ids=item_ids, sid_codes=sid_codes, vocab=vocab,
        user_ids=user_ids, sequences=sequences, name=name,
    )


def write_sid_dataset(
    data: InteractionData, out_dir: str | Path, name: str | None = None, *, write_vocab: bool = True
) -> dict[str, Path]:
    """Writes ``data`` in the standard format so :func:`load_sid_dataset` reads it back.

    Writes ``NAME.inter.json``, ``NAME.index.rq-kmeans.json`` and (unless
    ``write_vocab=False``) ``NAME.vocab.json``, each atomically. Returns the paths
    keyed ``"inter"``, ``"index"``, ``"vocab"``.
    """
    name = name or data.name
    if not name:
        raise ValueError("write_sid_dataset needs a dataset name")
    out_dir = Path(out_dir)
    item_ids = data.item_ids.tolist()
    index_json = {
        item_id: format_sid_tokens(codes) for item_id, codes in zip(item_ids, data.sid_codes.tolist())
    }
    inter_json = {
        user_id: [item_ids[row] for row in seq.tolist()]
        for user_id, seq in zip(data.user_ids, data.sequences)
    }
    paths = {
        "inter": write_json_atomic(out_dir / f"{name}{INTER_SUFFIX}", inter_json),
        "index": write_json_atomic(out_dir / f"{name}{INDEX_SUFFIX}", index_json),
    }
    if write_vocab:
        paths["vocab"] = data.vocab.save(out_dir / f"{name}{VOCAB_SUFFIX}")
    return paths
