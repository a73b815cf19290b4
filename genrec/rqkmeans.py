"""Semantic IDs from item embeddings by residual k-means (RQ-KMeans).

Where it sits: item embeddings (e.g. from a text encoder) -> :func:`build_semantic_ids`
-> ``NAME.index.rq-kmeans.json`` -> ``genrec.datasets.load_sid_dataset``.

Level 0 clusters the embeddings into ``K`` codes; each later level clusters the
residuals (embedding minus the sum of the centroids chosen so far), so a SID is a
coarse-to-fine address of the item. Options:

* ``balanced``: assign points with Sinkhorn-balanced transport (uniform code
  marginals), then hard-assign each point to ``argmin_j cost_ij - price_j`` with
  the dual prices; codes end up approximately equally used (not a hard cap).
* ``disambiguate``: append one level whose code is an item's rank among the
  items that share its clustered SID (0 for the first / only one), so every item
  gets a unique SID. The extra level's size is the largest collision group.

CLI (``--help`` for all options):

    python -m genrec.rqkmeans --embeddings X.npy --item-ids ids.json \
        --levels 4 --codes 256 --out DIR/NAME.index.rq-kmeans.json
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from genrec.console import UserError, add_verbose_flag, int_at_least, run_command, seed_integer, setup_logging
from genrec.datasets import INDEX_SUFFIX, VOCAB_SUFFIX, find_duplicate_sids
from genrec.vocab import LEVEL_LETTERS, MAX_CODEBOOK_SIZE, SIDVocabulary, format_sid_tokens, write_json_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RQKMeansConfig:
    """How to build SIDs.

    Attributes:
      num_levels: clustered levels ``L`` (the disambiguation level comes on top).
      codebook_size: codes per clustered level ``K``.
      num_iters: maximum Lloyd iterations per level (stops early when stable).
      balanced: use Sinkhorn-balanced assignment (see module docstring).
      sinkhorn_iters: Sinkhorn updates per Lloyd iteration (warm-started).
      sinkhorn_temperature: entropic temperature, relative to the mean cost.
      disambiguate: append the collision-rank level.
      normalize: L2-normalize embeddings first.
      seed: seed of the k-means++ initialisation.
    """

    num_levels: int = 3
    codebook_size: int = 256
    num_iters: int = 50
    balanced: bool = False
    sinkhorn_iters: int = 10
    sinkhorn_temperature: float = 0.05
    disambiguate: bool = True
    normalize: bool = False
    seed: int = 0


@dataclass(frozen=True)
class CollisionReport:
    """How many items share a SID.

    Attributes:
      num_items: items.
      num_unique_sids: distinct SIDs.
      num_colliding_items: items whose SID is shared with another item.
      collision_rate: ``num_colliding_items / num_items``.
      max_group_size: most items sharing one SID (1 when all are unique).
    """

    num_items: int
    num_unique_sids: int
    num_colliding_items: int
    collision_rate: float
    max_group_size: int


@dataclass(frozen=True)
class SemanticIDReport:
    """What :func:`build_semantic_ids` produced.

    Attributes:
      codebook_size: ``K``.
      codes_used_per_level: distinct codes used at each clustered level.
      largest_code_share_per_level: fraction of items in the most used code of
        each clustered level (``1/K`` is perfectly balanced).
      residual_mse_per_level: mean squared residual norm after each level.
      collisions: collisions of the clustered levels (before disambiguation).
      disambiguation_size: size of the appended level, 0 when none was appended.
    """

    codebook_size: int
    codes_used_per_level: tuple[int, ...]
    largest_code_share_per_level: tuple[float, ...]
    residual_mse_per_level: tuple[float, ...]
    collisions: CollisionReport
    disambiguation_size: int

    def to_json(self) -> dict:
        return asdict(self)


def squared_distances(
    points: np.ndarray, centroids: np.ndarray, point_sq_norms: np.ndarray | None = None
) -> np.ndarray:
    """``[N, D], [K, D] -> [N, K]`` squared Euclidean distances (clipped at 0).

    ``point_sq_norms: [N]`` may be passed to skip recomputing ``|points|^2``.
    """
    if point_sq_norms is None:
        point_sq_norms = np.einsum("nd,nd->n", points, points)
    distances = point_sq_norms[:, None] - 2.0 * (points @ centroids.T)
    distances += np.einsum("kd,kd->k", centroids, centroids)[None, :]
    return np.maximum(distances, 0.0, out=distances)


def kmeans_plus_plus_init(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centroid drawn with probability ~ squared distance.

    Args:
      points: ``[N, D]`` with ``N >= k``.

    Returns:
      ``[k, D]`` centroids (copies of points).
    """
    num_points = points.shape[0]
    chosen = [int(rng.integers(num_points))]
    closest = np.sum((points - points[chosen[0]]) ** 2, axis=1)  # [N]
    for _ in range(1, k):
        total = float(closest.sum())
        # All points coincide with a centroid: any point is as good as another.
        index = int(rng.choice(num_points, p=closest / total)) if total > 0 else int(rng.integers(num_points))
        chosen.append(index)
        np.minimum(closest, np.sum((points - points[index]) ** 2, axis=1), out=closest)
    return points[chosen].copy()


