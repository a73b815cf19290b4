"""The trie of valid semantic IDs, flattened into arrays (STATIC layout).

Data flow: checkpoint -> **index** -> decode -> serve. The index is built once
from the catalogue's SID codes with vectorized NumPy (sort + diff), saved to a
single ``.npz`` file, and moved to the accelerator, where
:mod:`constrained.beam_search` walks it with a few gathers per decode step.

Layout (all states numbered level by level, in lexicographic SID order):

* state ``0`` is the root (empty prefix); states ``level_state_start[l] ..
  level_state_start[l+1]-1`` are the distinct prefixes of length ``l`` for
  ``l = 1 .. L-1``. The last token of an SID leads to a *leaf*, identified by
  the item's row in SID-sorted order (``0 .. N-1``), not by a state.
* CSR transitions: the children of state ``s`` are
  ``csr_codes[csr_indptr[s]:csr_indptr[s+1]]`` (codes of the next level,
  ascending) with targets ``csr_next[...]`` (a state, or a sorted item row at
  the last level).
* Dense tables for the first levels, whose branching is near the full
  codebook and where a CSR row would be as wide as the vocabulary:
  ``root_next[K0]`` (target of each level-0 code, ``-1`` if invalid) and, when
  ``dense_depth == 2``, ``dense2_next[K0, K1]``.
* ``max_branch[l]``: the most children any prefix of length ``l`` has; it
  fixes the static width of the candidate gather at level ``l``.
* ``state_row_lo/hi``: the sorted item rows under each state (a contiguous
  range, since rows are sorted), used to prune prefixes whose items a
  request's filter removes entirely.

Padding to a capacity (:class:`IndexCapacity`, ``build_index(...,
capacity=...)``): the arrays the search reads get the shapes and dtypes of the
capacity, whatever catalogue within it they hold, so one compiled decode
serves every such catalogue (docs/serving.md, "Catalogue updates"). Padding
is appended after the real entries and is unreachable: extra states have no
children and are never a transition's target, extra transitions lie past
every state's CSR row, extra item slots are never a leaf (their item id is
-1), and ``max_branch`` widens each level's gather with invalid slots only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

if TYPE_CHECKING:
    import jax

import numpy as np

from genrec.atomic_files import atomic_open
from genrec.datasets import find_duplicate_sids

# One implementation of the disambiguation level, shared with the SID builder:
# the k-th item (in input order) of a group sharing an SID gets code k.
from genrec.rqkmeans import append_disambiguation_level

disambiguate_sids = append_disambiguation_level  # public name in constrained/

# Version 2: an index padded to a capacity (its metadata carries it). Exact indexes are still written as
# version 1, so an older reader loads them, and refuses a padded one (whose shapes it would misread).
FORMAT_VERSION = 2
_EXACT_FORMAT_VERSION = 1
_MAGIC = "genrec-trie-index"

# Dense level-1 table is kept when it costs at most this many bytes.
DEFAULT_DENSE_BUDGET_BYTES = 64 * 2**20


class DuplicateSIDError(ValueError):
    """Two or more items share one semantic ID."""

    def __init__(self, groups: list[np.ndarray], item_ids: np.ndarray):
        self.groups = groups
        shown = "; ".join(
            "items " + ", ".join(str(item_ids[r]) for r in g) for g in groups[:5]
        )
        more = f" (and {len(groups) - 5} more groups)" if len(groups) > 5 else ""
        super().__init__(
            f"{len(groups)} semantic IDs are shared by several items: {shown}{more}. "
            "Pass on_duplicate='disambiguate' to append a disambiguation level, "
            "or fix the SID assignment."
        )


class IndexFileError(ValueError):
    """A saved index file is corrupt, truncated or of another format version."""


class IndexCapacityError(ValueError):
    """A catalogue does not fit the capacity an index is to be padded to."""


DEFAULT_HEADROOM = 1.25


@dataclasses.dataclass(frozen=True)
class IndexCapacity:
    """The sizes a padded index is built to: every catalogue within them yields
    arrays of one shape and dtype, so the jitted decode compiles once for all
    of them (docs/serving.md, "Catalogue updates").

    Attributes:
      num_items: leaf slots (the index's items; distinct SIDs for
        :func:`constrained.decode.build_eval_index`).
      level_prefixes: ``L - 1`` counts, slots for the distinct prefixes of
        length ``1 .. L-1`` (the trie states of each level).
      max_branch: ``L`` widths, the most children a prefix of length ``l``
        may have (the static width of level ``l``'s candidate gather).
    """

    num_items: int
    level_prefixes: tuple[int, ...]
    max_branch: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "num_items", int(self.num_items))
        object.__setattr__(self, "level_prefixes", tuple(int(n) for n in self.level_prefixes))
        object.__setattr__(self, "max_branch", tuple(int(w) for w in self.max_branch))
        if len(self.level_prefixes) != len(self.max_branch) - 1 or not self.max_branch:
            raise ValueError(
                f"IndexCapacity has {len(self.max_branch)} branch widths and {len(self.level_prefixes)} prefix "
                "counts; an L-level index needs L widths and L-1 counts."
            )
        if min((self.num_items,) + self.level_prefixes + self.max_branch) < 1:
            raise ValueError(f"{self}: every size must be >= 1.")

    @property
    def num_levels(self) -> int:
        return len(self.max_branch)

    @property
    def num_states(self) -> int:
        """State slots: the root and every prefix slot."""
        return 1 + sum(self.level_prefixes)

    @property
    def num_transitions(self) -> int:
        """CSR slots: one per prefix slot and one per leaf slot."""
        return sum(self.level_prefixes) + self.num_items

    @classmethod
    def of_index(cls, index: "TrieIndex") -> "IndexCapacity":
        """The exact sizes of an index's catalogue (of its real entries, if it is padded)."""
        children = np.diff(index.csr_indptr[: index.num_states + 1])
        starts = index.level_state_start
        return cls(
            num_items=index.num_items,
            level_prefixes=tuple(int(starts[length + 1] - starts[length]) for length in range(1, index.num_levels)),
            max_branch=tuple(int(children[starts[level]:starts[level + 1]].max())
                             for level in range(index.num_levels)),
        )

    @classmethod
    def for_catalogue(
        cls,
        sid_codes: np.ndarray,
        headroom: float = DEFAULT_HEADROOM,
        *,
        codebook_sizes: Sequence[int] | None = None,
    ) -> "IndexCapacity":
        """A capacity for the trie over the distinct SIDs of ``sid_codes``
        (as :func:`constrained.decode.build_eval_index` builds it), each size
        times ``headroom`` rounded up; branch widths at most the codebook size.

        Args:
          sid_codes: int[num_items, L].
          headroom: growth to allow for, >= 1 (1.25: a quarter more items,
            prefixes and children per prefix).
          codebook_sizes: codes per level (default: max code + 1 per level).
        """
        distinct = np.unique(np.asarray(sid_codes), axis=0)
        index = build_index(distinct, codebook_sizes=codebook_sizes)
        return cls.of_index(index).with_headroom(headroom, index.codebook_sizes)

    def with_headroom(self, headroom: float, codebook_sizes: Sequence[int] | None = None) -> "IndexCapacity":
        """Every size times ``headroom`` (>= 1), rounded up; with ``codebook_sizes``, no size
        above what the codebooks allow (``K_l`` children, ``K_0 * .. * K_l`` prefixes)."""
        if not headroom >= 1.0:
            raise ValueError(f"headroom={headroom} must be >= 1 (1.25 leaves room for a quarter more items).")
        if codebook_sizes is None:
            most_prefixes = most_children = (None,) * self.num_levels
        else:
            most_children = tuple(int(k) for k in codebook_sizes)
            most_prefixes = tuple(int(np.prod(most_children[: level + 1], dtype=object))
                                  for level in range(self.num_levels))

        def grow(size: int, most: int | None) -> int:
            grown = int(np.ceil(size * headroom))
            return grown if most is None else max(size, min(grown, most))

        return IndexCapacity(
            num_items=grow(self.num_items, most_prefixes[-1]),
            level_prefixes=tuple(grow(n, most) for n, most in zip(self.level_prefixes, most_prefixes)),
            max_branch=tuple(grow(w, most) for w, most in zip(self.max_branch, most_children)),
        )

    def shortfall(self, need: "IndexCapacity") -> list[str]:
        """What of ``need`` exceeds this capacity, one phrase per size (empty: it fits)."""
        if need.num_levels != self.num_levels:
            return [f"{need.num_levels} levels where the capacity has {self.num_levels}"]
        short = []
        if need.num_items > self.num_items:
            short.append(f"{need.num_items} items > {self.num_items}")
        for length, (n, cap) in enumerate(zip(need.level_prefixes, self.level_prefixes), start=1):
            if n > cap:
                short.append(f"{n} prefixes of length {length} > {cap}")
        for level, (w, cap) in enumerate(zip(need.max_branch, self.max_branch)):
            if w > cap:
                short.append(f"{w} children of one prefix at level {level} > {cap}")
        return short

    def covers(self, need: "IndexCapacity") -> bool:
        """Whether a catalogue of sizes ``need`` fits (same levels, no size larger)."""
        return not self.shortfall(need)

    def union(self, other: "IndexCapacity") -> "IndexCapacity":
        """The elementwise maximum: a capacity covering both."""
        if other.num_levels != self.num_levels:
            raise ValueError(f"capacities of {self.num_levels} and {other.num_levels} levels cannot be merged.")
        return IndexCapacity(
            num_items=max(self.num_items, other.num_items),
            level_prefixes=tuple(map(max, self.level_prefixes, other.level_prefixes)),
            max_branch=tuple(map(max, self.max_branch, other.max_branch)),
        )

    def to_json(self) -> dict[str, object]:
        return {"num_items": self.num_items, "level_prefixes": list(self.level_prefixes),
                "max_branch": list(self.max_branch)}

    @classmethod
    def from_json(cls, fields: dict[str, object]) -> "IndexCapacity":
        return cls(num_items=fields["num_items"], level_prefixes=tuple(fields["level_prefixes"]),
                   max_branch=tuple(fields["max_branch"]))


def find_duplicate_groups(sid_codes: np.ndarray) -> list[np.ndarray]:
    """Groups of input rows that share an SID, ordered by SID (the index's
    sort order); :func:`genrec.datasets.find_duplicate_sids` finds them.

    Args:
      sid_codes: int[num_items, num_levels].

    Returns:
      One int array of input rows per SID held by two or more items, rows
      ascending.
    """
    sid_codes = np.asarray(sid_codes)
    return sorted(find_duplicate_sids(sid_codes), key=lambda rows: tuple(sid_codes[rows[0]].tolist()))


@dataclasses.dataclass(frozen=True, eq=False)
class TrieIndex:
    """Flattened trie over the catalogue's semantic IDs (see module docstring).

    Arrays are NumPy on the host; :meth:`to_device` gives the pytree the beam
    search consumes. A padded index (``capacity`` set) holds its real entries
    first: ``level_state_start`` and ``sorted_codes`` cover only those, the
    other arrays have the capacity's lengths and ``max_branch`` its widths.
    """

    codebook_sizes: tuple[int, ...]
    token_offsets: tuple[int, ...]
    dense_depth: int
    max_branch: tuple[int, ...]
    level_state_start: np.ndarray  # int64[L + 1]; states of prefix length l
    csr_indptr: np.ndarray  # int32[num_state_slots + 1]
    csr_codes: np.ndarray  # int32[num_transition_slots]
    csr_next: np.ndarray  # int32[num_transition_slots]
    root_next: np.ndarray  # int32[K0]
    dense2_next: np.ndarray  # int32[K0, K1] (or [0, 0] when dense_depth == 1)
    state_row_lo: np.ndarray  # int32[num_state_slots]
    state_row_hi: np.ndarray  # int32[num_state_slots]
    sorted_codes: np.ndarray  # int32[N, L], SIDs in sorted order
    sorted_item_ids: np.ndarray  # int64[num_item_slots], item id of each sorted row (-1: padding)
    sorted_input_rows: np.ndarray  # int32[num_item_slots], input row of each sorted row
    num_appended_levels: int = 0  # 1 when a disambiguation level was added
    capacity: IndexCapacity | None = None  # the sizes it is padded to; None: exact shapes

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def num_items(self) -> int:
        return int(self.sorted_codes.shape[0])

    @property
    def num_states(self) -> int:
        """Trie states of the catalogue (padding excluded)."""
        return int(self.level_state_start[-1])

    @property
    def num_item_slots(self) -> int:
        """Leaf slots: ``num_items``, or the capacity's when padded (the width of a decode's ``allow_mask``)."""
        return int(self.sorted_item_ids.shape[0])

    def memory_report(self) -> dict[str, int]:
        """Bytes held by each part of the index, plus ``total``."""
        parts = {
            "csr_indptr": self.csr_indptr.nbytes,
            "csr_codes+csr_next": self.csr_codes.nbytes + self.csr_next.nbytes,
            "dense_tables": self.root_next.nbytes + self.dense2_next.nbytes,
            "state_row_ranges": self.state_row_lo.nbytes + self.state_row_hi.nbytes,
            "leaf_items": self.sorted_item_ids.nbytes + self.sorted_input_rows.nbytes,
            "sorted_codes": self.sorted_codes.nbytes,
        }
        parts["total"] = sum(parts.values())
        return parts

    def item_rows_to_sorted(self) -> np.ndarray:
        """int32[num_item_slots]: sorted row of each input row (inverse permutation)."""
        inverse = np.empty_like(self.sorted_input_rows)
        inverse[self.sorted_input_rows] = np.arange(self.num_item_slots, dtype=np.int32)
        return inverse

    def to_device(self) -> "DeviceIndex":
        """The arrays the jitted search reads, as a pytree of jax arrays."""
        import jax.numpy as jnp

        return DeviceIndex(
            csr_indptr=jnp.asarray(self.csr_indptr),
            csr_codes=jnp.asarray(self.csr_codes),
            csr_next=jnp.asarray(self.csr_next),
            root_next=jnp.asarray(self.root_next),
            dense2_next=jnp.asarray(self.dense2_next),
            dense2_valid=jnp.asarray(self.dense2_next >= 0),
            state_row_lo=jnp.asarray(self.state_row_lo),
            state_row_hi=jnp.asarray(self.state_row_hi),
            sorted_item_ids=jnp.asarray(self.sorted_item_ids),
            sorted_input_rows=jnp.asarray(self.sorted_input_rows),
            input_to_sorted=jnp.asarray(self.item_rows_to_sorted()),
            meta=IndexMeta(
                codebook_sizes=self.codebook_sizes,
                token_offsets=self.token_offsets,
                dense_depth=self.dense_depth,
                max_branch=self.max_branch,
                num_items=self.num_item_slots,
            ),
        )

    # ------------------------------------------------------------------ I/O

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }

    def _meta(self) -> dict[str, object]:
        meta = {
            "codebook_sizes": list(self.codebook_sizes),
            "token_offsets": list(self.token_offsets),
            "dense_depth": self.dense_depth,
            "max_branch": list(self.max_branch),
            "num_appended_levels": self.num_appended_levels,
        }
        if self.capacity is not None:
            meta["capacity"] = self.capacity.to_json()
        return meta

    def save(self, path: str | os.PathLike) -> None:
        """Writes the index to one ``.npz`` file atomically (temp file + rename).

        The file carries a format version (1 for an exact index, 2 for one
        padded to a capacity) and a SHA-256 checksum over every array and the
        metadata (the capacity included), verified by :meth:`load`.
        """
        import json

        arrays = self._arrays()
        meta = self._meta()
        meta_json = json.dumps(meta, sort_keys=True)
        checksum = _checksum(arrays, meta_json)
        with atomic_open(path, "wb") as f:
            np.savez(
                f,
                __magic__=np.array(_MAGIC),
                __version__=np.array(_EXACT_FORMAT_VERSION if self.capacity is None else FORMAT_VERSION),
                __meta__=np.array(meta_json),
                __checksum__=np.array(checksum),
                **arrays,
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrieIndex":
        """Reads an index written by :meth:`save`.

        Raises:
          FileNotFoundError, IsADirectoryError, PermissionError: about ``path`` itself.
          IndexFileError: the file is corrupt, truncated, of another format or
            version; one line naming the file. Any damage of the file's bytes
            gives this or an identical index (the checksum covers every array
            and the metadata; tests/reliability/test_index_bit_flips.py).
        """
        import json

        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                contents = {k: npz[k] for k in npz.files}
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as e:  # a damaged zip or .npy header raises many kinds (NotImplementedError for a
            # flipped compression method, RuntimeError for a flipped encryption flag, ValueError, EOFError, ...)
            raise IndexFileError(
                f"{path}: not a readable index file ({_one_line(e)}); rebuild it with "
                "constrained.build_index(...).save(path)."
            ) from e
        if str(contents.get("__magic__", "")) != _MAGIC:
            raise IndexFileError(f"{path}: not a genrec trie index file.")
        missing = [key for key in ("__version__", "__meta__", "__checksum__") if key not in contents]
        if missing:
            raise IndexFileError(f"{path}: the file lacks {', '.join(missing)}, it is corrupt; rebuild the index.")
        try:
            version = int(contents["__version__"])
        except (TypeError, ValueError, OverflowError):
            version = None
        if version not in (_EXACT_FORMAT_VERSION, FORMAT_VERSION):
            raise IndexFileError(
                f"{path}: index format version {version}, this code reads "
                f"versions {_EXACT_FORMAT_VERSION} to {FORMAT_VERSION}; rebuild the index."
            )
        meta_json = str(contents["__meta__"])
        names = [f.name for f in dataclasses.fields(cls)]
        arrays = {k: v for k, v in contents.items() if k in names}
        if _checksum(arrays, meta_json) != str(contents["__checksum__"]):
            raise IndexFileError(
                f"{path}: checksum mismatch, the file is corrupt; rebuild the index."
            )
        try:  # what the checksum covers was written by save(): a failure here is a file of another writer
            meta = json.loads(meta_json)
            return cls(
                codebook_sizes=tuple(meta["codebook_sizes"]),
                token_offsets=tuple(meta["token_offsets"]),
                dense_depth=int(meta["dense_depth"]),
                max_branch=tuple(meta["max_branch"]),
                num_appended_levels=int(meta["num_appended_levels"]),
                capacity=IndexCapacity.from_json(meta["capacity"]) if "capacity" in meta else None,
                **arrays,
            )
        except (TypeError, ValueError, KeyError) as e:
            raise IndexFileError(f"{path}: not an index written by TrieIndex.save ({_one_line(e)}); "
                                 "rebuild the index.") from e


def _one_line(error: BaseException) -> str:
    """``Type: first line of the message``, for a one-line error that names its cause."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _checksum(arrays: dict[str, np.ndarray], meta_json: str) -> str:
    digest = hashlib.sha256(meta_json.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(name.encode())
        digest.update(str(a.dtype).encode())
        digest.update(str(a.shape).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class IndexMeta:
    """Static (hashable) facts about an index: they fix shapes under jit."""

    codebook_sizes: tuple[int, ...]
    token_offsets: tuple[int, ...]
    dense_depth: int
    max_branch: tuple[int, ...]
    num_items: int

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)


def _register_device_index():
    import jax

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass(frozen=True)
    class DeviceIndex:
        """The index on the accelerator: arrays are pytree leaves, ``meta`` is
        static, so one compiled search serves every index of the same shape."""

        csr_indptr: jax.Array
        csr_codes: jax.Array
        csr_next: jax.Array
        root_next: jax.Array
        dense2_next: jax.Array
        dense2_valid: jax.Array  # dense2_next >= 0, a quarter of the bytes to read
        state_row_lo: jax.Array
        state_row_hi: jax.Array
        sorted_item_ids: jax.Array
        sorted_input_rows: jax.Array
        input_to_sorted: jax.Array  # inverse of sorted_input_rows
        meta: IndexMeta = dataclasses.field(metadata=dict(static=True))

    return DeviceIndex


DeviceIndex = _register_device_index()


def csr_children(
    index: DeviceIndex, level: int, states: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Children of trie states from the CSR rows, padded to the static width
    ``max_branch[level]`` (the beam search's and the MSL masks' one gather).

    Args:
      index: the device index.
      level: the level of the children.
      states: int32[...], non-negative states of prefixes of length ``level``.

    Returns:
      codes, next_targets: int32[..., width]; valid: bool[..., width].
    """
    import jax.numpy as jnp

    width = index.meta.max_branch[level]
    starts = jnp.take(index.csr_indptr, states)
    ends = jnp.take(index.csr_indptr, states + 1)
    positions = starts[..., None] + jnp.arange(width, dtype=starts.dtype)
    valid = positions < ends[..., None]
    positions = jnp.minimum(positions, index.csr_codes.shape[0] - 1)
    return jnp.take(index.csr_codes, positions), jnp.take(index.csr_next, positions), valid


def build_index(
    sid_codes: np.ndarray,
    item_ids: np.ndarray | Sequence[int] | None = None,
    *,
    codebook_sizes: Sequence[int] | None = None,
    token_offsets: Sequence[int] | None = None,
    on_duplicate: Literal["error", "disambiguate"] = "error",
    dense_depth: int | None = None,
    dense_budget_bytes: int = DEFAULT_DENSE_BUDGET_BYTES,
    capacity: IndexCapacity | None = None,
) -> TrieIndex:
    """Builds the flattened trie from a catalogue's semantic IDs.

    Vectorized NumPy throughout (one lexicographic sort, then diffs and
    cumulative sums per level); no Python loop over items.

    Args:
      sid_codes: int[num_items, num_levels], the code of each level (``0 ..
        codebook_sizes[l]-1``), one row per item. ``num_levels >= 1``.
      item_ids: int[num_items], the id returned for each row (default: the
        row number).
      codebook_sizes: codes per level (default: max code + 1 per level).
      token_offsets: model token id of code 0 at each level; the decoder
        reads logit ``token_offsets[l] + code`` at level ``l``. Default 0 for
        every level (a shared vocabulary of codes).
      on_duplicate: ``"error"`` raises :class:`DuplicateSIDError` when two
        items share an SID; ``"disambiguate"`` appends a level numbering the
        items of each shared SID (see :func:`disambiguate_sids`); the model
        must then emit that level too.
      dense_depth: 1 or 2 dense levels; default: 2 when ``K0 * K1`` int32
        fits ``dense_budget_bytes``, else 1.
      dense_budget_bytes: memory budget of the level-1 dense table.
      capacity: pad the index to these sizes (:func:`pad_index`), so that
        every catalogue within them gives the same shapes; None (default):
        exact shapes.

    Returns:
      The index.

    Raises:
      IndexCapacityError: the catalogue exceeds ``capacity``.
    """
    sid_codes = np.asarray(sid_codes)
    if sid_codes.ndim != 2 or sid_codes.shape[0] == 0 or sid_codes.shape[1] == 0:
        raise ValueError(
            f"sid_codes must be a non-empty [num_items, num_levels] array, got shape {sid_codes.shape}."
        )
    if not np.issubdtype(sid_codes.dtype, np.integer):
        raise ValueError(f"sid_codes must be integers, got dtype {sid_codes.dtype}.")
    if sid_codes.min() < 0:
        bad = np.argwhere(sid_codes < 0)[0]
        raise ValueError(f"sid_codes[{bad[0]}, {bad[1]}] is negative; codes must be >= 0.")
    num_input_items = sid_codes.shape[0]
    if item_ids is None:
        item_ids = np.arange(num_input_items, dtype=np.int64)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if item_ids.shape != (num_input_items,):
        raise ValueError(
            f"item_ids has shape {item_ids.shape}, expected ({num_input_items},) to match sid_codes."
        )

    sid_codes = sid_codes.astype(np.int32, copy=False)
    num_items, num_levels = sid_codes.shape
    if codebook_sizes is None:
        codebook_sizes = tuple(int(k) for k in sid_codes.max(axis=0) + 1)
    codebook_sizes = tuple(int(k) for k in codebook_sizes)
    if len(codebook_sizes) != num_levels:
        raise ValueError(
            f"codebook_sizes has {len(codebook_sizes)} levels, sid_codes has {num_levels}."
        )
    too_big = sid_codes.max(axis=0) >= np.asarray(codebook_sizes)
    if too_big.any():
        level = int(np.flatnonzero(too_big)[0])
        raise ValueError(
            f"level {level} has code {int(sid_codes[:, level].max())} >= codebook size "
            f"{codebook_sizes[level]}."
        )
    if token_offsets is not None:
        token_offsets = tuple(int(o) for o in token_offsets)
        if len(token_offsets) != num_levels:
            raise ValueError(f"token_offsets has {len(token_offsets)} levels, expected {num_levels}.")

    # One lexicographic sort (stable: equal SIDs keep input order); all later
    # structure comes from diffs of it.
    order = _lexsort_rows(sid_codes, codebook_sizes)
    sorted_codes = sid_codes[order]

    # is_new[r, l]: row r starts a new prefix of length l+1.
    differs = sorted_codes[1:] != sorted_codes[:-1]  # [N-1, L]
    np.logical_or.accumulate(differs, axis=1, out=differs)
    is_new = np.concatenate([np.ones((1, num_levels), dtype=bool), differs], axis=0)
    del differs

    num_appended = 0
    new_sid = is_new[:, -1]
    if not new_sid.all():
        run_starts = np.flatnonzero(new_sid)
        if on_duplicate == "error":
            sizes = np.diff(np.append(run_starts, num_items))
            groups = [np.sort(order[s : s + n]) for s, n in zip(run_starts, sizes) if n > 1]
            raise DuplicateSIDError(groups, item_ids)
        if on_duplicate != "disambiguate":
            raise ValueError(f"on_duplicate must be 'error' or 'disambiguate', got {on_duplicate!r}.")
        if token_offsets is not None:
            raise ValueError(
                "token_offsets cannot be combined with on_duplicate='disambiguate' when "
                "duplicates exist: the appended level has no token range in the model "
                "vocabulary. Apply disambiguate_sids() before building the vocabulary."
            )
        # Rank within each run of equal SIDs; the stable sort keeps input order.
        run_id = np.cumsum(new_sid) - 1
        extra = (np.arange(num_items) - run_starts[run_id]).astype(np.int32)
        sorted_codes = np.concatenate([sorted_codes, extra[:, None]], axis=1)
        # Every full (L+1)-token SID is now unique: each row starts a new one.
        is_new = np.concatenate([is_new, np.ones((num_items, 1), dtype=bool)], axis=1)
        codebook_sizes = codebook_sizes + (int(extra.max()) + 1,)
        num_appended = 1
        num_levels += 1
    if token_offsets is None:
        token_offsets = (0,) * num_levels

    # State ids: root 0, then prefixes of length 1 .. L-1, level by level.
    level_state_start = np.zeros(num_levels + 1, dtype=np.int64)
    level_state_start[0] = 0
    level_state_start[1] = 1
    prefix_state = []  # prefix_state[l-1][r]: state of row r's length-l prefix
    for length in range(1, num_levels):
        flags = is_new[:, length - 1]
        state = np.cumsum(flags, dtype=np.int64) - 1 + level_state_start[length]
        prefix_state.append(state)
        level_state_start[length + 1] = level_state_start[length] + int(state[-1] - level_state_start[length] + 1)
    num_states = int(level_state_start[num_levels])
    if num_states >= 2**31 or num_items >= 2**31:
        raise ValueError("index too large for int32 state ids")

    # Transitions level by level: parents come out ascending, as CSR needs.
    parents, codes, nexts = [], [], []
    max_branch = []
    for level in range(num_levels):
        rows = np.flatnonzero(is_new[:, level])
        parent = np.zeros(len(rows), dtype=np.int64) if level == 0 else prefix_state[level - 1][rows]
        nxt = prefix_state[level][rows] if level + 1 < num_levels else rows
        parents.append(parent)
        codes.append(sorted_codes[rows, level])
        nexts.append(nxt)
        # Children of one parent are contiguous, so branch = run lengths.
        run_starts = np.flatnonzero(np.concatenate([[True], parent[1:] != parent[:-1]]))
        max_branch.append(int(np.diff(np.append(run_starts, len(parent))).max()))
    parent_all = np.concatenate(parents)
    csr_codes = np.concatenate(codes).astype(np.int32)
    csr_next = np.concatenate(nexts).astype(np.int32)
    counts = np.bincount(parent_all, minlength=num_states)
    csr_indptr = np.zeros(num_states + 1, dtype=np.int64)
    np.cumsum(counts, out=csr_indptr[1:])
    csr_indptr = csr_indptr.astype(np.int32) if csr_indptr[-1] < 2**31 else csr_indptr

    # Row range of each state (rows are sorted, so each prefix is contiguous).
    state_row_lo = np.zeros(num_states, dtype=np.int32)
    state_row_hi = np.zeros(num_states, dtype=np.int32)
    state_row_hi[0] = num_items
    for length in range(1, num_levels):
        lo = np.flatnonzero(is_new[:, length - 1])
        s0, s1 = level_state_start[length], level_state_start[length + 1]
        state_row_lo[s0:s1] = lo
        state_row_hi[s0:s1] = np.append(lo[1:], num_items)

    # Dense tables for the first levels.
    k0 = codebook_sizes[0]
    root_next = np.full(k0, -1, dtype=np.int32)
    root_next[codes[0]] = nexts[0]
    if dense_depth is None:
        dense_depth = 2 if num_levels >= 2 and k0 * codebook_sizes[1] * 4 <= dense_budget_bytes else 1
    if dense_depth not in (1, 2) or (dense_depth == 2 and num_levels < 2):
        raise ValueError(f"dense_depth must be 1 or 2 (2 needs >= 2 levels), got {dense_depth}.")
    if dense_depth == 2:
        k1 = codebook_sizes[1]
        dense2_next = np.full((k0, k1), -1, dtype=np.int32)
        level1_rows = np.flatnonzero(is_new[:, 1])
        dense2_next[sorted_codes[level1_rows, 0], sorted_codes[level1_rows, 1]] = nexts[1]
    else:
        dense2_next = np.zeros((0, 0), dtype=np.int32)

    index = TrieIndex(
        codebook_sizes=codebook_sizes,
        token_offsets=token_offsets,
        dense_depth=dense_depth,
        max_branch=tuple(max_branch),
        level_state_start=level_state_start,
        csr_indptr=csr_indptr,
        csr_codes=csr_codes,
        csr_next=csr_next,
        root_next=root_next,
        dense2_next=dense2_next,
        state_row_lo=state_row_lo,
        state_row_hi=state_row_hi,
        sorted_codes=sorted_codes,
        sorted_item_ids=item_ids[order],
        sorted_input_rows=order.astype(np.int32),
        num_appended_levels=num_appended,
    )
    return index if capacity is None else pad_index(index, capacity)


def pad_index(index: TrieIndex, capacity: IndexCapacity) -> TrieIndex:
    """The exact ``index`` padded to ``capacity`` (layout: module docstring).

    The search over the result equals the search over ``index``: padding is
    unreachable, and a level's wider gather adds only invalid candidates,
    which the selection never takes (tests/test_catalogue_update.py).

    Raises:
      IndexCapacityError: the index's catalogue exceeds ``capacity``; one line
        saying which size and the fix.
    """
    if index.capacity is not None:
        raise ValueError("pad_index takes an exact index; this one is already padded (build it without capacity).")
    short = capacity.shortfall(IndexCapacity.of_index(index))
    if short:
        raise IndexCapacityError(
            f"the catalogue exceeds the index capacity ({'; '.join(short)}); pass a larger capacity, e.g. "
            "IndexCapacity.for_catalogue(sid_codes)."
        )
    num_states, num_transitions, num_items = index.num_states, int(index.csr_indptr[index.num_states]), index.num_items
    # The dtype follows the capacity, not the catalogue: every catalogue within it gets the same one.
    indptr_dtype = np.int32 if capacity.num_transitions < 2**31 else np.int64
    csr_indptr = np.full(capacity.num_states + 1, num_transitions, dtype=indptr_dtype)
    csr_indptr[: num_states + 1] = index.csr_indptr[: num_states + 1]

    def padded(values: np.ndarray, length: int, fill: int) -> np.ndarray:
        out = np.full(length, fill, dtype=values.dtype)
        out[: values.shape[0]] = values
        return out

    return dataclasses.replace(
        index,
        max_branch=capacity.max_branch,
        csr_indptr=csr_indptr,
        csr_codes=padded(index.csr_codes, capacity.num_transitions, 0),
        csr_next=padded(index.csr_next, capacity.num_transitions, 0),
        state_row_lo=padded(index.state_row_lo, capacity.num_states, 0),
        state_row_hi=padded(index.state_row_hi, capacity.num_states, 0),
        sorted_item_ids=padded(index.sorted_item_ids, capacity.num_items, -1),
        # Extra slots map to themselves, so sorted_input_rows stays a permutation of the slots.
        sorted_input_rows=np.concatenate(
            [index.sorted_input_rows, np.arange(num_items, capacity.num_items, dtype=np.int32)]),
        capacity=capacity,
    )


def _lexsort_rows(sid_codes: np.ndarray, codebook_sizes: Sequence[int]) -> np.ndarray:
    """Row order sorting SIDs lexicographically (level 0 most significant).

    Packs as many levels as fit into one uint64 key per group of levels, so
    a 10M x 8 catalogue sorts with one or two key passes instead of eight.
    """
    keys = []  # most significant group first
    key = np.zeros(sid_codes.shape[0], dtype=np.uint64)
    used_bits = 0
    for level, size in enumerate(codebook_sizes):
        bits = max(1, int(size - 1).bit_length())
        if used_bits + bits > 64:
            keys.append(key)
            key = np.zeros(sid_codes.shape[0], dtype=np.uint64)
            used_bits = 0
        key = (key << np.uint64(bits)) | sid_codes[:, level].astype(np.uint64)
        used_bits += bits
    keys.append(key)
    if len(keys) == 1:
        return np.argsort(keys[0], kind="stable")
    return np.lexsort(keys[::-1])

