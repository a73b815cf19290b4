"""Store what research/reproduce_gpu.sh brought back, gzip-compressed, in a results
folder that research/summarize_results.py, compare_runs.py and popularity_buckets.py
read, so no file is renamed by hand.

    python research/collect_results.py FETCHED_DIR research/results_raw/<date>

From FETCHED_DIR (the unpacked ``r/`` of ``$OUT/all.tgz``):
``<run>.results.json`` -> ``DEST/<run>.json.gz``, ``<run>.test_ranks.npy`` ->
``DEST/ranks/``, ``<run>.prefix_ranks.npy`` -> ``DEST/prefix_ranks/``,
``<run>.valid_ranks.npy`` -> ``DEST/valid_ranks/``, ``<run>.diagnose.txt`` ->
``DEST/diagnose/`` (only those with
a JSON line, i.e. a finished ``genrec eval --diagnose``), ``<run>.valid.jsonl``
(the validation records of ``metrics.jsonl``: every evaluation's metrics and
``valid_ce``) -> ``DEST/valid_curves/`` and ``<run>.train.jsonl`` (every 20th
training record: losses, prefix losses and weights) -> ``DEST/train_curves/``,
each as ``<name>.gz`` (one gzip per file, research/raw_files.py; the readers take
plain and compressed files alike, so older plain folders stay as they are).
Only runs with a results file are collected: a run cut by the budget has
none, even where ``--final`` evaluated its best checkpoint so far. A file already in
DEST (plain or compressed) with other contents is not overwritten unless
``--overwrite`` (which also removes the plain copy, so no run is there twice); one
with the same contents is left as it is. The run names must follow
``<dataset>_<arch>_<method>_s<seed>``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

# summarize_results.py sits beside this script; research/ is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from raw_files import GZ, read_bytes, write_compressed  # noqa: E402
from summarize_results import diagnosis_metrics  # noqa: E402

RUN_RE = re.compile(r"^[^_]+_[^_]+_.+_s\d+$")
# Each kind of rank file has its own folder, so a glob like ranks/<run>.* never
# mixes test ranks with validation or prefix ranks.
KINDS = ((".results.json", "", ".json"), (".test_ranks.npy", "ranks", ".test_ranks.npy"),
         (".prefix_ranks.npy", "prefix_ranks", ".prefix_ranks.npy"),
         (".valid_ranks.npy", "valid_ranks", ".valid_ranks.npy"),
         (".diagnose.txt", "diagnose", ".diagnose.txt"),
         (".valid.jsonl", "valid_curves", ".valid.jsonl"),
         (".train.jsonl", "train_curves", ".train.jsonl"))


def plan(src: Path, dest: Path) -> list[tuple[Path, Path]]:
    """``[(source, plain destination)]`` for every result file of a well-named run in ``src``;
    the file is stored at the destination plus ``.gz``."""
    moves = []
    for suffix, sub, new_suffix in KINDS:
        for path in sorted(src.glob(f"*{suffix}")):
            run = path.name[: -len(suffix)]
            if not RUN_RE.match(run):
                print(f"collect_results: skipping {path.name}: run name is not "
                      "<dataset>_<arch>_<method>_s<seed>", file=sys.stderr)
                continue
            if suffix == ".diagnose.txt" and diagnosis_metrics(path) is None:
                print(f"collect_results: skipping {path.name}: no result line (unfinished?)", file=sys.stderr)
                continue
            # A run cut by the budget has no results.json, yet `--final` may have
            # evaluated its best checkpoint so far: its ranks must not join the
            # finished runs' in compare_runs.py while the tables leave it out.
            if suffix != ".results.json" and not (src / f"{run}.results.json").exists():
                print(f"collect_results: skipping {path.name}: the run has no results.json (cut?)", file=sys.stderr)
                continue
            moves.append((path, dest / sub / f"{run}{new_suffix}"))
    return moves


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder with <run>.results.json etc.")
    parser.add_argument("dest", type=Path, help="results folder, e.g. research/results_raw/<date>")
    parser.add_argument("--overwrite", action="store_true", help="replace differing files in dest")
    args = parser.parse_args(argv)
    if not args.src.is_dir():
        print(f"collect_results: {args.src} is not a folder", file=sys.stderr)
        return 2
    moves = plan(args.src, args.dest)
    if not moves:
        print(f"collect_results: no result files in {args.src}", file=sys.stderr)
        return 2
    # What DEST holds for each file, plain (collected before compression) or compressed.
    present = {target: [p for p in (target, target.with_name(target.name + GZ)) if p.exists()]
               for _, target in moves}
    contents = {source: source.read_bytes() for source, _ in moves}
    conflicts = [p for source, target in moves for p in present[target] if read_bytes(p) != contents[source]]
    if conflicts and not args.overwrite:
        print("collect_results: these differ from what is already there (use --overwrite): "
              + ", ".join(str(c) for c in conflicts), file=sys.stderr)
        return 2
    written = 0
    for source, target in moves:
        if present[target] and all(read_bytes(p) == contents[source] for p in present[target]):
            continue  # already there with these contents
        target.parent.mkdir(parents=True, exist_ok=True)
        write_compressed(target.with_name(target.name + GZ), contents[source])
        target.unlink(missing_ok=True)  # an older plain copy, replaced under --overwrite
        written += 1
    runs = sum(1 for s, _ in moves if s.name.endswith(".results.json"))
    print(f"collected {len(moves)} files ({runs} runs) into {args.dest}: {written} written gzip-compressed, "
          f"{len(moves) - written} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
