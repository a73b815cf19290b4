"""Markdown tables for docs/results.md from per-run result files, so that no
figure there is typed by hand.

Run: python research/summarize_results.py --dir research/results_raw/2026-11-26

Reads every ``<dataset>_<arch>_<method>_s<seed>.json`` (or ``.results.json``; any of the
files below may also be gzip-compressed, ``.gz``, as collect_results.py stores them) in ``--dir`` (keys
``test_metrics``, ``best_step``, ``final_step``, ``early_stopped``) and prints
three sections: one row per run; mean ± sample sd over seeds per
(dataset, arch, method); and, per non-CE method, its relative change against
the CE mean of the same dataset and arch, with how many of its seeds beat the
best CE seed or fall below the worst one, and (with 2+ seeds on both sides)
the p-value of compare_runs.py's permutation test over run labels on R@10
(small when the method beats CE; seeds are the unit), and, over the seeds both
ran (2+), the seed-matched difference with its sign-flip p
(compare_runs.seed_matched_test: a seed fixes initial parameters and data
order for every method). A method with a variant suffix is
compared with CE of the same variant where there is one (``apao_vce`` with
``ce_vce``), else with plain CE. If ``--dir`` has a ``diagnose/`` folder of
``<run>.diagnose.txt`` files (``genrec eval --diagnose`` output, as
research/reproduce_gpu.sh saves them), a fourth section gives, per group, the
mean share of test users whose target prefix survives each beam level and the
share of valid items in the unconstrained beam. A ``valid_curves/`` folder of
``<run>.valid.jsonl`` (the runs' validation records) adds a fifth: the lowest
validation token cross-entropy per group, against CE's, and a ``train_curves/``
folder of ``<run>.train.jsonl`` (training records) a sixth: the prefix weights
each group trained with. ``--out FILE`` also writes the
same text to FILE (atomically).
"""

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

# compare_runs.py sits beside this script; research/ is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_runs import format_p, run_permutation_test, seed_matched_test  # noqa: E402
from raw_files import find, read_text, run_name  # noqa: E402

DEFAULT_DIR = "research/results_raw/2026-11-26"
DEFAULT_METRICS = "recall@10,recall@20,ndcg@10,ndcg@20"
BASELINE = "ce"
# The best checkpoint's validation figure, shown beside the test ones: a method
# whose validation score matches CE's but whose test score does not has a
# validation-to-test gap, not a fitting problem.
VALID_METRIC = "ndcg@10"
VALID_CE = "valid_ce"  # the validation records' mean token cross-entropy (training/train.py)
# Method suffixes that change which users are validated on (``_fullval``: all of
# them instead of a subset): validation curves of groups that differ in these
# are over different users, so their validation CE is not compared.
VALIDATION_SET_SUFFIXES = ("fullval",)
# The method may itself contain underscores (apao_pairwise, apao_b01), so it is
# whatever lies between the arch and the seed.
# research/reproduce_gpu.sh names its copies <run>.results.json: accepted as is,
# and so is a gzip-compressed copy (.json.gz, as collect_results.py stores them).
NAME_RE = re.compile(r"^(?P<dataset>[^_]+)_(?P<arch>[^_]+)_(?P<method>.+)_s(?P<seed>\d+)(?:\.results)?\.json(?:\.gz)?$")


def header(metric: str) -> str:
    name, _, k = metric.partition("@")
    return {"recall": "Recall", "ndcg": "NDCG"}.get(name, name) + (f"@{k}" if k else "")


def short(metric: str) -> str:
    name, _, k = metric.partition("@")
    return name[:1].upper() + (f"@{k}" if k else "")


def load_runs(folder: Path, metrics: list[str]) -> list[dict]:
    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder")
    try:
        files = find(folder, ".json")
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if not files:
        raise SystemExit(f"error: no result files (*.json or *.json.gz) in {folder}")
    runs = []
    for path in files:
        m = NAME_RE.match(path.name)
        if not m:
            print(f"warning: skipping {path.name}: not <dataset>_<arch>_<method>_s<seed>.json",
                  file=sys.stderr)
            continue
        data = json.loads(read_text(path))
        test = data.get("test_metrics")
        if not isinstance(test, dict):
            raise SystemExit(f"error: {path} has no test_metrics")
        missing = [k for k in metrics if k not in test]
        if missing:
            raise SystemExit(f"error: {path} test_metrics lacks {', '.join(missing)}")
        valid = data.get("best_valid_metrics") or {}
        name = run_name(path, ".json").removesuffix(".results")
        runs.append(dict(m.groupdict(), name=name, seed=int(m["seed"]), test=test, valid=valid.get(VALID_METRIC),
                         best_step=data.get("best_step"), final_step=data.get("final_step"),
                         early_stopped=data.get("early_stopped")))
    if not runs:
        raise SystemExit(f"error: no file in {folder} has a parseable name")
    runs.sort(key=lambda r: (r["dataset"], r["arch"], r["method"], r["seed"]))
    return runs


