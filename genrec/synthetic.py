"""Seeded synthetic SID datasets with structure a sequence model can learn.

Where it sits: stands in for ``load_sid_dataset`` in tests, smoke runs and
benchmarks: :func:`make_synthetic_dataset` -> :class:`~genrec.datasets.InteractionData`
-> split -> batches. :func:`write_sid_dataset` (re-exported here) puts it on disk
in the standard format, so the ``--data DIR`` path can be tested end to end:

    python -m genrec.synthetic --out /tmp/synth --name synthetic

How the data is generated:

* Items fall into ``num_clusters`` clusters of near-equal size. An item's level-0
  code is its cluster; its codes at levels ``1..L-1`` are a distinct tuple drawn
  inside the cluster, so every SID is unique by construction (no duplicates).
* Item popularity is Zipf: item weight ``rank ** -zipf_exponent`` for a random
  ranking of all items.
* A user starts in a random cluster (from a random initial distribution) and
  moves between clusters with a sparse Markov chain: each cluster has
  ``successors_per_cluster`` likely successors; with probability
  ``jump_probability`` the user jumps to a uniformly random cluster instead.
  At each step the user picks an item of the current cluster by popularity.
* Sequence lengths are uniform in ``[min_length, max_length]``.

The next item's cluster (= first SID token) is therefore predictable from the
last item's cluster, and the later tokens from item popularity within a cluster.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import numpy as np

from genrec.console import UserError, add_verbose_flag, int_at_least, run_command, seed_integer, setup_logging
from genrec.datasets import InteractionData, write_sid_dataset
from genrec.vocab import LEVEL_LETTERS, MAX_CODEBOOK_SIZE, SIDVocabulary

__all__ = ["make_synthetic_dataset", "write_sid_dataset", "main"]

logger = logging.getLogger(__name__)


def _cluster_transition_matrix(
    rng: np.random.Generator, num_clusters: int, successors_per_cluster: int, jump_probability: float
) -> np.ndarray:
    """``float64[C, C]`` row-stochastic: sparse successors mixed with uniform jumps."""
    sparse = np.zeros((num_clusters, num_clusters))
    for cluster in range(num_clusters):
        successors = rng.choice(num_clusters, size=successors_per_cluster, replace=False)
        sparse[cluster, successors] = rng.dirichlet(np.ones(successors_per_cluster))
    return (1.0 - jump_probability) * sparse + jump_probability / num_clusters


def _sample_rows(rng: np.random.Generator, cdf_rows: np.ndarray) -> np.ndarray:
    """One index per row of ``cdf_rows: [n, m]`` (non-decreasing, last real entry 1.0)."""
    uniform = rng.random(cdf_rows.shape[0])
    return np.argmax(uniform[:, None] < cdf_rows, axis=1)


def _distinct_suffixes(rng: np.random.Generator, size: int, space: int, codebook_size: int, length: int
                       ) -> np.ndarray:
    """``int64[size, length]``: distinct code tuples of ``length`` codes in ``[0, codebook_size)`` (``space``
    of them), in lexicographic order (items with a shared level-1 code next to each other; only cosmetic)."""
    if length == 0:
        return np.zeros((size, 0), np.int64)
    if space <= np.iinfo(np.int64).max:
        # Sorted distinct mixed-radix numbers -> distinct code tuples.
        suffix_ids = np.sort(rng.choice(space, size=size, replace=False))
        return np.stack([(suffix_ids // codebook_size**p) % codebook_size for p in range(length - 1, -1, -1)], axis=1)
    # A space past int64 (16 codes, 17 levels on): random tuples, a repeated one drawn again (at most
    # size**2 / space of them, about none). np.unique sorts them.
    tuples = np.zeros((0, length), np.int64)
    while len(tuples) < size:
        tuples = np.unique(np.concatenate([tuples, rng.integers(codebook_size, size=(size - len(tuples), length))]),
                           axis=0)
    return tuples


def make_synthetic_dataset(
    num_items: int = 2000,
    num_users: int = 3000,
    num_levels: int = 3,
    codebook_size: int = 16,
    seed: int = 0,
    *,
    num_clusters: int | None = None,
    successors_per_cluster: int = 3,
    jump_probability: float = 0.1,
    zipf_exponent: float = 0.8,
    min_length: int = 5,
    max_length: int = 30,
    name: str = "synthetic",
) -> InteractionData:
    """Generates a synthetic dataset (process described in the module docstring).

    Args:
      num_items: number of items; at least ``num_clusters``, at most
        ``num_clusters * codebook_size ** (num_levels - 1)``.
      num_users: number of user sequences.
      num_levels: SID length.
      codebook_size: codes per level (the vocabulary uses exactly this size).
      seed: everything is a deterministic function of the arguments.
      num_clusters: clusters = distinct level-0 codes; defaults to ``codebook_size``.
      successors_per_cluster: likely next clusters of each cluster.
      jump_probability: chance of a uniformly random next cluster instead.
      zipf_exponent: item popularity exponent.
      min_length, max_length: user sequence length range (inclusive).
      name: dataset name.

    Returns:
      ``InteractionData`` with item ids ``"0".."num_items-1"`` and user ids
      ``"0".."num_users-1"``.
    """
    num_clusters = codebook_size if num_clusters is None else num_clusters
    if not 1 <= num_clusters <= codebook_size:
        raise ValueError(f"num_clusters must be in [1, codebook_size={codebook_size}], got {num_clusters}")
    if not 1 <= num_levels <= len(LEVEL_LETTERS):
        raise ValueError(f"num_levels must be in [1, {len(LEVEL_LETTERS)}] (SID tokens <a_..> to <z_..>), "
                         f"got {num_levels}")
    if codebook_size > MAX_CODEBOOK_SIZE:
        raise ValueError(f"codebook_size must be at most {MAX_CODEBOOK_SIZE}, got {codebook_size}")
    items_per_cluster_max = codebook_size ** (num_levels - 1)
    if num_items < num_clusters:
        raise ValueError(f"num_items={num_items} is fewer than the {num_clusters} clusters, each of which needs an "
                         "item; raise num_items or lower num_clusters (default: codebook_size)")
    if num_items > num_clusters * items_per_cluster_max:
        raise ValueError(
            f"num_items={num_items} does not fit {num_clusters} clusters of at most "
            f"{items_per_cluster_max} unique SIDs each; raise codebook_size or num_levels"
        )
    if not 3 <= min_length <= max_length:
        raise ValueError(f"need 3 <= min_length <= max_length, got {min_length}, {max_length}")
    if not 1 <= successors_per_cluster <= num_clusters:
        raise ValueError(f"successors_per_cluster must be in [1, {num_clusters}]")
    if not 0.0 <= jump_probability <= 1.0:
        raise ValueError(f"jump_probability must be in [0, 1], got {jump_probability}")
    rng = np.random.default_rng(seed)

    # --- Items: near-equal cluster sizes, unique SID suffixes inside each cluster.
    cluster_sizes = np.full(num_clusters, num_items // num_clusters)
    cluster_sizes[rng.permutation(num_clusters)[: num_items % num_clusters]] += 1
    suffix_codes = []
    for size in cluster_sizes:
        suffix_codes.append(_distinct_suffixes(rng, int(size), items_per_cluster_max, codebook_size, num_levels - 1))
    cluster_of_slot = np.repeat(np.arange(num_clusters), cluster_sizes)
    slot_codes = np.concatenate([cluster_of_slot[:, None], np.concatenate(suffix_codes)], axis=1)
    # Shuffle rows so that an item's row number says nothing about its cluster.
    slot_of_row = rng.permutation(num_items)
    sid_codes = slot_codes[slot_of_row].astype(np.int32)
    cluster_of_row = sid_codes[:, 0]

    popularity = (rng.permutation(num_items) + 1.0) ** -zipf_exponent

    # Per cluster, its item rows and the CDF of picking each by popularity,
    # padded to [num_clusters, max_size]; padding has CDF 2 so it is never picked.
    max_size = int(cluster_sizes.max())
    cluster_items = np.zeros((num_clusters, max_size), dtype=np.int64)
    cluster_item_cdf = np.full((num_clusters, max_size), 2.0)
    rows_by_cluster = np.argsort(cluster_of_row, kind="stable")
    starts = np.concatenate([[0], np.cumsum(cluster_sizes)[:-1]])
    for cluster, (start, size) in enumerate(zip(starts, cluster_sizes)):
        rows = rows_by_cluster[start : start + size]
        cumulative = np.cumsum(popularity[rows])
        cluster_items[cluster, :size] = rows
        cluster_item_cdf[cluster, :size] = cumulative / cumulative[-1]

    # --- Users: all sequences simulated in parallel, one step at a time.
    transition_cdf = np.cumsum(
        _cluster_transition_matrix(rng, num_clusters, successors_per_cluster, jump_probability), axis=1
    )
    transition_cdf[:, -1] = 1.0
    initial_cdf = np.cumsum(rng.dirichlet(np.ones(num_clusters)))
    initial_cdf[-1] = 1.0
    lengths = rng.integers(min_length, max_length + 1, size=num_users)

    clusters = _sample_rows(rng, np.broadcast_to(initial_cdf, (num_users, num_clusters)))
    steps = np.empty((num_users, max_length), dtype=np.int32)
    for step in range(max_length):
        if step > 0:
            clusters = _sample_rows(rng, transition_cdf[clusters])
        steps[:, step] = cluster_items[clusters, _sample_rows(rng, cluster_item_cdf[clusters])]

    vocab = SIDVocabulary((codebook_size,) * num_levels)
    return InteractionData(
        item_ids=np.array([str(row) for row in range(num_items)]),
        sid_codes=sid_codes,
        vocab=vocab,
        user_ids=[str(user) for user in range(num_users)],
        sequences=[steps[user, :length].copy() for user, length in enumerate(lengths)],
        name=name,
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m genrec.synthetic") -> int:
    """CLI: write a synthetic dataset in the standard format."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write a seeded synthetic SID dataset (NAME.inter.json, "
        "NAME.index.rq-kmeans.json, NAME.vocab.json) to a directory.",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--name", default="synthetic", help="dataset name (file stem)")
    parser.add_argument("--num-items", type=int_at_least(1), default=2000,
                        help="items, one cluster per level-0 code: from --codebook-size to "
                             "codebook-size ** num-levels (default 2000)")
    parser.add_argument("--num-users", type=int_at_least(1), default=3000)
    parser.add_argument("--num-levels", type=int_at_least(1), default=3)
    parser.add_argument("--codebook-size", type=int_at_least(1), default=16)
    parser.add_argument("--seed", type=seed_integer, default=0, help="random seed, 0 to 2**32 - 1 (default 0)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def run() -> int:
        size, levels = args.codebook_size, args.num_levels
        if levels > len(LEVEL_LETTERS):
            raise UserError(f"--num-levels {levels} is more than the {len(LEVEL_LETTERS)} levels a SID can have "
                            f"(tokens <a_..> to <z_..>): give --num-levels {len(LEVEL_LETTERS)} or fewer")
        if size > MAX_CODEBOOK_SIZE:
            raise UserError(f"--codebook-size {size} is more than the {MAX_CODEBOOK_SIZE} codes a SID level can "
                            f"have: give --codebook-size {MAX_CODEBOOK_SIZE} or fewer")
        if args.num_items < size:
            raise UserError(f"--num-items {args.num_items} is fewer than the {size} clusters (one per level-0 code, "
                            f"--codebook-size {size}): give --num-items {size} or more, or a smaller --codebook-size")
        if args.num_items > size**levels:
            raise UserError(f"--num-items {args.num_items} is more than the {size**levels} distinct SIDs of "
                            f"--num-levels {levels} and --codebook-size {size}: give --num-items {size**levels} or "
                            "fewer, or a larger --codebook-size or --num-levels")
        data = make_synthetic_dataset(
            num_items=args.num_items, num_users=args.num_users, num_levels=levels, codebook_size=size,
            seed=args.seed, name=args.name, successors_per_cluster=min(3, size),  # 3: the default, if it exists
        )
        paths = write_sid_dataset(data, args.out, args.name)
        print(f"wrote {data.num_users} users, {data.num_items} items, "
              f"{data.num_interactions} interactions to {', '.join(str(p) for p in paths.values())}")
        return 0

    return run_command(prog, run, outputs=[args.out], verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
