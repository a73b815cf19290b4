"""The public recommender: item-id histories in, top-k item ids out.

Where it sits: checkpoint -> index -> decode -> **serve**. A
:class:`Recommender` holds a trained model, the catalogue's SIDs and a trie
over its distinct SIDs; :meth:`Recommender.recommend` takes plain Python
histories of original item ids and hides everything else: id -> row -> SID
tokens, truncation to the model's history length, padding into fixed-size
batches, the jitted encode + constrained beam search
(:func:`constrained.decode.decode_batch`, the same decode evaluation uses), the
per-request filters and the way back to item ids::

    rec = Recommender.from_workdir("runs/demo")
    out = rec.recommend([["12", "7", "33"], []], top_k=10, exclude_seen=True)
    out.item_ids   # [2, 10] original item ids, best first
    out.scores     # [2, 10] sequence log-probabilities
    out.valid      # [2, 10] False in slots nothing could fill

Behaviour (docs/serving.md has the full list, each point is tested):

* **Unknown item ids** in a history raise ``KeyError`` naming the id and the
  request, or are dropped with ``on_unknown="skip"``.
* **Empty histories** are allowed: the model sees only padding and returns its
  history-free ("cold start") ranking, the same for every empty history.
* **Long histories** keep their most recent ``max_history`` items (the length
  the model was trained with); ``exclude_seen`` still excludes the whole history.
* ``top_k > num_beams`` raises ``ValueError``. When fewer items than ``top_k``
  can be returned (a small catalogue, a filter that leaves few items), the
  extra slots have ``valid=False``, score ``-inf``, item row ``-1`` and item id
  ``""`` (``-1`` for an integer id array).
* **Item lists** (``exclude_items`` / ``allow_items``, per request): unknown
  ids raise ``ValueError`` naming the id and the request, or are dropped with
  ``on_unknown="skip"``; an empty list (or None) is no constraint, but an allow
  list whose ids are all unknown or excluded allows nothing (every slot invalid).
* **Shared SIDs**: the index holds each distinct SID once, so a SID shared by
  several items fills one slot with one of its items: the first (in catalogue
  order) that the request's filters allow. A SID is dropped only when every
  item sharing it is filtered out.

Batches: requests are cut into chunks of ``batch_size``, the last one padded
with empty histories, so every decode call has one shape: one compile per
filter combination (none; ``allow_mask``; sparse lists: an exclusion list when
``exclude_seen`` or ``exclude_items`` is given, an allow list when
``allow_items`` is) and list width (a power of two, at least 64), whatever the
number of requests and the catalogue size. A single request pays for a whole batch; pick ``batch_size`` for the
traffic (small for interactive use, large for batch jobs).

Catalogue updates: :meth:`Recommender.update_catalogue` swaps in a new
catalogue while requests are being served; with ``capacity=`` the index is
padded to fixed sizes, so a catalogue within them needs no new compile
(docs/serving.md, "Catalogue updates").

Devices: each decode call spans every local device by default (``devices=``):
the batch is split over them, weights and index are copied to each
(``constrained.sharding``), and the results equal one device's
(docs/serving.md, "All local devices").

Precision: ``matmul_precision="highest"`` computes the decode's float32
matmuls in full float32, so on a GPU or TPU a request's recommendations no
longer depend on the other requests of its batch (docs/serving.md,
"Reproducibility on GPUs").
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import logging
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
from flax import nnx

from constrained.beam_search import check_normalization
from constrained.decode import (
    MatmulPrecision,
    build_eval_index,
    check_matmul_precision,
    decode_batch,
    history_tokens,
    matmul_precision_scope,
)
from constrained.index import DEFAULT_HEADROOM, DeviceIndex, IndexCapacity, TrieIndex, pad_index
from constrained.sharding import local_layout
from genrec.run_files import load_inference_model, params_digest, read_run_info
from genrec.split import DEFAULT_MAX_HISTORY
from genrec.vocab import SIDVocabulary

__all__ = ["Recommendations", "Recommender"]

logger = logging.getLogger(__name__)

OnUnknown = Literal["error", "skip"]

# Item lists (exclusion, allow) are padded to a power of two at least this long (fewer compiles).
_MIN_LIST_WIDTH = 64


@dataclasses.dataclass(frozen=True, eq=False)
class Recommendations:
    """Top-k recommendations of a batch of requests, best first.

    Attributes:
      item_ids: ``[B, top_k]`` original item ids (the catalogue's dtype);
        ``""`` (or ``-1`` for integer ids) where not valid.
      item_rows: ``int32[B, top_k]`` catalogue rows, ``-1`` where not valid.
      scores: ``float32[B, top_k]`` sequence log-probabilities, ``-inf`` where not valid.
      valid: ``bool[B, top_k]``.
    """

    item_ids: np.ndarray
    item_rows: np.ndarray
    scores: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return int(self.valid.shape[0])

    def for_request(self, request: int) -> list[tuple[Any, float]]:
        """The valid ``(item_id, score)`` pairs of one request, best first."""
        keep = self.valid[request]
        return [(item_id.item() if isinstance(item_id, np.generic) else item_id, float(score))
                for item_id, score in zip(self.item_ids[request][keep], self.scores[request][keep])]


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclasses.dataclass(frozen=True, eq=False)
class _Catalogue:
    """Everything a request reads about the catalogue, built together and never
    mutated afterwards: :meth:`Recommender.update_catalogue` replaces the whole
    object with one reference assignment."""

    item_ids: np.ndarray  # [num_items] original ids
    sid_codes: np.ndarray  # int[num_items, L]
    item_tokens: np.ndarray  # int32[num_items, L] model tokens of each item
    index: TrieIndex  # over the distinct SIDs (padded when the recommender has a capacity)
    device_index: DeviceIndex
    sid_of_item: np.ndarray  # int32[num_items] distinct-SID row of each item
    items_by_sid: np.ndarray  # int32[num_items] items grouped by SID, catalogue order within a group
    sid_group_size: np.ndarray  # int[num_sids]
    sid_group_start: np.ndarray  # int[num_sids]
    row_of_id: Mapping[str, int]  # read-only
    invalid_id: Any


def _build_catalogue(
    vocab: SIDVocabulary,
    sid_codes: np.ndarray,
    item_ids: np.ndarray,
    choose_capacity: Callable[[TrieIndex], IndexCapacity | None],
    place: Callable[[DeviceIndex], DeviceIndex],
) -> _Catalogue:
    """The catalogue's index, device arrays and id maps.

    ``choose_capacity(exact_index)`` gives the capacity to pad the index to
    (None: keep exact shapes); ``place`` puts the device index on the decode's
    devices (``DecodeLayout.replicate``).
    """
    if sid_codes.ndim != 2 or sid_codes.shape[0] != item_ids.shape[0]:
        raise ValueError(
            f"sid_codes has shape {sid_codes.shape} but there are {item_ids.shape[0]} item ids; "
            "pass one SID row per item id"
        )
    item_tokens = vocab.codes_to_tokens(sid_codes)  # also checks the codes fit
    index, sid_of_item = build_eval_index(sid_codes, vocab)
    capacity = choose_capacity(index)
    if capacity is not None:
        index = pad_index(index, capacity)
    row_of_id = {str(item_id): row for row, item_id in enumerate(item_ids.tolist())}
    if len(row_of_id) != item_ids.shape[0]:
        raise ValueError("item_ids holds repeated ids; every catalogue item needs its own id")
    # Items of each distinct SID, in catalogue order: CSR over SID rows.
    sid_group_size = np.bincount(sid_of_item, minlength=index.num_items)
    return _Catalogue(
        item_ids=item_ids,
        sid_codes=sid_codes,
        item_tokens=item_tokens,
        index=index,
        device_index=place(index.to_device()),
        sid_of_item=sid_of_item,
        items_by_sid=np.argsort(sid_of_item, kind="stable").astype(np.int32),
        sid_group_size=sid_group_size,
        sid_group_start=np.concatenate([[0], np.cumsum(sid_group_size)[:-1]]),
        row_of_id=types.MappingProxyType(row_of_id),
        invalid_id=-1 if item_ids.dtype.kind in "iu" else ("" if item_ids.dtype.kind in "US" else None),
    )


def _shape_signature(index: DeviceIndex) -> tuple:
    """What of an index the compiled decode depends on: its static metadata and its arrays' shapes and dtypes."""
    leaves = jax.tree_util.tree_leaves(index)
    return (index.meta,) + tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves)