def slashed(vector) -> str:
    """``0.336 / 0.250 / ...``: a per-prefix or per-level vector in a table cell."""
    return " / ".join(f"{v:.3f}" for v in vector)


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def valid_cells(runs: list[dict]) -> list[str]:
    """Mean validation figure of the best checkpoints and mean per-run test / validation ratio."""
    valid = [r["valid"] for r in runs if r["valid"] is not None]
    if len(valid) < len(runs) or VALID_METRIC not in runs[0]["test"] or not all(valid):
        return ["?" if len(valid) < len(runs) else mean_sd(valid), "?"]
    ratio = [r["test"][VALID_METRIC] / r["valid"] for r in runs]
    return [mean_sd(valid), f"{np.mean(ratio):.2f}"]


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows]]


def baseline_of(method: str, methods: set[str]) -> str | None:
    """The CE group ``method`` is compared with: ``ce_<suffix>`` for the longest
    variant suffix that has one (``apao_pairwise_vce`` -> ``ce_vce``), else ``ce``."""
    if method == BASELINE:
        return None
    parts = method.split("_")
    for i in range(1, len(parts)):
        candidate = "_".join([BASELINE, *parts[i:]])
        if candidate in methods and candidate != method:
            return candidate
    return BASELINE if BASELINE in methods else None


def validation_set_of(method: str) -> tuple[str, ...]:
    """The suffixes of ``method`` that change its validation users (``VALIDATION_SET_SUFFIXES``)."""
    return tuple(part for part in method.split("_") if part in VALIDATION_SET_SUFFIXES)


def diagnosis_metrics(path: Path) -> dict | None:
    """The metrics of a ``genrec eval --diagnose`` output file (its last line that
    starts with ``{``), or None when it has none (the evaluation did not finish)."""
    json_lines = [ln for ln in read_text(path).splitlines() if ln.startswith("{")]
    return json.loads(json_lines[-1])["metrics"] if json_lines else None


def load_diagnoses(folder: Path) -> dict[str, dict]:
    """``{run name: metrics}`` from each ``diagnose/*.diagnose.txt(.gz)``."""
    found = {}
    for path in find(folder / "diagnose", ".diagnose.txt"):
        metrics = diagnosis_metrics(path)
        if metrics is None:
            print(f"warning: skipping {path.name}: no JSON line", file=sys.stderr)
            continue
        found[run_name(path, ".diagnose.txt")] = metrics
    return found


def group_by_run(per_run: dict[str, object]) -> dict[tuple[str, str, str], list]:
    """``{(dataset, arch, method): [value of each run]}`` from ``{run name: value}``;
    names that are not ``<dataset>_<arch>_<method>_s<seed>`` are left out."""
    groups: dict[tuple[str, str, str], list] = {}
    for name, value in per_run.items():
        m = NAME_RE.match(name + ".json")
        if m:
            groups.setdefault((m["dataset"], m["arch"], m["method"]), []).append(value)
    return groups


def survival_section(folder: Path) -> list[str]:
    groups = group_by_run(load_diagnoses(folder))
    if not groups:
        return []
    levels = sorted({int(k.split("@")[1]) for ms in groups.values() for m in ms
                     for k in m if k.startswith("prefix_in_beam@")})
    lines = ["", "### Prefix survival (test, mean over the runs diagnosed)", "",
             "Share of test users whose target's length-t prefix is still among the beams "
             "after level t; last column: share of generated SIDs that are items when the "
             "search runs unconstrained.", ""]
    lines += table(
        ["dataset", "arch", "method", "runs", *(f"level {t}" for t in levels), "unconstrained valid"],
        [[d, a, m, str(len(ms)),
          *(f"{np.mean([x[f'prefix_in_beam@{t}'] for x in ms]):.4f}" for t in levels),
          f"{np.mean([x['unconstrained_valid_fraction'] for x in ms]):.4f}"]
         for (d, a, m), ms in sorted(groups.items())])
    return lines


def read_records(path: Path, kind: str, keep: Callable[[dict], bool]) -> list[dict]:
    """The ``kind`` records (``"train"`` / ``"valid"``) of a metrics JSONL file with
    ``keep(record)``, in step order."""
    records = [json.loads(line) for line in read_text(path).splitlines() if line.strip()]
    return sorted((r for r in records if r.get("kind") == kind and keep(r)), key=lambda r: r["step"])


