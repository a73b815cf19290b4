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
* **Shared SIDs**: the index holds each distinct SID once, so a SID shared by
  several items fills one slot with one of its items: the first (in catalogue
  order) that the request's filters allow. A SID is dropped only when every
  item sharing it is filtered out.

Batches: requests are cut into chunks of ``batch_size``, the last one padded
with empty histories, so every decode call has one shape: one compile per
filter combination (none, ``allow_mask``, ``exclude_seen`` alone) and
exclusion-list width (a power of two, at least 64), whatever the number of
requests. A single request pays for a whole batch; pick ``batch_size`` for the
traffic (small for interactive use, large for batch jobs).

Devices: each decode call spans every local device by default (``devices=``):
the batch is split over them, weights and index are copied to each
(``constrained.sharding``), and the results equal one device's
(docs/serving.md, "All local devices").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from flax import nnx

from constrained.beam_search import check_normalization
from constrained.decode import build_eval_index, decode_batch, history_tokens
from constrained.sharding import local_layout
from genrec.run_files import load_inference_model, params_digest, read_run_info
from genrec.split import DEFAULT_MAX_HISTORY
from genrec.vocab import SIDVocabulary

__all__ = ["Recommendations", "Recommender"]

OnUnknown = Literal["error", "skip"]

# Exclusion lists are padded to a power of two at least this long (fewer compiles).
_MIN_EXCLUDE_WIDTH = 64


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
      devices: local devices each decode call is split over; None = all
        (``constrained.sharding.local_layout``), 1 = one device.
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
        devices: int | None = None,
    ):
        sid_codes = np.asarray(sid_codes)
        item_ids = np.asarray(item_ids)
        if sid_codes.ndim != 2 or sid_codes.shape[0] != item_ids.shape[0]:
            raise ValueError(
                f"sid_codes has shape {sid_codes.shape} but there are {item_ids.shape[0]} item ids; "
                "pass one SID row per item id"
            )
        if num_beams < 1 or batch_size < 1:
            raise ValueError(f"num_beams={num_beams} and batch_size={batch_size} must be >= 1")
        check_normalization(normalization)
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
        self.item_ids = item_ids
        self.sid_codes = sid_codes
        self._item_tokens = vocab.codes_to_tokens(sid_codes)  # also checks the codes fit
        self._graphdef, self._state = nnx.split(model)
        self._state = self._layout.replicate(self._state)
        self.index, self._sid_of_item = build_eval_index(sid_codes, vocab)
        self._device_index = self._layout.replicate(self.index.to_device())

        # Items of each distinct SID, in catalogue order: CSR over SID rows.
        self._items_by_sid = np.argsort(self._sid_of_item, kind="stable").astype(np.int32)
        self._sid_group_size = np.bincount(self._sid_of_item, minlength=self.num_sids)
        self._sid_group_start = np.concatenate([[0], np.cumsum(self._sid_group_size)[:-1]])
        self._row_of_id = {str(item_id): row for row, item_id in enumerate(item_ids.tolist())}
        if len(self._row_of_id) != item_ids.shape[0]:
            raise ValueError("item_ids holds repeated ids; every catalogue item needs its own id")
        self._invalid_id = -1 if item_ids.dtype.kind in "iu" else ("" if item_ids.dtype.kind in "US" else None)
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
        """
        loaded = load_inference_model(workdir, which)
        run = read_run_info(workdir)
        kwargs.setdefault("max_history", run.max_history)
        kwargs.setdefault("normalization", run.score_normalization)
        recommender = cls(loaded.model, loaded.vocab, loaded.sid_codes, loaded.item_ids, **kwargs)
        recommender._model_identity = loaded.identity
        return recommender

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
        return np.fromiter((self._row_of_id.get(str(item_id), -1) for item_id in item_ids),
                           dtype=np.int32, count=len(item_ids))

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

    def recommend(
        self,
        histories: Sequence[Sequence[Any]] | np.ndarray,
        *,
        top_k: int = 10,
        allow_mask: np.ndarray | None = None,
        exclude_seen: bool = False,
        on_unknown: OnUnknown = "error",
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
          on_unknown: ``"error"`` (default) or ``"skip"`` unknown item ids.

        Returns:
          :class:`Recommendations` with arrays ``[B, top_k]``.

        Raises:
          TypeError: a history (or ``histories``) is a string.
        """
        if on_unknown not in ("error", "skip"):
            raise ValueError(f"on_unknown={on_unknown!r}; use 'error' or 'skip'")
        if isinstance(histories, (str, bytes)) or any(isinstance(h, (str, bytes)) for h in histories):
            # list("1433") would silently become the items "1", "4", "3", "3".
            raise TypeError("a history must be a sequence of item ids, not a string: pass "
                            "recommend([['1433']]) for one request whose history is item '1433'")
        if isinstance(histories, np.ndarray) and histories.ndim == 2:
            histories = list(histories)
        row_lists = [self.item_rows(list(h), on_unknown=on_unknown, request=i) for i, h in enumerate(histories)]
        return self.recommend_rows(row_lists, top_k=top_k, allow_mask=allow_mask, exclude_seen=exclude_seen)

    def recommend_rows(
        self,
        histories: Sequence[Sequence[int]] | np.ndarray,
        *,
        top_k: int = 10,
        allow_mask: np.ndarray | None = None,
        exclude_seen: bool = False,
    ) -> Recommendations:
        """:meth:`recommend` for histories of catalogue *rows*.

        Args:
          histories: per request a chronological sequence of rows, or
            ``int[B, H]`` rows left-padded with -1 (``genrec.split`` layout).
        """
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be >= 1")
        if top_k > self.num_beams:
            raise ValueError(
                f"top_k={top_k} exceeds num_beams={self.num_beams}: the beam holds at most "
                f"{self.num_beams} items; build the Recommender with num_beams >= {top_k}"
            )
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

        item_rows = np.full((num_requests, top_k), -1, np.int32)
        scores = np.full((num_requests, top_k), -np.inf, np.float32)
        for start in range(0, num_requests, self.batch_size):
            stop = min(start + self.batch_size, num_requests)
            chunk_allow = None if allow_mask is None else allow_mask[start:stop]
            rows, chunk_scores = self._recommend_chunk(row_lists[start:stop], top_k, chunk_allow, exclude_seen)
            item_rows[start:stop], scores[start:stop] = rows, chunk_scores

        valid = item_rows >= 0
        ids = self.item_ids[np.maximum(item_rows, 0)]
        if self._invalid_id is None:
            ids = ids.astype(object)
        ids[~valid] = self._invalid_id
        return Recommendations(item_ids=ids, item_rows=item_rows, scores=scores, valid=valid)

    def _recommend_chunk(
        self,
        row_lists: list[np.ndarray],
        top_k: int,
        allow_mask: np.ndarray | None,
        exclude_seen: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One decode call: ``(item_rows int32[n, top_k], scores float32[n, top_k])``."""
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
        if allow_mask is not None:
            allowed_items = allow_mask.copy()
            if exclude_seen:
                for i, rows in enumerate(row_lists):
                    allowed_items[i, rows] = False
        sid_allow = sid_exclude = None
        if allowed_items is not None:
            sid_allow = np.zeros((padded, self.num_sids), bool)
            sid_allow[:num_requests] = np.logical_or.reduceat(
                allowed_items[:, self._items_by_sid], self._sid_group_start, axis=1
            )
        elif exclude_seen:
            excluded = [self._fully_seen_sids(rows) for rows in row_lists]
            width = max(_MIN_EXCLUDE_WIDTH, _next_power_of_two(max(len(e) for e in excluded)))
            sid_exclude = np.full((padded, width), -1, np.int32)
            for i, sids in enumerate(excluded):
                sid_exclude[i, : len(sids)] = sids

        # Rows split over the devices; replicate() is a no-op for an index already placed.
        shard = self._layout.shard_rows
        output = decode_batch(
            self._graphdef, self._state, self._layout.replicate(self._device_index), shard(tokens), shard(mask),
            shard(sid_allow), shard(sid_exclude), num_beams=self.num_beams, normalization=self.normalization,
        )
        sid_rows = np.asarray(output.item_ids)[:num_requests, :top_k]
        scores = np.asarray(output.scores)[:num_requests, :top_k].astype(np.float32)
        return self._items_of_sids(sid_rows, allowed_items, row_lists if exclude_seen else None), scores

    def _fully_seen_sids(self, rows: np.ndarray) -> np.ndarray:
        """SID rows all of whose items are in ``rows`` (the SIDs to exclude)."""
        seen_sids, seen_counts = np.unique(self._sid_of_item[np.unique(rows)], return_counts=True)
        return seen_sids[seen_counts == self._sid_group_size[seen_sids]].astype(np.int32)

    def _items_of_sids(
        self,
        sid_rows: np.ndarray,
        allowed_items: np.ndarray | None,
        seen_rows: list[np.ndarray] | None,
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
                if seen_rows is not None and item in seen_rows[request]:
                    continue
                items[request, slot] = item
                break
        return items
