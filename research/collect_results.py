"""Copy what research/reproduce_gpu.sh brought back into a results folder
that research/summarize_results.py, compare_runs.py and popularity_buckets.py
read, so no file is renamed by hand.

    python research/collect_results.py FETCHED_DIR research/results_raw/<date>

From FETCHED_DIR (the unpacked ``r/`` of ``$OUT/all.tgz``):
``<run>.results.json`` -> ``DEST/<run>.json``, ``<run>.test_ranks.npy`` ->
``DEST/ranks/``, ``<run>.prefix_ranks.npy`` -> ``DEST/prefix_ranks/``,
``<run>.valid_ranks.npy`` -> ``DEST/valid_ranks/``, ``<run>.diagnose.txt`` ->
``DEST/diagnose/`` (only those with
a JSON line, i.e. a finished ``genrec eval --diagnose``), ``<run>.valid.jsonl``
(the validation records of ``metrics.jsonl``: every evaluation's metrics and
``valid_ce``) -> ``DEST/valid_curves/`` and ``<run>.train.jsonl`` (every 20th
training record: losses, prefix losses and weights) -> ``DEST/train_curves/``.
Only runs with a results file are collected: a run cut by the budget has
none, even where ``--final`` evaluated its best checkpoint so far. A file already in
DEST with other contents is not overwritten unless ``--overwrite``; the run
names must follow ``<dataset>_<arch>_<method>_s<seed>``.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

# summarize_results.py sits beside this script; research/ is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
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
    """``[(source, destination)]`` for every result file of a well-named run in ``src``."""
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
    conflicts = [d for s, d in moves if d.exists() and not filecmp.cmp(s, d, shallow=False)]
    if conflicts and not args.overwrite:
        print("collect_results: these differ from what is already there (use --overwrite): "
              + ", ".join(str(c) for c in conflicts), file=sys.stderr)
        return 2
    for source, target in moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    runs = sum(1 for s, _ in moves if s.name.endswith(".results.json"))
    print(f"copied {len(moves)} files ({runs} runs) into {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