def load_curves(folder: Path, kind: str, keep: Callable[[dict], bool]) -> dict[str, list[dict]]:
    """``{run name: records in step order}`` from each ``<kind>_curves/<run>.<kind>.jsonl(.gz)``
    of ``folder`` (as collect_results.py files them), keeping the records with
    ``keep(record)``; a run with none kept is left out."""
    curves = {}
    for path in find(folder / f"{kind}_curves", f".{kind}.jsonl"):
        records = read_records(path, kind, keep)
        if records:
            curves[run_name(path, f".{kind}.jsonl")] = records
    return curves


def valid_ce_section(folder: Path) -> list[str]:
    """Per group: the lowest validation token CE its runs reached and the CE at the
    selected checkpoint (highest validation NDCG@10, or lowest CE for ``_vce``);
    per non-CE group, the gap to its CE group with a permutation p (small when
    the method's lowest CE is above CE's, i.e. it fits held-out tokens worse),
    when both validated on the same users (``validation_set_of``)."""
    groups = {}
    for (d, a, m), curves in group_by_run(load_curves(folder, "valid", lambda r: VALID_CE in r)).items():
        values = []
        for records in curves:
            best = (min(records, key=lambda r: r[VALID_CE]) if m.endswith("_vce")
                    else max(records, key=lambda r: r.get(VALID_METRIC, -1.0)))
            values.append((min(r[VALID_CE] for r in records), best[VALID_CE]))
        groups[(d, a, m)] = values
    if not groups:
        return []
    lines = ["", "### Validation cross-entropy (runs with saved validation curves)", "",
             "Mean token cross-entropy of the validation targets (nats, teacher-forced): the lowest "
             "each run reached, and at the checkpoint it selected.", ""]
    rows = []
    for (d, a, m), values in sorted(groups.items()):
        lowest = [v[0] for v in values]
        row = [d, a, m, str(len(values)), mean_sd(lowest), mean_sd([v[1] for v in values])]
        base_method = baseline_of(m, {mm for dd, aa, mm in groups if (dd, aa) == (d, a)})
        if (base_method is not None and validation_set_of(m) == validation_set_of(base_method)
                and len(values) >= 2 and len(groups[(d, a, base_method)]) >= 2):
            base = np.array([v[0] for v in groups[(d, a, base_method)]])
            test = run_permutation_test(base, np.array(lowest))
            row.append(f"{np.mean(lowest) - base.mean():+.4f} vs {base_method}, p {test['p']:.4f}")
        else:
            row.append("")
        rows.append(row)
    lines += table(["dataset", "arch", "method", "runs", "lowest", "at the selected checkpoint",
                    "lowest minus CE's (p: above CE)"], rows)
    return lines


def _at_step(records: list[dict], step: int | None) -> dict:
    """The last record at or before ``step`` (the first record if none; the last if ``step`` is None)."""
    if step is None:
        return records[-1]
    before = [r for r in records if r["step"] <= step]
    return before[-1] if before else records[0]


def prefix_weights_section(folder: Path, best_steps: dict[str, int | None]) -> list[str]:
    """Per group: the adaptive prefix weights and prefix losses (means over the
    runs) in the first saved training record and in the last one at or before
    the run's best checkpoint (``best_steps``: run name -> best step): what
    weighting each method actually trained with."""
    # CE and MSL log all-zero prefix weights: no adaptive weighting to show.
    curves = load_curves(folder, "train", lambda r: any(r.get("prefix_weights") or []))
    groups = group_by_run({name: (records, best_steps.get(name)) for name, records in curves.items()})
    if not groups:
        return []

    def cell(vectors: list[list[float]]) -> str:
        return slashed(np.mean(np.array(vectors, np.float64), axis=0))

    rows = []
    for (d, a, m), runs in sorted(groups.items()):
        lengths = {len(records[0]["prefix_weights"]) for records, _ in runs}
        if len(lengths) != 1:
            continue  # runs with different prefix counts do not average
        first = [records[0] for records, _ in runs]
        at_best = [_at_step(records, best) for records, best in runs]
        rows.append([d, a, m, str(len(runs)), f"{np.mean([r['step'] for r in first]):.0f}",
                     cell([r["prefix_weights"] for r in first]),
                     f"{np.mean([r['step'] for r in at_best]):.0f}",
                     cell([r["prefix_weights"] for r in at_best]),
                     cell([r["prefix_losses"] for r in at_best])])
    lines = ["", "### Prefix weights (runs with saved training records)", "",
             "Adaptive prefix weights w_1 / ... / w_P (mean over runs) in the first saved training "
             "record and in the last one at or before the best checkpoint, with the prefix losses "
             "there (nats, mean over the logging window).", ""]
    lines += table(["dataset", "arch", "method", "runs", "first step", "weights there",
                    "step at best", "weights there", "prefix losses there"], rows)
    return lines


