"""Leave-one-out evaluation through the constrained beam search.

Where it sits: checkpoint -> index -> decode -> **metrics**. The trainer calls
:func:`evaluate_split` on the validation split for model selection and on the
test split at the end; ``genrec eval`` calls :func:`evaluate_workdir` on a
saved model. Decoding is ``constrained.decode.decode_batch``, the one serving
uses too, so evaluation and serving rank items the same way.

Protocol (the APAO / TIGER setting):

* every example is a user's history (``int32[n, H]`` item rows, left-padded
  with -1) and one held-out target item;
* the model generates ``num_beams`` SIDs by beam search constrained to the
  catalogue's SIDs; the beam is ranked by sequence log-probability;
* ``recall@k`` = fraction of examples whose target appears in the top ``k``;
  ``ndcg@k`` = mean of ``1 / log2(rank + 1)`` over examples whose target has
  1-based ``rank <= k`` (0 otherwise); one relevant item, so IDCG = 1
  (``training/ranking.py``).

**Colliding SIDs.** A few items can share a SID (Office has 5 shared SIDs
covering 10 items, Beauty 11 covering 23). Evaluation is at SID level: the
index (``constrained.decode.build_eval_index``) holds every *distinct* SID
once, so each SID occupies at most one beam slot, and a hit means the
generated SID equals the target item's SID. This is what the published
reference code does (it compares generated token strings with the target's),
so our numbers are comparable with the paper's. It credits a hit for a SID
shared with the target even though a server could show only one of its items;
on Office/Beauty that concerns < 0.2% of the items. :func:`popularity_baseline`
ranks SIDs the same way.

Every batch has the same shape (the last one is padded with empty histories
and its rows dropped from the metrics), so one compile serves a whole split,
and the compiled decode is cached across calls with the same model structure,
beam width and batch size (the trainer's periodic evaluations compile once).
Each batch is split over all local devices by default (``devices``; weights and
index copied to each, ``constrained.sharding``); the ranks equal one device's
(docs/serving.md, "All local devices"). ``matmul_precision="highest"`` decodes
with full float32 matmuls, as ``Recommender(matmul_precision=)`` does
(docs/serving.md, "Reproducibility on GPUs").
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from constrained.decode import (
    MatmulPrecision,
    build_eval_index,
    check_matmul_precision,
    decode_batch,
    history_tokens,
    matmul_precision_scope,
)
from constrained.index import TrieIndex
from constrained.sharding import local_layout
from genrec.datasets import InteractionData
from genrec.progress import track
from genrec.run_files import (
    DATA_FINGERPRINT_FILE,
    catalogue_rows,
    check_same_data,
    load_model_for_inference,
    load_workdir_data,
    read_data_fingerprint,
    read_run_info,
)
from genrec.split import SplitArrays, leave_one_out_split
from training.diagnostics import PrefixSurvival, UnconstrainedValidity
from training.ranking import hit_ranks, ranking_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "EvalResult",
    "WorkdirEvaluation",
    "evaluate_split",
    "evaluate_workdir",
    "popularity_baseline",
    "validation_ce",
]


# ---------------------------------------------------------------------------
# Cut-offs and the baseline
# ---------------------------------------------------------------------------


def _check_ks(ks: Sequence[int], num_beams: int | None) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks={ks} must be non-empty positive cut-offs")
    if num_beams is not None and max(ks) > num_beams:
        raise ValueError(
            f"cut-off k={max(ks)} exceeds num_beams={num_beams}: a beam of {num_beams} ranks only "
            f"{num_beams} SIDs; raise num_beams to at least {max(ks)}"
        )
    return ks


def popularity_baseline(
    sid_codes: np.ndarray,
    train_targets: np.ndarray,
    eval_targets: np.ndarray,
    *,
    ks: Sequence[int] = (5, 10, 20),
) -> dict[str, float]:
    """Metrics of recommending the same most popular SIDs to everyone.

    Popularity = how often a SID is a *training target*; ties go to the
    lexicographically smaller SID. Scored at SID level, like :func:`evaluate_split`.

    Args:
      sid_codes: ``int[num_items, L]``.
      train_targets: ``int[n_train]`` item rows (``split.train.targets``).
      eval_targets: ``int[n_eval]`` item rows to score (``split.test.targets``).

    Returns:
      The keys of ``training.ranking.ranking_metrics``.
    """
    ks = _check_ks(ks, None)
    _, sid_row_of_item = np.unique(np.asarray(sid_codes), axis=0, return_inverse=True)
    sid_row_of_item = sid_row_of_item.reshape(-1)
    num_sids = int(sid_row_of_item.max()) + 1
    counts = np.bincount(sid_row_of_item[np.asarray(train_targets)], minlength=num_sids)
    ranking = np.argsort(-counts, kind="stable")[: max(ks)]
    rank_of_sid = np.zeros(num_sids, np.int64)
    rank_of_sid[ranking] = np.arange(1, ranking.size + 1)
    return ranking_metrics(rank_of_sid[sid_row_of_item[np.asarray(eval_targets)]], ks)


# ---------------------------------------------------------------------------
# Evaluation loop
# ---------------------------------------------------------------------------


def _num_examples(split_arrays: SplitArrays, max_examples: int | None) -> int:
    """Examples to evaluate: all, or the first ``max_examples``; raises if none."""
    num_examples = split_arrays.num_examples
    if max_examples is not None:
        num_examples = min(num_examples, int(max_examples))
    if num_examples == 0:
        raise ValueError("the split has no examples to evaluate")
    return num_examples


def _padded_batches(split_arrays: SplitArrays, num_examples: int, batch_size: int):
    """Yields ``(start, stop, histories int32[batch_size, H], targets int32[batch_size])``
    over the first ``num_examples`` examples; the last batch is padded to the
    compiled shape with empty histories (-1) and target row 0, to be ignored."""
    for start in range(0, num_examples, batch_size):
        stop = min(start + batch_size, num_examples)
        rows = np.asarray(split_arrays.histories[start:stop])
        targets = np.asarray(split_arrays.targets[start:stop])
        pad = batch_size - (stop - start)
        if pad:
            rows = np.concatenate([rows, np.full((pad, rows.shape[1]), -1, rows.dtype)])
            targets = np.concatenate([targets, np.zeros(pad, targets.dtype)])
        yield start, stop, rows, targets


@dataclasses.dataclass(frozen=True, eq=False)
class EvalResult:
    """What :func:`evaluate_split` measured.

    Attributes:
      metrics: ``{"recall@5": ..., "ndcg@5": ..., ..., "num_examples": n}``
        (floats), plus ``"unconstrained_valid_fraction"`` and
        ``"prefix_in_beam@t"`` (``t = 1..L``) with the diagnoses
        (``training/diagnostics.py``).
      ranks: ``int32[n]`` each example's 1-based rank of the target SID in the
        beam (0 = not in it), for paired comparisons of two models on the same
        users (``research/compare_runs.py``).
      prefix_ranks: with ``diagnose_prefix_survival``, ``int32[L, n]``: row
        ``t-1`` is each example's rank of its target's length-``t`` prefix
        among the beams after level ``t`` (0 = pruned), the last row is
        ``ranks``; for prefix survival by user group
        (``research/popularity_buckets.py``). None otherwise.
    """

    metrics: dict[str, float]
    ranks: np.ndarray
    prefix_ranks: np.ndarray | None = None


def evaluate_split(
    model: nnx.Module,
    index: TrieIndex,
    data: InteractionData,
    split_arrays: SplitArrays,
    *,
    num_beams: int = 20,
    batch_size: int = 256,
    ks: Sequence[int] = (5, 10, 20),
    max_examples: int | None = None,
    normalization: str = "vocab",
    diagnose_unconstrained: bool = False,
    diagnose_prefix_survival: bool = False,
    devices: int | None = None,
    matmul_precision: MatmulPrecision = "default",
    miss_items: np.ndarray | None = None,
) -> EvalResult:
    """Recall@k / NDCG@k of ``model`` on one leave-one-out split.

    Args:
      model: a genrec recommender (``encode`` / ``init_beam_cache`` / ``decode_step``).
      index: from ``build_eval_index(data.sid_codes, data.vocab)``; any index
        over the same SIDs and token layout works, since hits compare SID
        codes, not item ids.
      data: gives the items' SID codes and token layout.
      split_arrays: ``histories int32[n, H]`` (left-padded with -1) and
        ``targets int32[n]``, item rows of ``data``.
      num_beams: beam width; every ``k`` in ``ks`` must be ``<= num_beams``.
      batch_size: examples per decode call (the last batch is padded); rounded
        up to a multiple of ``devices``.
      ks: cut-offs.
      max_examples: evaluate only the first this many examples.
      normalization: beam scores' softmax support, ``"vocab"`` or ``"trie"``
        (``training.config.score_normalization`` picks it for a run).
      diagnose_unconstrained: also run a free beam search and report
        ``unconstrained_valid_fraction`` (``training.diagnostics.UnconstrainedValidity``).
      diagnose_prefix_survival: also report ``prefix_in_beam@t`` and return
        ``prefix_ranks`` (``training.diagnostics.PrefixSurvival``; one extra
        ``t``-level search per ``t < L``).
      devices: local devices each batch is split over; None = all
        (``constrained.sharding.local_layout``: 1 with several processes), 1 = one device.
      matmul_precision: float32 matmul precision of every decode
        (``constrained.decode.matmul_precision_scope``): ``"default"`` (JAX's:
        TF32 on GPUs, bfloat16 on TPUs), ``"high"`` or ``"highest"`` (full float32).
      miss_items: optional ``bool[num_items]``: targets that count as misses whatever the beam holds
        (items outside the model's catalogue: a beam SID equal to theirs is a catalogue item).

    Returns:
      :class:`EvalResult`. A progress bar over the batches shows on a terminal.
    """
    ks = _check_ks(ks, num_beams)
    check_matmul_precision(matmul_precision)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if index.num_levels != data.num_levels:
        raise ValueError(
            f"the index has {index.num_levels} SID levels but the data has {data.num_levels}; "
            "build it with build_eval_index(data.sid_codes, data.vocab) (no disambiguation level)"
        )
    if tuple(index.token_offsets) != tuple(int(o) for o in data.vocab.level_offsets):
        raise ValueError(
            f"the index's token offsets {tuple(index.token_offsets)} differ from the vocabulary's "
            f"{tuple(data.vocab.level_offsets)}; build it with build_eval_index(data.sid_codes, data.vocab)"
        )
    num_examples = _num_examples(split_arrays, max_examples)
    targets = np.asarray(split_arrays.targets[:num_examples])
    layout = local_layout(devices)
    batch_size = layout.round_batch(min(batch_size, num_examples))

    item_tokens = data.vocab.codes_to_tokens(data.sid_codes)
    target_codes = np.asarray(data.sid_codes)[targets]
    graphdef, state = nnx.split(model)
    state = layout.replicate(state)
    device_index = layout.replicate(index.to_device())
    validity = UnconstrainedValidity(data, num_beams) if diagnose_unconstrained else None
    survival = PrefixSurvival(data, num_examples, num_beams, normalization) if diagnose_prefix_survival else None

    ranks = np.zeros(num_examples, np.int32)
    pending = None  # (start, stop, output): pulled after the next batch is dispatched

    def collect(start, stop, output):
        beam_codes = np.asarray(output.sid_codes)[: stop - start]
        beam_valid = np.asarray(output.valid)[: stop - start]
        ranks[start:stop] = hit_ranks(beam_codes, beam_valid, target_codes[start:stop])
        if miss_items is not None:
            ranks[start:stop][miss_items[targets[start:stop]]] = 0

    batches = _padded_batches(split_arrays, num_examples, batch_size)
    with matmul_precision_scope(matmul_precision):  # the jit cache keys on it: one compile per precision
        for start, stop, rows, _ in track(batches, total=-(-num_examples // batch_size), desc="eval", unit="batch"):
            tokens, mask = history_tokens(rows, item_tokens)
            tokens, mask = layout.shard_rows(tokens), layout.shard_rows(mask)
            output = decode_batch(graphdef, state, device_index, tokens, mask, num_beams=num_beams,
                                  normalization=normalization)
            if validity is not None:
                validity.add_batch(graphdef, state, tokens, mask, stop - start)
            if survival is not None:
                survival.add_batch(graphdef, state, tokens, mask, start, stop, target_codes[start:stop])
            if pending is not None:
                collect(*pending)
            pending = (start, stop, output)
    collect(*pending)

    metrics = ranking_metrics(ranks, ks)
    if validity is not None:
        metrics.update(validity.metrics())
    if survival is not None:
        metrics.update(survival.metrics(ranks))
    return EvalResult(metrics=metrics, ranks=ranks,
                      prefix_ranks=None if survival is None else survival.prefix_ranks(ranks))


# ---------------------------------------------------------------------------
# A saved model: genrec eval
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class WorkdirEvaluation:
    """What :func:`evaluate_workdir` measured.

    Attributes:
      split: ``"test"`` or ``"valid"``.
      dataset: the evaluated dataset's name.
      which: the checkpoint (``"best"`` or ``"latest"``).
      num_beams: beam width used.
      ks: cut-offs.
      num_levels: SID levels (rows of ``result.prefix_ranks``).
      seconds: wall-clock time of the evaluation (without loading).
      result: the model's :class:`EvalResult`.
      popularity: :func:`popularity_baseline` on the same examples.
    """

    split: str
    dataset: str
    which: str
    num_beams: int
    ks: tuple[int, ...]
    num_levels: int
    seconds: float
    result: EvalResult
    popularity: dict[str, float]


def warn_targets_outside_catalogue(item_ids: np.ndarray, targets: np.ndarray, catalogue_item_ids: np.ndarray,
                                   split: str = "test") -> int:
    """Logs a WARNING when targets (``int[n]`` rows of ``item_ids``, another dataset's) are items the model's
    catalogue lacks: it cannot generate them, so they count as misses. Returns their number."""
    target_ids = np.asarray(item_ids).astype(str)[np.asarray(targets, dtype=np.int64)]
    outside = ~np.isin(target_ids, np.asarray(catalogue_item_ids).astype(str))
    if outside.any():
        examples = ", ".join(repr(str(item)) for item in dict.fromkeys(target_ids[outside].tolist()))
        logger.warning("%d of %d %s targets are items outside the model's catalogue (e.g. %s): the model cannot "
                       "generate them, so they count as misses", int(outside.sum()), len(target_ids), split,
                       examples[:200])
    return int(outside.sum())


def with_catalogue_sids(data: InteractionData, catalogue_item_ids: np.ndarray,
                        catalogue_codes: np.ndarray) -> tuple[InteractionData, np.ndarray]:
    """``data`` with each item's SID replaced by the model catalogue's for the same id (what serving looks
    up), and ``bool[num_items]``: the items outside the catalogue (their own SIDs kept for histories; as
    targets they are misses). Logs a WARNING with the number of re-coded items."""
    rows = catalogue_rows(data.item_ids, catalogue_item_ids)
    outside = rows < 0
    codes = np.array(data.sid_codes, copy=True)
    codes[~outside] = np.asarray(catalogue_codes)[rows[~outside]]
    recoded = (codes != np.asarray(data.sid_codes)).any(axis=1)
    if recoded.any():
        example = str(np.asarray(data.item_ids)[recoded][0])
        logger.warning("%d of %d items of %s have other SIDs than in the model's catalogue (e.g. %r): they are "
                       "scored with the catalogue's, which the model serves", int(recoded.sum()), len(codes),
                       data.name or "the dataset", example)
    return dataclasses.replace(data, sid_codes=codes.astype(np.asarray(data.sid_codes).dtype)), outside


def evaluate_workdir(
    workdir: str | Path,
    *,
    split: Literal["test", "valid"] = "test",
    data_dir: str | None = None,
    which: Literal["best", "latest"] = "best",
    num_beams: int | None = None,
    batch_size: int | None = None,
    max_examples: int | None = None,
    normalization: Literal["vocab", "trie"] | None = None,
    diagnose: bool = False,
    devices: int | None = None,
    matmul_precision: MatmulPrecision = "default",
) -> WorkdirEvaluation:
    """Leave-one-out evaluation of a training workdir's model, next to the popularity baseline.

    The index covers the checkpoint's own catalogue (the model can only
    generate those SIDs); the examples are ``data_dir``'s users, or those of
    the dataset the run trained on. ``None`` settings take the run's values
    (``normalization``: ``"trie"`` after MSL training).

    Args:
      diagnose: also run both diagnoses (``training/diagnostics.py``).
      devices: local devices each batch is split over (None = all; ``evaluate_split``).
      matmul_precision: float32 matmul precision of the decode (``evaluate_split``).

    Raises:
      FileNotFoundError: not a workdir, or no checkpoint of that kind.
      ValueError: ``num_beams``, ``batch_size`` or ``max_examples`` below 1 (one line naming the option).
    """
    check_matmul_precision(matmul_precision)  # before loading the checkpoint
    defaults = {"num_beams": "the run's beam width", "batch_size": "the run's batch size",
                "max_examples": "every example"}
    for name, value in (("num_beams", num_beams), ("batch_size", batch_size), ("max_examples", max_examples)):
        if value is not None and value < 1:  # 0 is no default: None is
            raise ValueError(f"--{name.replace('_', '-')} {value} ({name}={value}): must be at least 1; leave it "
                             f"out for {defaults[name]}")
    run = read_run_info(workdir)
    model, _, vocab, sid_codes, catalogue_item_ids = load_model_for_inference(workdir, which)
    data = load_workdir_data(workdir, data_dir, vocab)
    miss_items = None
    if data_dir is None:  # the run's own data: its test targets must not have been training targets
        check_same_data(read_data_fingerprint(workdir), data,
                        f"{Path(workdir) / DATA_FINGERPRINT_FILE}: this run trained on",
                        "its test targets may have been training targets: restore the data files, or name "
                        "the data to evaluate on with --data DIR (data_dir= in Python)",
                        now="its data files hold")
    else:  # scored as the model serves it: the catalogue's SIDs, looked up by item id
        data, miss_items = with_catalogue_sids(data, catalogue_item_ids, sid_codes)
    splits = leave_one_out_split(data.sequences, run.max_history)
    index, _ = build_eval_index(sid_codes, vocab)
    examples = splits.test if split == "test" else splits.valid
    if data_dir is not None:
        targets = examples.targets if max_examples is None else examples.targets[:max_examples]
        warn_targets_outside_catalogue(data.item_ids, targets, catalogue_item_ids, split)
    num_beams = run.num_beams if num_beams is None else num_beams
    start = time.perf_counter()
    result = evaluate_split(
        model, index, data, examples, num_beams=num_beams,
        batch_size=run.eval_batch_size if batch_size is None else batch_size,
        ks=run.ks, max_examples=max_examples, normalization=normalization or run.score_normalization,
        diagnose_unconstrained=diagnose, diagnose_prefix_survival=diagnose, devices=devices,
        matmul_precision=matmul_precision, miss_items=miss_items,
    )
    seconds = time.perf_counter() - start
    num_done = int(result.metrics["num_examples"])
    popularity = popularity_baseline(data.sid_codes, splits.train.targets, examples.targets[:num_done], ks=run.ks)
    return WorkdirEvaluation(split=split, dataset=data.name or "the training data", which=which,
                             num_beams=num_beams, ks=run.ks, num_levels=vocab.num_levels, seconds=seconds,
                             result=result, popularity=popularity)


# ---------------------------------------------------------------------------
# Teacher-forced validation loss
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _target_nll_sum(graphdef, state, history_tokens, history_mask, target_tokens, example_mask) -> jax.Array:
    """Sum over real rows of the mean token NLL of ``target_tokens: int32[B, L]``."""
    from training.losses import token_log_probs  # training.losses imports nothing from here

    model = nnx.merge(graphdef, state)
    logits = model(history_tokens, history_mask, target_tokens[:, None])[:, 0]  # [B, L, V]
    nll = -token_log_probs(logits, target_tokens).mean(axis=-1)
    return jnp.sum(jnp.where(example_mask, nll, 0.0))


def validation_ce(
    model: nnx.Module,
    data: InteractionData,
    split_arrays: SplitArrays,
    *,
    batch_size: int = 256,
    max_examples: int | None = None,
) -> float:
    """Mean token cross-entropy of the split's targets (teacher forced, no dropout).

    ``mean_n (1/L) sum_j -log p(y_nj | history_n, y_n<j)`` over the first
    ``max_examples`` examples (all by default), in float32; the last batch is
    padded and the padding excluded, so the value does not depend on
    ``batch_size``.
    """
    num_examples = _num_examples(split_arrays, max_examples)
    batch_size = min(batch_size, num_examples)
    item_tokens = data.vocab.codes_to_tokens(data.sid_codes)
    graphdef, state = nnx.split(model)
    batch_sums = []  # device scalars: one host sync at the end, not one per batch
    for start, stop, rows, targets in _padded_batches(split_arrays, num_examples, batch_size):
        tokens, mask = history_tokens(rows, item_tokens)
        real = np.arange(batch_size) < stop - start
        batch_sums.append(_target_nll_sum(graphdef, state, tokens, mask, item_tokens[targets], real))
    return float(sum(float(x) for x in jax.device_get(batch_sums))) / num_examples