def _one_catalogue(method):
    """Runs ``method`` with the recommender's current catalogue pinned for this
    thread: the call, and every method it calls, reads that one snapshot even
    if :meth:`Recommender.update_catalogue` swaps catalogues meanwhile."""

    @functools.wraps(method)
    def pinned(self, *args, **kwargs):
        if getattr(self._pins, "catalogue", None) is not None:  # an outer call already pinned one
            return method(self, *args, **kwargs)
        self._pins.catalogue = self._catalogue
        try:
            return method(self, *args, **kwargs)
        finally:
            self._pins.catalogue = None

    return pinned


def _catalogue_field(name: str, doc: str) -> property:
    return property(lambda self: getattr(self._current_catalogue(), name), doc=doc)


class Recommender:
    """Generates top-k items for histories of item ids with a trained genrec model.

    Args:
      model: a genrec recommender (``encode`` / ``init_beam_cache`` /
        ``decode_step``), e.g. from ``genrec.run_files.load_model_for_inference``.
      vocab: the token layout the model was trained with.
      sid_codes: ``int[num_items, L]`` SID codes of the catalogue.
      item_ids: ``num_items`` original item ids (compared as strings, as in
        ``genrec.datasets``).
      num_beams: beam width; the most items one request can get.
      batch_size: requests per decode call (the last chunk is padded); rounded
        up to a multiple of ``devices`` (12 on 8 devices -> 16), so every
        device decodes as many rows.
      max_history: most recent history items the model reads (default: the
        model's limit, at most ``genrec.split.DEFAULT_MAX_HISTORY`` = 20;
        :meth:`from_workdir` uses the training run's value).
      normalization: softmax support of the beam scores, ``"vocab"`` or
        ``"trie"`` (valid children only, for MSL-trained models;
        :meth:`from_workdir` picks it from the run's config).
      capacity: pad the index so that catalogue updates within it keep the
        decode's shapes (no recompile; :meth:`update_catalogue`): an
        :class:`~constrained.index.IndexCapacity`, or a headroom factor
        ``>= 1`` (e.g. ``1.25``) over this catalogue's sizes
        (``IndexCapacity.for_catalogue``). None (default): exact shapes.
      devices: local devices each decode call is split over; None = all
        (``constrained.sharding.local_layout``), 1 = one device.
      matmul_precision: float32 matmul precision of the decode. ``"default"``:
        JAX's (TF32 on recent GPUs, one bfloat16 pass on TPUs; fastest), where a
        request's items can change with its batch neighbours; ``"high"``: TF32
        on GPUs, three bfloat16 passes on TPUs; ``"highest"``: full float32, a
        request's items independent of its batch. CPUs compute float32 at every
        level. docs/serving.md, "Reproducibility on GPUs".
    """

    def __init__(
        self,
        model: nnx.Module,
        vocab: SIDVocabulary,
        sid_codes: np.ndarray,
        item_ids: Sequence[Any] | np.ndarray,
        *,
        num_beams: int = 20,
        batch_size: int = 32,
        max_history: int | None = None,
        normalization: Literal["vocab", "trie"] = "vocab",
        capacity: IndexCapacity | float | None = None,
        devices: int | None = None,
        matmul_precision: MatmulPrecision = "default",
    ):
        sid_codes = np.asarray(sid_codes)
        item_ids = np.asarray(item_ids)
        if num_beams < 1 or batch_size < 1:
            raise ValueError(f"num_beams={num_beams} and batch_size={batch_size} must be >= 1")
        check_normalization(normalization)
        check_matmul_precision(matmul_precision)
        config = getattr(model, "config", None)
        if config is not None:
            if config.vocab_size != vocab.vocab_size or config.num_levels != vocab.num_levels:
                raise ValueError(
                    f"the model has vocab_size={config.vocab_size}, num_levels={config.num_levels} but "
                    f"the vocabulary has {vocab.vocab_size}, {vocab.num_levels}; use the vocabulary "
                    "saved with the model's checkpoint"
                )
            model_limit = config.max_history_tokens // vocab.num_levels
        else:
            model_limit = None
        if max_history is None:
            max_history = DEFAULT_MAX_HISTORY if model_limit is None else min(DEFAULT_MAX_HISTORY, model_limit)
        if max_history < 1 or (model_limit is not None and max_history > model_limit):
            raise ValueError(
                f"max_history={max_history} must be in [1, {model_limit}] (the model's "
                f"max_history_tokens // num_levels)"
            )

        self._layout = local_layout(devices)
        self.vocab = vocab
        self.num_beams = int(num_beams)
        self.batch_size = self._layout.round_batch(batch_size)
        self.max_history = int(max_history)
        self.normalization = normalization
        self.matmul_precision = matmul_precision
        self._graphdef, self._state = nnx.split(model)
        self._state = self._layout.replicate(self._state)
        # Growth allowed for when an update exceeds the capacity (update_catalogue).
        self._headroom = DEFAULT_HEADROOM
        if capacity is None or isinstance(capacity, IndexCapacity):
            choose_capacity = lambda exact: capacity  # noqa: E731
        else:
            self._headroom = float(capacity)
            choose_capacity = lambda exact: IndexCapacity.of_index(exact).with_headroom(  # noqa: E731
                self._headroom, vocab.codebook_sizes)
        self._catalogue = _build_catalogue(vocab, sid_codes, item_ids, choose_capacity, self._layout.replicate)
        self._pins = threading.local()  # the catalogue each thread's call in flight reads (_one_catalogue)
        self._update_lock = threading.Lock()  # one update at a time; requests never take it
        self._model_identity: dict[str, Any] | None = None  # from_workdir's, else computed when first asked

    @classmethod
    def from_workdir(
        cls, workdir: str | Path, which: Literal["best", "latest"] = "best", **kwargs: Any
    ) -> "Recommender":
        """The recommender of a training workdir (``genrec train --workdir``).

        ``which`` picks the best (validation ndcg@10) or latest checkpoint;
        ``kwargs`` go to the constructor (``devices=1`` for one device). The history length defaults to the
        one the model was trained with, and the score normalisation to the
        run's (``genrec.run_files.RunInfo.score_normalization``: ``"trie"`` after MSL).
        ``capacity=`` (a headroom such as ``1.25``, or an ``IndexCapacity``)
        pads the index for catalogue updates without recompiling
        (:meth:`update_catalogue`).
        ``matmul_precision="highest"`` makes a request's items independent of
        its batch neighbours on GPUs and TPUs.
        """
        check_matmul_precision(kwargs.get("matmul_precision", "default"))  # before loading the checkpoint
        loaded = load_inference_model(workdir, which)
        run = read_run_info(workdir)
        kwargs.setdefault("max_history", run.max_history)
        kwargs.setdefault("normalization", run.score_normalization)
        recommender = cls(loaded.model, loaded.vocab, loaded.sid_codes, loaded.item_ids, **kwargs)
        recommender._model_identity = loaded.identity
        return recommender

    # ------------------------------------------------------------ catalogue

    def _current_catalogue(self) -> _Catalogue:
        pinned = getattr(self._pins, "catalogue", None)
        return self._catalogue if pinned is None else pinned

    item_ids = _catalogue_field("item_ids", "``[num_items]`` original item ids of the catalogue.")
    sid_codes = _catalogue_field("sid_codes", "``int[num_items, L]`` SID codes of the catalogue.")
    index = _catalogue_field("index", "The trie over the catalogue's distinct SIDs (padded with a capacity).")
    _item_tokens = _catalogue_field("item_tokens", None)
    _device_index = _catalogue_field("device_index", None)
    _sid_of_item = _catalogue_field("sid_of_item", None)
    _items_by_sid = _catalogue_field("items_by_sid", None)
    _sid_group_size = _catalogue_field("sid_group_size", None)
    _sid_group_start = _catalogue_field("sid_group_start", None)
    _row_of_id = _catalogue_field("row_of_id", None)
    _invalid_id = _catalogue_field("invalid_id", None)

    @property
    def capacity(self) -> IndexCapacity | None:
        """The sizes the index is padded to (None: exact shapes)."""
        return self.index.capacity

    def update_catalogue(self, sid_codes: np.ndarray, item_ids: Sequence[Any] | np.ndarray) -> bool:
        """Serves a new catalogue from now on: items added, retired or re-coded.

        The new index (padded to the recommender's capacity), its device
        arrays and the id maps are built off to the side into one immutable
        object, which then replaces the old one in a single reference
        assignment (atomic in Python). A :meth:`recommend` /
        :meth:`recommend_rows` call reads that reference once when it starts
        and uses the one catalogue for all its steps (id lookup, filters,
        decode, rows back to ids), so a call in flight sees the old catalogue
        or the new one, never a mix. Updates are serialised by a lock that
        requests never take.

        Within the capacity the decode keeps its shapes: no new compile. A
        catalogue that exceeds it is not refused or truncated: the capacity
        grows to cover it with the recommender's headroom (the factor passed
        as ``capacity=``, else 1.25) and a WARNING says that the next decode
        compiles again. Without a capacity the
        index has exact shapes, and a catalogue whose shapes differ compiles
        again (logged at INFO).

        The model is unchanged: new items must have SIDs of its vocabulary.
        Histories, ``allow_mask`` columns and returned rows refer to the new
        catalogue's rows afterwards; the batch job's manifest records the
        catalogue's fingerprint, so a job resumed over another catalogue is
        refused (serving/batch_job.py).

        Args:
          sid_codes: ``int[num_items, L]`` SID codes of the new catalogue.
          item_ids: its ``num_items`` original item ids.

        Returns:
          True when the new catalogue fit the capacity (the compiled decode
          is reused); False when the index's shapes changed.
        """
        sid_codes = np.asarray(sid_codes)
        item_ids = np.asarray(item_ids)
        with self._update_lock:
            old = self._catalogue
            new = _build_catalogue(self.vocab, sid_codes, item_ids,
                                   functools.partial(self._capacity_for, old.index.capacity), self._layout.replicate)
            same_shapes = _shape_signature(new.device_index) == _shape_signature(old.device_index)
            if not same_shapes and old.index.capacity is None:
                logger.info("update_catalogue: the new catalogue changes the index's shapes, the next decode of "
                            "each batch shape will recompile (build the Recommender with capacity= to avoid it)")
            self._catalogue = new  # the swap: one reference assignment
        return same_shapes

    def _capacity_for(self, capacity: IndexCapacity | None, exact: TrieIndex) -> IndexCapacity | None:
        """``capacity``, grown (with a warning) when the catalogue of ``exact`` exceeds it."""
        if capacity is None:
            return None
        need = IndexCapacity.of_index(exact)
        if capacity.covers(need):
            return capacity
        grown = capacity.union(need.with_headroom(self._headroom, self.vocab.codebook_sizes))
        logger.warning(
            "update_catalogue: the new catalogue exceeds the index capacity (%s); rebuilding the index with "
            "capacity %s: the next decode of each batch shape will recompile",
            "; ".join(capacity.shortfall(need)), grown)
        return grown

    def snapshot(self) -> "Recommender":
        """This recommender with its current catalogue fixed for good.

        Shares the model and the compiled decode; later :meth:`update_catalogue`
        calls on ``self`` do not reach it. For work that must see one
        catalogue across many calls (the batch job: its rows, shards and
        manifest).
        """
        view = copy.copy(self)
        view._catalogue = self._current_catalogue()
        view._pins = threading.local()
        view._update_lock = threading.Lock()
        return view

    # ------------------------------------------------------------ properties

    @property
    def model_identity(self) -> dict[str, Any]:
        """Which weights this recommender serves: ``{"checkpoint", "step", "params"}``.

        ``params`` is the ``sha256:<hex>`` digest of the model's parameters
        (``genrec.run_files.params_digest``); ``checkpoint`` (``"best"`` /
        ``"latest"``) and ``step`` come from :meth:`from_workdir` and are None
        for a model passed in directly. The batch job records it, so a resumed
        job never mixes two models' outputs (docs/serving.md).
        """
        if self._model_identity is None:
            self._model_identity = {"checkpoint": None, "step": None,
                                    "params": params_digest(nnx.merge(self._graphdef, self._state))}
        return dict(self._model_identity)

    @property
    def num_items(self) -> int:
        return int(self.sid_codes.shape[0])

    @property
    def num_sids(self) -> int:
        """Distinct SIDs in the catalogue (the most items any request can receive)."""
        return self.index.num_items

    @property
    def num_devices(self) -> int:
        """Local devices each decode call is split over (the ``devices`` argument)."""
        return self._layout.num_devices

    def lookup_rows(self, item_ids: Sequence[Any]) -> np.ndarray:
        """Catalogue rows ``int32[n]`` of original item ids, ``-1`` for unknown ids."""
        row_of_id = self._row_of_id  # one catalogue for the whole call, and one property read, not one per id
        return np.fromiter(map(row_of_id.get, map(str, item_ids), itertools.repeat(-1)), dtype=np.int32,
                           count=len(item_ids))

    def item_rows(
        self, item_ids: Sequence[Any], *, on_unknown: OnUnknown = "error", request: int | None = None
    ) -> np.ndarray:
        """Catalogue rows ``int32[n]`` of original item ids.

        Raises:
          KeyError: an id is not in the catalogue (unless ``on_unknown="skip"``,
            which drops it); the message names the id and ``request``.
        """
        rows = self.lookup_rows(item_ids)
        if (rows < 0).any():
            if on_unknown == "skip":
                return rows[rows >= 0]
            unknown = list(item_ids)[int(np.argmax(rows < 0))]
            where = "" if request is None else f" in the history of request {request}"
            raise KeyError(
                f"item id {unknown!r}{where} is not in the model's catalogue of {self.num_items} items; "
                "pass on_unknown='skip' to ignore unknown items, or retrain with a catalogue that has it"
            )
        return rows

    # ------------------------------------------------------------ recommending

    @_one_catalogue
    def recommend(
        self,
        histories: Sequence[Sequence[Any]] | np.ndarray,
        *,
        top_k: int = 10,
        allow_mask: np.ndarray | None = None,
        exclude_seen: bool = False,
        on_unknown: OnUnknown = "error",
        exclude_items: Sequence[Sequence[Any] | None] | None = None,
        allow_items: Sequence[Sequence[Any] | None] | None = None,
    ) -> Recommendations:
        """Top-``top_k`` items for each history of original item ids.

        Args:
          histories: one chronological list of item ids per request (oldest
            first; may be empty: a cold-start request), or a 2-D array ``[B, H]``
            of ids (every row a full history). No requests give an empty result.
          top_k: items per request, ``<= num_beams``.
          allow_mask: optional ``bool[B, num_items]`` (catalogue rows): only
            allowed items are returned.
          exclude_seen: never return an item of the request's history.
          on_unknown: ``"error"`` (default) or ``"skip"`` unknown item ids, in
            histories and in the item lists.
          exclude_items: optional, per request a list of item ids never to
            return (or None / empty: nothing excluded).
          allow_items: optional, per request the list of the only item ids it
            may receive (None / empty: no constraint). The sparse form of
            ``allow_mask`` (exclusive with it): compiled shapes depend on the
            lists' bucketed width, not on the catalogue size. A list whose ids
            are all unknown (skipped) or excluded allows nothing; fewer allowed
            items than ``top_k`` leave invalid slots, as with ``allow_mask``.

        Returns:
          :class:`Recommendations` with arrays ``[B, top_k]``.

        Raises:
          TypeError: a history or item list (or ``histories``) is a string.
          KeyError: an unknown id in a history (with ``on_unknown="error"``).
          ValueError: an unknown id in an item list (with ``on_unknown="error"``),
            one list per request not given, or ``allow_mask`` with ``allow_items``.
        """
        if on_unknown not in ("error", "skip"):
            raise ValueError(f"on_unknown={on_unknown!r}; use 'error' or 'skip'")
        if not isinstance(histories, (str, bytes, np.ndarray)):
            histories = list(histories)  # an iterator would be used up by the check below (0 results)
        exclude_items, allow_items = (ids if ids is None or isinstance(ids, (str, bytes)) else list(ids)
                                      for ids in (exclude_items, allow_items))
        if isinstance(histories, (str, bytes)) or any(isinstance(h, (str, bytes)) for h in histories):
            # list("1433") would silently become the items "1", "4", "3", "3".
            raise TypeError("a history must be a sequence of item ids, not a string: pass "
                            "recommend([['1433']]) for one request whose history is item '1433'")
        if allow_mask is not None and allow_items is not None:
            raise ValueError("allow_mask and allow_items are both given; pass one (allow_items lists ids, "
                             "allow_mask is the dense bool[B, num_items] form)")
        if isinstance(histories, np.ndarray) and histories.ndim == 2:
            histories = list(histories)
        row_lists = [self.item_rows(list(h), on_unknown=on_unknown, request=i) for i, h in enumerate(histories)]
        return self.recommend_rows(
            row_lists, top_k=top_k, allow_mask=allow_mask, exclude_seen=exclude_seen,
            exclude_rows=self._id_lists_to_rows(exclude_items, "exclude_items", len(row_lists), on_unknown),
            allow_rows=self._id_lists_to_rows(allow_items, "allow_items", len(row_lists), on_unknown),
        )

    @_one_catalogue
    def recommend_rows(
        self,
        histories: Sequence[Sequence[int]] | np.ndarray,
        *,
        top_k: int = 10,
        allow_mask: np.ndarray | None = None,
        exclude_seen: bool = False,
        exclude_rows: Sequence[Sequence[int] | None] | None = None,
        allow_rows: Sequence[Sequence[int] | None] | None = None,
    ) -> Recommendations:
        """:meth:`recommend` for histories and item lists of catalogue *rows*.

        Args:
          histories: per request a chronological sequence of rows, or
            ``int[B, H]`` rows left-padded with -1 (``genrec.split`` layout).
          exclude_rows, allow_rows: per request a list of rows (or None), as
            ``exclude_items`` / ``allow_items``. A ``-1`` entry (an unknown id,
            as :meth:`lookup_rows` gives) matches no item: a non-empty allow
            list of only ``-1`` allows nothing.
        """
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be >= 1")
        if top_k > self.num_beams:
            raise ValueError(
                f"top_k={top_k} exceeds num_beams={self.num_beams}: the beam holds at most "
                f"{self.num_beams} items; build the Recommender with num_beams >= {top_k}"
            )
        if allow_mask is not None and allow_rows is not None:
            raise ValueError("allow_mask and allow_rows are both given; pass one (allow_rows lists rows, "
                             "allow_mask is the dense bool[B, num_items] form)")
        row_lists = [np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]
        row_lists = [h[h >= 0] for h in row_lists]
        for request, rows in enumerate(row_lists):
            if rows.size and rows.max() >= self.num_items:
                raise ValueError(
                    f"request {request}: item row {int(rows.max())} is outside the catalogue of "
                    f"{self.num_items} items"
                )
        num_requests = len(row_lists)
        if allow_mask is not None:
            allow_mask = np.asarray(allow_mask, dtype=bool)
            if allow_mask.shape != (num_requests, self.num_items):
                raise ValueError(
                    f"allow_mask has shape {allow_mask.shape}, expected ({num_requests}, {self.num_items}): "
                    "one row per request, one column per catalogue item"
                )
        exclude_lists = self._checked_row_lists(exclude_rows, "exclude_rows", num_requests)
        allow_lists = self._checked_row_lists(allow_rows, "allow_rows", num_requests)
        # Per request: the rows never to return (history if exclude_seen, plus the exclusion list) ...
        excluded = None
        if exclude_seen or exclude_lists is not None:
            excluded = []
            for i, rows in enumerate(row_lists):
                listed = rows[:0] if exclude_lists is None or exclude_lists[i] is None else exclude_lists[i]
                merged = np.concatenate([rows if exclude_seen else rows[:0], listed])
                excluded.append(np.unique(merged[merged >= 0]))
        # ... and the only rows it may receive (None or empty: no constraint; only -1 rows: nothing).
        allowed = None
        if allow_lists is not None:
            allowed = [None if rows is None or rows.size == 0 else rows for rows in allow_lists]

        item_rows = np.full((num_requests, top_k), -1, np.int32)
        scores = np.full((num_requests, top_k), -np.inf, np.float32)
        for start in range(0, num_requests, self.batch_size):
            stop = min(start + self.batch_size, num_requests)
            rows, chunk_scores = self._recommend_chunk(
                row_lists[start:stop], top_k,
                None if allow_mask is None else allow_mask[start:stop],
                None if excluded is None else excluded[start:stop],
                None if allowed is None else allowed[start:stop],
            )
            item_rows[start:stop], scores[start:stop] = rows, chunk_scores

        valid = item_rows >= 0
        ids = self.item_ids[np.maximum(item_rows, 0)]
        if self._invalid_id is None:
            ids = ids.astype(object)
        ids[~valid] = self._invalid_id
        return Recommendations(item_ids=ids, item_rows=item_rows, scores=scores, valid=valid)

    def _id_lists_to_rows(
        self, lists: Sequence[Sequence[Any] | None] | None, kind: str, num_requests: int, on_unknown: OnUnknown
    ) -> list[np.ndarray | None] | None:
        """Per-request id lists -> row lists (-1 for a skipped unknown id, which matches no item)."""
        if lists is None:
            return None
        self._check_list_count(lists, kind, num_requests)
        out: list[np.ndarray | None] = []
        for request, ids in enumerate(lists):
            if ids is None:
                out.append(None)
                continue
            if isinstance(ids, (str, bytes)):
                raise TypeError(f"{kind}[{request}] is the string {ids!r}; pass a list of item ids per request, "
                                f"e.g. {kind}=[[{ids!r}]]")
            ids = list(ids)
            rows = self.lookup_rows(ids)
            if on_unknown == "error" and (rows < 0).any():
                unknown = ids[int(np.argmax(rows < 0))]
                raise ValueError(
                    f"{kind} of request {request}: item id {unknown!r} is not in the model's catalogue of "
                    f"{self.num_items} items; pass on_unknown='skip' to drop unknown ids"
                )
            out.append(rows)
        return out

    def _checked_row_lists(
        self, lists: Sequence[Sequence[int] | None] | None, kind: str, num_requests: int
    ) -> list[np.ndarray | None] | None:
        """Per-request row lists as ``int64`` arrays (None kept), rows checked against the catalogue."""
        if lists is None:
            return None
        self._check_list_count(lists, kind, num_requests)
        out: list[np.ndarray | None] = []
        for request, rows in enumerate(lists):
            if rows is None:
                out.append(None)
                continue
            rows = np.asarray(rows, dtype=np.int64).reshape(-1)
            if rows.size and rows.max() >= self.num_items:
                raise ValueError(f"{kind} of request {request}: item row {int(rows.max())} is outside the "
                                 f"catalogue of {self.num_items} items")
            out.append(rows)
        return out

    @staticmethod
    def _check_list_count(lists: Any, kind: str, num_requests: int) -> None:
        if isinstance(lists, (str, bytes)) or len(lists) != num_requests:
            count = "a string" if isinstance(lists, (str, bytes)) else f"{len(lists)} lists"
            raise ValueError(f"{kind} has {count} for {num_requests} requests; pass one list (or None) per request")

    def _recommend_chunk(
        self,
        row_lists: list[np.ndarray],
        top_k: int,
        allow_mask: np.ndarray | None,
        excluded: list[np.ndarray] | None,
        allowed: list[np.ndarray | None] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One decode call: ``(item_rows int32[n, top_k], scores float32[n, top_k])``.

        ``excluded``: per request the rows never to return; ``allowed``: per
        request None (no constraint) or the only rows it may receive.
        """
        num_requests = len(row_lists)
        padded = self.batch_size
        history = np.full((padded, self.max_history), -1, np.int32)
        for i, rows in enumerate(row_lists):
            recent = rows[-self.max_history:]
            if recent.size:
                history[i, -recent.size:] = recent
        tokens, mask = history_tokens(history, self._item_tokens)

        # Item-level permission of each request, reduced to SID level for the index.
        allowed_items = None  # bool[n, num_items] when a dense filter is needed
        sid_allow = sid_exclude = sid_allow_rows = None
        allows_nothing = np.zeros(num_requests, bool)
        if allow_mask is not None:
            allowed_items = allow_mask.copy()
            for i, rows in enumerate(excluded or []):
                allowed_items[i, rows] = False
            sid_allow = np.zeros((padded, self.index.num_item_slots), bool)  # padded slots stay False
            sid_allow[:num_requests, : self.num_sids] = np.logical_or.reduceat(
                allowed_items[:, self._items_by_sid], self._sid_group_start, axis=1
            )
        else:
            # Sparse lists of SID rows, padded to a bucketed width (shapes never follow the catalogue).
            allow_sids: list[np.ndarray | None] = [None] * num_requests
            for i, rows in enumerate(allowed or []):
                if rows is not None:
                    # A SID is allowed when one of its listed items is not excluded.
                    rows = rows[rows >= 0] if excluded is None else np.setdiff1d(rows[rows >= 0], excluded[i])
                    allow_sids[i] = np.unique(self._sid_of_item[rows]).astype(np.int32)
                    allows_nothing[i] = allow_sids[i].size == 0
            if allowed is not None:
                sid_allow_rows = self._padded_sid_lists(allow_sids)
            if excluded is not None:
                # A request with an allow list has its exclusions folded into it already.
                sid_exclude = self._padded_sid_lists(
                    [self._fully_seen_sids(rows) if allow_sids[i] is None else None for i, rows in enumerate(excluded)]
                )

        # Rows split over the devices (the catalogue's index and the weights were placed on all of them).
        shard = self._layout.shard_rows
        with matmul_precision_scope(self.matmul_precision):  # the jit cache keys on it: one compile per precision
            output = decode_batch(
                self._graphdef, self._state, self._device_index, shard(tokens), shard(mask),
                shard(sid_allow), shard(sid_exclude), shard(sid_allow_rows), num_beams=self.num_beams,
                normalization=self.normalization,
            )
        sid_rows = np.array(output.item_ids)[:num_requests, :top_k]
        scores = np.array(output.scores)[:num_requests, :top_k].astype(np.float32)
        # An empty allow list means "no constraint" to the decode: drop what it found for these.
        sid_rows[allows_nothing], scores[allows_nothing] = -1, -np.inf
        return self._items_of_sids(sid_rows, allowed_items, allowed, excluded), scores

    def _padded_sid_lists(self, sid_lists: list[np.ndarray | None]) -> np.ndarray:
        """``int32[batch_size, W]`` of per-request SID rows, -1 padding; W a power of two >= 64."""
        longest = max((len(sids) for sids in sid_lists if sids is not None), default=0)
        width = max(_MIN_LIST_WIDTH, _next_power_of_two(longest))
        padded = np.full((self.batch_size, width), -1, np.int32)
        for i, sids in enumerate(sid_lists):
            if sids is not None:
                padded[i, : len(sids)] = sids
        return padded

    def _fully_seen_sids(self, rows: np.ndarray) -> np.ndarray:
        """SID rows all of whose items are in ``rows`` (the SIDs to exclude)."""
        seen_sids, seen_counts = np.unique(self._sid_of_item[np.unique(rows)], return_counts=True)
        return seen_sids[seen_counts == self._sid_group_size[seen_sids]].astype(np.int32)

    def _items_of_sids(
        self,
        sid_rows: np.ndarray,
        allowed_items: np.ndarray | None,
        allowed: list[np.ndarray | None] | None,
        excluded: list[np.ndarray] | None,
    ) -> np.ndarray:
        """Distinct-SID rows ``[n, k]`` (-1 invalid) -> catalogue item rows (policy: module docstring)."""
        valid = sid_rows >= 0
        safe = np.maximum(sid_rows, 0)
        items = np.where(valid, self._items_by_sid[self._sid_group_start[safe]], -1).astype(np.int32)
        # Shared SIDs (a handful per catalogue): pick the first member this request may receive.
        for request, slot in np.argwhere(valid & (self._sid_group_size[safe] > 1)):
            sid = safe[request, slot]
            start = self._sid_group_start[sid]
            for item in self._items_by_sid[start : start + self._sid_group_size[sid]]:
                if allowed_items is not None and not allowed_items[request, item]:
                    continue
                if allowed is not None and allowed[request] is not None and item not in allowed[request]:
                    continue
                if excluded is not None and item in excluded[request]:
                    continue
                items[request, slot] = item
                break
        return items