def summarize(folder: Path, metrics: list[str]) -> str:
    runs = load_runs(folder, metrics)
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["arch"], r["method"]), []).append(r)

    lines = [f"<!-- generated by research/summarize_results.py --dir {folder} -->", "",
             "### Per run", ""]
    lines += table(
        ["dataset", "arch", "method", "seed", *map(header, metrics),
         f"valid {header(VALID_METRIC)}", "best step / final step", "early stopped"],
        [[r["dataset"], r["arch"], r["method"], str(r["seed"]),
          *(f"{r['test'][k]:.4f}" for k in metrics),
          "?" if r["valid"] is None else f"{r['valid']:.4f}",
          f"{r['best_step']} / {r['final_step']}",
          {True: "yes", False: "no"}.get(r["early_stopped"], "?")] for r in runs])

    lines += ["", "### Mean over seeds", ""]
    lines += table(
        ["dataset", "arch", "method", "seeds (n)", *map(header, metrics),
         f"valid {header(VALID_METRIC)}", f"test / valid {header(VALID_METRIC)}"],
        [[d, a, m, f"{', '.join(str(r['seed']) for r in rs)} ({len(rs)})",
          *(mean_sd([r["test"][k] for r in rs]) for k in metrics),
          *valid_cells(rs)]
         for (d, a, m), rs in groups.items()])

    lines += ["", f"### Relative to {BASELINE.upper()} (mean over seeds)", ""]
    for (d, a, m), rs in groups.items():
        base_method = baseline_of(m, {mm for dd, aa, mm in groups if (dd, aa) == (d, a)})
        if base_method is None:
            continue
        base = groups[(d, a, base_method)]
        changes, spread = [], []
        for k in metrics:
            ours = [r["test"][k] for r in rs]
            ref = [r["test"][k] for r in base]
            ref_mean = np.mean(ref)
            rel = f"{100 * (np.mean(ours) / ref_mean - 1):+.1f}%" if ref_mean else "n/a"
            changes.append(f"{short(k)} {rel}")
            # Against the extreme CE seeds, not its mean: a mean gap smaller than
            # the seed-to-seed spread shows up as seeds on both sides.
            above = sum(v > max(ref) for v in ours)
            below = sum(v < min(ref) for v in ours)
            spread.append(f"{short(k)} {above}/{below}")
        perm = ""
        if len(rs) >= 2 and len(base) >= 2:
            k = metrics[0]
            test = run_permutation_test(np.array([r["test"][k] for r in base]),
                                        np.array([r["test"][k] for r in rs]))
            perm = (f"; permutation p over seeds ({short(k)}) {test['p']:.3f}"
                    f" (smallest attainable {format_p(test['min_p'])})")
            if len({r["seed"] for r in base} & {r["seed"] for r in rs}) >= 2:
                matched = seed_matched_test({r["seed"]: r["test"][k] for r in base},
                                            {r["seed"]: r["test"][k] for r in rs})
                rel = 100 * matched["diff"] / matched["mean_a"] if matched["mean_a"] else float("nan")
                perm += (f"; seed-matched ({matched['seeds']} shared seeds, {base_method} mean there "
                         f"{matched['mean_a']:.4f}) {short(k)} {rel:+.1f}%, sign-flip p {matched['p']:.3f}")
        lines.append(f"- {d} {a} {m} vs {base_method}: {', '.join(changes)}; "
                     f"seeds above best / below worst {base_method} seed "
                     f"({len(rs)} vs {len(base)} seeds): {', '.join(spread)}{perm}")
    lines += survival_section(folder)
    lines += valid_ce_section(folder)
    lines += prefix_weights_section(folder, {r["name"]: r["best_step"] for r in runs})
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=DEFAULT_DIR, help="folder of <dataset>_<arch>_<method>_s<seed>.json(.gz)")
    p.add_argument("--out", help="also write the Markdown here (atomically)")
    p.add_argument("--metrics", default=DEFAULT_METRICS, help="comma-separated test_metrics keys")
    args = p.parse_args(argv)
    metrics = [k.strip() for k in args.metrics.split(",") if k.strip()]
    try:
        text = summarize(Path(args.dir), metrics)
    except (ValueError, OSError) as error:  # e.g. a file both plain and compressed, a corrupt .gz
        print(f"summarize_results: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    if args.out:
        # A crash mid-write must not leave a truncated table where docs expect one.
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