def balanced_assignment(
    costs: np.ndarray, prices: np.ndarray | None = None, *, num_iters: int = 10, temperature: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Approximately balanced hard assignment via Sinkhorn.

    Solves entropic optimal transport from ``N`` points (mass ``1/N`` each) to ``K``
    codes (mass ``1/K`` each), then assigns each point to
    ``argmin_j costs[i, j] - prices[j]``, where ``prices`` are the code-side duals:
    a crowded code gets a low price, so points on its border move elsewhere.

    Args:
      costs: ``[N, K]`` assignment costs (e.g. squared distances).
      prices: ``[K]`` dual prices to warm-start from (in units of ``costs``), or None.
      num_iters: Sinkhorn updates.
      temperature: entropic regularization relative to ``mean(costs)``.

    Returns:
      ``(assignment int64[N], prices float64[K])``.
    """
    num_points, num_codes = costs.shape
    epsilon = temperature * max(float(costs.mean()), 1e-12)
    # Scaling-form Sinkhorn: one exp per call, then only mat-vecs. Shifting each
    # row by its minimum keeps every row's kernel max at 1 (absorbed by the row
    # scaling), so nothing underflows to an all-zero row.
    shifted = (costs - costs.min(axis=1, keepdims=True)) / epsilon  # [N, K] >= 0
    # float32 halves the memory traffic of the mat-vecs, which dominate.
    kernel = np.exp(-shifted).astype(np.float32)  # [N, K]
    # log of the code scalings, kept in [-log_cap, 0] so float32 scalings stay finite.
    log_cap = 80.0
    log_code_scale = np.zeros(num_codes) if prices is None else prices / epsilon
    log_code_scale = np.maximum(log_code_scale - log_code_scale.max(), -log_cap)
    for _ in range(num_iters):
        code_scale = np.exp(log_code_scale).astype(np.float32)
        point_scale = np.float32(1.0 / num_points) / np.maximum(kernel @ code_scale, np.float32(1e-30))  # [N]
        column_mass = np.maximum(kernel.T @ point_scale, 1e-30).astype(np.float64)  # [K]
        log_code_scale = np.log(1.0 / num_codes) - np.log(column_mass)
        log_code_scale = np.maximum(log_code_scale - log_code_scale.max(), -log_cap)
    prices = log_code_scale * epsilon
    return np.argmin(shifted - log_code_scale[None, :], axis=1), prices


def kmeans(
    points: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    num_iters: int = 50,
    balanced: bool = False,
    sinkhorn_iters: int = 20,
    sinkhorn_temperature: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ init; empty codes are re-seeded.

    Args:
      points: ``[N, D]``; ``k`` is lowered to ``N`` when ``N < k``.

    Returns:
      ``(centroids [k, D], assignment int64[N])``.
    """
    num_points = points.shape[0]
    k = min(k, num_points)
    centroids = kmeans_plus_plus_init(points, k, rng)
    point_sq_norms = np.einsum("nd,nd->n", points, points)
    assignment = np.full(num_points, -1)
    prices = None
    for _ in range(num_iters):
        distances = squared_distances(points, centroids, point_sq_norms)  # [N, k]
        if balanced:
            new_assignment, prices = balanced_assignment(
                distances, prices, num_iters=sinkhorn_iters, temperature=sinkhorn_temperature
            )
        else:
            new_assignment = np.argmin(distances, axis=1)
        counts = np.bincount(new_assignment, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            # Re-seed each empty code at one of the worst-served points.
            own_distance = distances[np.arange(num_points), new_assignment]
            worst = np.argsort(-own_distance)[: empty.size]
            new_assignment[worst] = empty
            counts = np.bincount(new_assignment, minlength=k)
        one_hot = scipy.sparse.csr_matrix(
            (np.ones(num_points, points.dtype), (new_assignment, np.arange(num_points))), shape=(k, num_points)
        )
        sums = one_hot @ points  # [k, D]
        # A code can still be empty if a re-seeded point was alone in its code; keep its centroid.
        centroids = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centroids)
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
    return centroids, assignment


def residual_kmeans(
    embeddings: np.ndarray, config: RQKMeansConfig
) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    """Residual k-means codes for ``embeddings: [N, D]``.

    Returns:
      ``(codes int32[N, L], codebooks [L] of [K_l, D], residual_mse_per_level [L])``.
    """
    # float32: k-means needs no more, and distances are the cost of the whole build.
    residuals = np.asarray(embeddings, dtype=np.float32).copy()
    codes, codebooks, residual_mse = [], [], []
    for level in range(config.num_levels):
        rng = np.random.default_rng([config.seed, level])
        centroids, assignment = kmeans(
            residuals, config.codebook_size, rng, num_iters=config.num_iters, balanced=config.balanced,
            sinkhorn_iters=config.sinkhorn_iters, sinkhorn_temperature=config.sinkhorn_temperature,
        )
        residuals -= centroids[assignment]
        codes.append(assignment)
        codebooks.append(centroids)
        residual_mse.append(float(np.mean(np.sum(residuals.astype(np.float64) ** 2, axis=1))))
    return np.stack(codes, axis=1).astype(np.int32), codebooks, residual_mse


def collision_report(codes: np.ndarray) -> CollisionReport:
    """Counts shared SIDs in ``codes: int[N, L]``."""
    groups = find_duplicate_sids(codes)
    num_items = int(codes.shape[0])
    num_colliding = int(sum(len(g) for g in groups))
    return CollisionReport(
        num_items=num_items,
        num_unique_sids=num_items - num_colliding + len(groups),
        num_colliding_items=num_colliding,
        collision_rate=num_colliding / num_items if num_items else 0.0,
        max_group_size=max((len(g) for g in groups), default=1),
    )


def append_disambiguation_level(codes: np.ndarray) -> np.ndarray:
    """``int[N, L] -> int32[N, L+1]``: last code = rank of the item (by row) among
    the items sharing its SID, so all resulting SIDs are unique."""
    extra = np.zeros(codes.shape[0], dtype=np.int32)
    for group in find_duplicate_sids(codes):
        extra[group] = np.arange(len(group))
    return np.concatenate([codes.astype(np.int32), extra[:, None]], axis=1)


def build_semantic_ids(
    embeddings: np.ndarray, config: RQKMeansConfig = RQKMeansConfig()
) -> tuple[np.ndarray, SemanticIDReport]:
    """Builds SIDs for ``embeddings: float[N, D]``.

    Returns:
      ``(codes int32[N, L] or [N, L+1] with disambiguation, report)``.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"embeddings must be [num_items > 0, dim], got shape {embeddings.shape}")
    if not np.isfinite(embeddings).all():
        bad = int(np.flatnonzero(~np.isfinite(embeddings).all(axis=1))[0])
        raise ValueError(f"embeddings row {bad} has NaN or inf values")
    if config.num_levels + int(config.disambiguate) > len(LEVEL_LETTERS):
        raise ValueError(f"at most {len(LEVEL_LETTERS)} SID levels, got {config.num_levels} (+1)")
    if config.normalize:
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        embeddings = embeddings / np.maximum(norms, 1e-12)

    codes, _, residual_mse = residual_kmeans(embeddings, config)
    num_items = codes.shape[0]
    usage = [np.bincount(codes[:, level]) for level in range(codes.shape[1])]
    collisions = collision_report(codes)
    disambiguation_size = 0
    if config.disambiguate:
        codes = append_disambiguation_level(codes)
        disambiguation_size = int(codes[:, -1].max()) + 1
    report = SemanticIDReport(
        codebook_size=config.codebook_size,
        codes_used_per_level=tuple(int((u > 0).sum()) for u in usage),
        largest_code_share_per_level=tuple(float(u.max() / num_items) for u in usage),
        residual_mse_per_level=tuple(residual_mse),
        collisions=collisions,
        disambiguation_size=disambiguation_size,
    )
    return codes, report


def write_index(
    path: str | Path, item_ids: Sequence[str], codes: np.ndarray, vocab: SIDVocabulary | None = None
) -> list[Path]:
    """Writes ``{item id: ["<a_..>", ...]}`` atomically, and ``NAME.vocab.json``
    beside it when ``vocab`` is given and ``path`` ends in ``.index.rq-kmeans.json``."""
    path = Path(path)
    if len(item_ids) != codes.shape[0]:
        raise ValueError(f"{len(item_ids)} item ids for {codes.shape[0]} SIDs")
    if len(set(item_ids)) != len(item_ids):
        repeated = next(item for item, count in Counter(map(str, item_ids)).items() if count > 1)
        raise ValueError(f"item ids must be unique: {repeated!r} is given more than once")
    index = {str(item_id): format_sid_tokens(sid) for item_id, sid in zip(item_ids, codes.tolist())}
    written = [write_json_atomic(path, index)]
    if vocab is not None and _vocab_path(path) is not None:
        written.append(vocab.save(_vocab_path(path)))
    return written


def build_and_write_index(
    path: str | Path, item_ids: Sequence[str], embeddings: np.ndarray, config: RQKMeansConfig
) -> tuple[list[Path], SemanticIDReport]:
    """SIDs of ``embeddings`` (rows in ``item_ids`` order) written to ``path`` with their vocabulary
    (:func:`write_index`): what ``genrec build-sids`` and ``genrec convert`` write. Returns
    ``(paths written, report)``."""
    codes, report = build_semantic_ids(embeddings, config)
    if report.disambiguation_size > MAX_CODEBOOK_SIZE:
        levels = f"{config.num_levels} clustered level" + ("s" if config.num_levels > 1 else "")
        raise ValueError(f"{report.disambiguation_size} items share one SID of the {levels}, more than the "
                        f"{MAX_CODEBOOK_SIZE} codes of the disambiguation level; give more --codes or --levels, or "
                        "check the embeddings for repeated rows")
    sizes = [config.codebook_size] * config.num_levels + ([report.disambiguation_size] if config.disambiguate else [])
    return write_index(path, item_ids, codes, SIDVocabulary.from_codes(codes, sizes)), report


def add_sid_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The SID builder's options (``--levels`` ... ``--seed``), shared by ``genrec build-sids`` and
    ``genrec convert``; :func:`sid_config` reads them back."""
    parser.add_argument("--levels", type=int_at_least(1), default=3, help="clustered SID levels (default 3)")
    parser.add_argument("--codes", type=int_at_least(1), default=256, help="codes per level (default 256)")
    parser.add_argument("--iters", type=int_at_least(1), default=50, help="max Lloyd iterations per level")
    parser.add_argument("--balanced", action="store_true", help="Sinkhorn-balanced code assignment")
    parser.add_argument("--no-disambiguate", action="store_true",
                        help="do not append the collision-rank level (SIDs may then be shared)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalize embeddings first")
    parser.add_argument("--seed", type=seed_integer, default=0, help="random seed, 0 to 2**32 - 1 (default 0)")


def sid_config(args: argparse.Namespace) -> RQKMeansConfig:
    """The :class:`RQKMeansConfig` of the options :func:`add_sid_arguments` added."""
    return RQKMeansConfig(num_levels=args.levels, codebook_size=args.codes, num_iters=args.iters,
                          balanced=args.balanced, disambiguate=not args.no_disambiguate, normalize=args.normalize,
                          seed=args.seed)


def _vocab_path(index_path: Path) -> Path | None:
    """``NAME.vocab.json`` beside ``NAME.index.rq-kmeans.json``; None for another file name."""
    if not index_path.name.endswith(INDEX_SUFFIX):
        return None
    return index_path.with_name(index_path.name[: -len(INDEX_SUFFIX)] + VOCAB_SUFFIX)


def _load_embeddings(path: str) -> np.ndarray:
    try:
        embeddings = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as error:
        raise UserError(f"{path}: not a NumPy .npy array file; save the float [num_items, dim] embeddings "
                        "with numpy.save") from error
    if not isinstance(embeddings, np.ndarray):
        raise UserError(f"{path}: holds several arrays; save one float [num_items, dim] array with numpy.save")
    if embeddings.ndim != 2 or 0 in embeddings.shape:
        raise UserError(f"{path}: holds an array of shape {list(embeddings.shape)}; save the float [num_items, dim] "
                        "embeddings with numpy.save")
    if not (np.issubdtype(embeddings.dtype, np.floating) or np.issubdtype(embeddings.dtype, np.integer)):
        raise UserError(f"{path}: holds {embeddings.dtype} values; save the float [num_items, dim] embeddings with "
                        "numpy.save")
    return embeddings


_JSON_KINDS = {dict: "an object", list: "a list", float: "a number with a fraction or exponent", bool: "a boolean",
               type(None): "null"}


def read_item_ids_json(path: str | Path) -> tuple[list[str], list]:
    """A JSON list of item ids (strings or integers, compared as strings) in embedding row order, as
    ``genrec build-sids --item-ids`` and ``genrec convert --embedding-ids X.json`` read it.

    Returns:
      ``(ids as strings, the JSON values)``.

    Raises:
      ValueError: malformed JSON (a byte order mark included: the decoder's reason is kept), not a list, or an
        entry that is not a string or an integer; one line naming the file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}; "
                        "expected a JSON list of item ids") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason}); save it as UTF-8") from error
    if not isinstance(values, list):
        raise ValueError(f"{path}: expected a JSON list of item ids, got {_JSON_KINDS.get(type(values), 'a string')}")
    for position, value in enumerate(values):
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValueError(f"{path}: entry {position} is {json.dumps(value)}, {_JSON_KINDS[type(value)]}; item ids "
                            "must be strings or integers")
    return [str(value) for value in values], values


def check_unique_item_ids(item_ids: Sequence[str], path: str | Path, values: Sequence | None = None) -> None:
    """Raises a one-line ValueError naming ``path`` and the first id given twice; ``values``: the file's JSON
    values of the ids, to say when two of them differ only in type (``1`` and ``"1"``)."""
    if len(set(item_ids)) == len(item_ids):
        return
    first_at: dict[str, int] = {}
    for position, item in enumerate(item_ids):
        if item in first_at:
            break
        first_at[item] = position
    same = ""
    if values is not None and values[first_at[item]] != values[position]:
        same = f" ({json.dumps(values[first_at[item]])} and {json.dumps(values[position])} are one id: ids are " \
               "compared as strings)"
    raise ValueError(f"{path}: item id {item!r} is given more than once{same}; give each embedding row its own id")


def check_finite_embeddings(embeddings: np.ndarray, path: str | Path, item_ids: Sequence[str],
                            rows: np.ndarray | None = None) -> None:
    """Raises a one-line ValueError naming ``path``, the first row with NaN or inf values and its item id.
    ``rows``: the file's row of each of ``embeddings`` (all rows, in order, when None)."""
    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if not bad.size:
        return
    first = int(bad[0])
    row = first if rows is None else int(rows[first])
    if bad.size == 1:
        raise ValueError(f"{path}: row {row} (item {item_ids[first]!r}) has NaN or inf values; fix it, or drop it and "
                        "its item id")
    raise ValueError(f"{path}: row {row} (item {item_ids[first]!r}) and {bad.size - 1} more rows have NaN or inf "
                    "values; fix them, or drop them and their item ids")


def check_sid_arguments(args: argparse.Namespace) -> None:
    """The SID shape of :func:`add_sid_arguments`' options fits the SID format, before any work: a UserError
    naming the flag otherwise."""
    if args.codes > MAX_CODEBOOK_SIZE:
        raise UserError(f"--codes {args.codes} is more than the {MAX_CODEBOOK_SIZE} codes a SID level can have; "
                        f"give --codes {MAX_CODEBOOK_SIZE} or fewer")
    most = len(LEVEL_LETTERS)
    if args.levels + (not args.no_disambiguate) > most:
        if args.no_disambiguate:
            raise UserError(f"--levels {args.levels} is more than the {most} levels a SID can have (<a_..> to "
                            f"<z_..>); give --levels {most} or fewer")
        raise UserError(f"--levels {args.levels} and the disambiguation level make {args.levels + 1} SID levels, "
                        f"more than the {most} a SID can have (<a_..> to <z_..>); give --levels {most - 1} or fewer, "
                        "or --no-disambiguate")


def _load_item_ids(path: str, num_items: int, embeddings_path: str) -> list[str]:
    item_ids, values = read_item_ids_json(path)
    if len(item_ids) != num_items:
        raise UserError(f"{path} lists {len(item_ids)} ids but {embeddings_path} has {num_items} rows; "
                        "give one id per embedding row, in row order")
    check_unique_item_ids(item_ids, path, values)
    return item_ids


def main(argv: Sequence[str] | None = None, prog: str = "python -m genrec.rqkmeans") -> int:
    """CLI: embeddings ``.npy`` -> SID index JSON in the standard format."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build semantic IDs from item embeddings with residual k-means and write "
        "them as NAME.index.rq-kmeans.json (plus NAME.vocab.json with the codebook sizes).",
    )
    parser.add_argument("--embeddings", required=True, help=".npy file of float [num_items, dim]")
    parser.add_argument("--item-ids", help="JSON list of num_items item ids, in embedding row order "
                        "(default: '0' .. 'num_items-1')")
    parser.add_argument("--out", required=True, help="output path, e.g. DIR/NAME.index.rq-kmeans.json")
    add_sid_arguments(parser)
    parser.add_argument("--report", help="also write the report JSON here")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def run() -> int:
        check_sid_arguments(args)
        embeddings = _load_embeddings(args.embeddings)
        if args.item_ids:
            item_ids = _load_item_ids(args.item_ids, len(embeddings), args.embeddings)
        else:
            item_ids = [str(i) for i in range(len(embeddings))]
        check_finite_embeddings(embeddings, args.embeddings, item_ids)
        written, report = build_and_write_index(args.out, item_ids, embeddings, sid_config(args))
        if args.report:
            written.append(write_json_atomic(args.report, report.to_json(), indent=2))
        print(json.dumps(report.to_json(), indent=2))
        print("wrote " + ", ".join(str(p) for p in written))
        return 0

    return run_command(prog, run, outputs=[args.out, _vocab_path(Path(args.out)), args.report],
                       verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
