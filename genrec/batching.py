"""Batches of SID token arrays for training and evaluation, resumable to the step.

Where it sits: ``genrec.split.SplitArrays`` (item rows) + item SID codes ->
:class:`BatchIterator` -> dicts of NumPy arrays -> the jitted train / eval step.

Each batch is a dict (``B`` = batch size, ``H`` = max history, ``L`` = SID levels):

    history_items   int32[B, H]     item rows, left-padded with -1
    history_tokens  int32[B, H*L]   SID tokens of the history items, flattened item
                                    by item, left-padded with PAD_ID (0)
    history_mask    bool[B, H*L]    True on real history tokens
    target_codes    int32[B, L]     SID codes of the target item
    target_tokens   int32[B, L]     model token ids of the target item's SID
    target_items    int32[B]        target item row
    example_mask    bool[B]         False on padding rows of a final partial batch

Padding rows (only with ``drop_remainder=False``) have no history, ``target_items``
-1, ``target_codes`` 0 and ``target_tokens`` PAD_ID, so gathers stay in range;
losses and metrics must weight them by ``example_mask``.

Order: epoch ``e`` visits the examples in a permutation drawn from the seed
sequence ``(seed, e)`` (or in order when ``shuffle=False``). Batch ``k`` is a pure
function of ``(data, batch_size, seed, k)``, so ``BatchIterator(..., start_step=k)``
yields exactly the batches a fresh iterator yields from its ``k``-th on: training
resumes exactly from a checkpointed step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from genrec.split import HISTORY_PAD, SplitArrays
from genrec.vocab import PAD_ID, SIDVocabulary

Batch = dict[str, np.ndarray]


class BatchIterator:
    """Iterates over fixed-size batches of (history, target) examples.

    Args:
      histories: ``int[num_examples, H]`` item rows, left-padded with -1.
      targets: ``int[num_examples]`` item rows.
      sid_codes: ``int[num_items, L]`` SID codes of every item row.
      vocab: token layout for ``sid_codes``.
      batch_size: rows per batch ``B``.
      shuffle: shuffle each epoch (otherwise examples come in order).
      seed: shuffling seed.
      drop_remainder: drop the last partial batch of each epoch; otherwise it is
        padded to ``B`` rows with ``example_mask`` False.
      start_step: index of the first batch to yield (for resuming).
      num_epochs: stop after this many epochs (counted from step 0); ``None``
        iterates forever.
    """

    def __init__(
        self,
        histories: np.ndarray,
        targets: np.ndarray,
        sid_codes: np.ndarray,
        vocab: SIDVocabulary,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_remainder: bool = True,
        start_step: int = 0,
        num_epochs: int | None = None,
    ):
        histories = np.asarray(histories)
        targets = np.asarray(targets)
        if histories.ndim != 2 or targets.shape != histories.shape[:1]:
            raise ValueError(
                f"histories must be [n, max_history] and targets [n], got {histories.shape} and {targets.shape}"
            )
        # Tokens of every item, computed once; also checks the codes fit the vocab.
        self._item_tokens = vocab.codes_to_tokens(sid_codes)  # [num_items, L]
        self._item_codes = np.asarray(sid_codes, dtype=np.int32)
        num_items = self._item_codes.shape[0]
        if targets.size and (targets.min() < 0 or targets.max() >= num_items):
            raise ValueError(f"targets must be item rows in [0, {num_items}), found "
                             f"[{targets.min()}, {targets.max()}]")
        if histories.size and (histories.min() < HISTORY_PAD or histories.max() >= num_items):
            raise ValueError(f"histories must be item rows in [0, {num_items}) or {HISTORY_PAD} padding")
        is_item = histories != HISTORY_PAD
        not_left_padded = np.flatnonzero((is_item[:, :-1] & ~is_item[:, 1:]).any(axis=1))
        if not_left_padded.size:
            raise ValueError(
                f"history row {not_left_padded[0]} has padding after an item: "
                f"{histories[not_left_padded[0]].tolist()}; histories must be left-padded with {HISTORY_PAD}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        num_examples = targets.shape[0]
        steps = num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)
        if steps == 0:
            raise ValueError(
                f"{num_examples} examples make no batch of {batch_size} with drop_remainder={drop_remainder}"
            )
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")

        self._histories = histories.astype(np.int32)
        self._targets = targets.astype(np.int32)
        self.vocab = vocab
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = drop_remainder
        self.num_epochs = num_epochs
        self.steps_per_epoch = steps
        self._next_step = start_step
        self._cached_epoch: int | None = None
        self._cached_order: np.ndarray | None = None

    @classmethod
    def from_split(
        cls, split: SplitArrays, sid_codes: np.ndarray, vocab: SIDVocabulary, batch_size: int, **kwargs
    ) -> "BatchIterator":
        """Same as the constructor, taking histories and targets from ``split``."""
        return cls(split.histories, split.targets, sid_codes, vocab, batch_size, **kwargs)

    @property
    def num_examples(self) -> int:
        return int(self._targets.shape[0])

    @property
    def step(self) -> int:
        """Index of the batch the next ``next()`` returns; checkpoint this to resume."""
        return self._next_step

    @property
    def total_steps(self) -> int | None:
        """Number of batches over ``num_epochs`` epochs, or ``None`` when unbounded."""
        return None if self.num_epochs is None else self.num_epochs * self.steps_per_epoch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """``int64[num_examples]``: example indices in the order epoch ``epoch`` visits them."""
        if self._cached_epoch != epoch:
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            else:
                order = np.arange(self.num_examples)
            self._cached_epoch, self._cached_order = epoch, order
        return self._cached_order

    def batch_at(self, step: int) -> Batch:
        """The ``step``-th batch (0-based, counted across epochs)."""
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        start = step_in_epoch * self.batch_size
        example_indices = self.epoch_order(epoch)[start : start + self.batch_size]
        return self.make_batch(example_indices)

    def make_batch(self, example_indices: np.ndarray) -> Batch:
        """Batch of the given examples, padded to ``batch_size`` rows."""
        num_real = len(example_indices)
        num_pad = self.batch_size - num_real
        if num_pad < 0:
            raise ValueError(f"{num_real} examples do not fit a batch of {self.batch_size}")
        history_items = np.pad(self._histories[example_indices], ((0, num_pad), (0, 0)),
                               constant_values=HISTORY_PAD)
        target_items = np.pad(self._targets[example_indices], (0, num_pad), constant_values=-1)
        example_mask = np.arange(self.batch_size) < num_real

        num_levels = self._item_tokens.shape[1]
        is_item = history_items != HISTORY_PAD  # [B, H]
        history_tokens = np.where(
            is_item[:, :, None], self._item_tokens[np.maximum(history_items, 0)], PAD_ID
        ).reshape(self.batch_size, -1)  # [B, H*L]
        history_mask = np.repeat(is_item, num_levels, axis=1)  # [B, H*L]

        real_target = np.maximum(target_items, 0)
        target_codes = np.where(example_mask[:, None], self._item_codes[real_target], 0)
        target_tokens = np.where(example_mask[:, None], self._item_tokens[real_target], PAD_ID)
        return {
            "history_items": history_items.astype(np.int32),
            "history_tokens": history_tokens.astype(np.int32),
            "history_mask": history_mask,
            "target_codes": target_codes.astype(np.int32),
            "target_tokens": target_tokens.astype(np.int32),
            "target_items": target_items.astype(np.int32),
            "example_mask": example_mask,
        }

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.total_steps is not None and self._next_step >= self.total_steps:
            raise StopIteration
        batch = self.batch_at(self._next_step)
        self._next_step += 1
        return batch

    def __len__(self) -> int:
        """Batches left to yield; only defined when ``num_epochs`` is set."""
        if self.total_steps is None:
            raise TypeError("BatchIterator with num_epochs=None is unbounded")
        return max(0, self.total_steps - self._next_step)
